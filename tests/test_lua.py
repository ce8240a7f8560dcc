"""Each Lua script's header against its typed adaptor (service/store/adaptors.py), and every
field a script writes into a change entry against the one list of them (store/entries.py)."""

from __future__ import annotations

import re
from importlib import resources
from typing import get_type_hints

import pytest

from service.store.adaptors import ADAPTORS, Argv, Keys
from service.store.entries import Field

LUA = resources.files("service.lua")
SCRIPTS = sorted(p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua"))
_HEADER = re.compile(r"^-- (KEYS|ARGV)\[([^\]]+)\]\s+(\w+)", re.M)


def _header(name: str) -> dict[str, list[tuple[str, bool]]]:
    """(name, is a variable tail) of each KEYS and ARGV line of a script's header."""
    found: dict[str, list[tuple[str, bool]]] = {"KEYS": [], "ARGV": []}
    for kind, index, field in _HEADER.findall(LUA.joinpath(f"{name}.lua").read_text()):
        found[kind].append((field, ".." in index))
    return found


def _adaptor(cls: type[Keys] | type[Argv]) -> list[tuple[str, bool]]:
    hints = get_type_hints(cls)
    return [(name, str(hints[name]).startswith("tuple")) for name in cls.__match_args__]


def test_every_script_has_an_adaptor() -> None:
    assert len(SCRIPTS) == 25 and set(SCRIPTS) == set(ADAPTORS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_headers_keys_and_argv_are_its_adaptors_fields(name: str) -> None:
    keys_cls, argv_cls = ADAPTORS[name]
    header = _header(name)
    assert header["KEYS"], f"{name}.lua names no KEYS"
    assert _adaptor(keys_cls) == header["KEYS"]
    assert _adaptor(argv_cls) == header["ARGV"]


def test_the_header_check_catches_a_field_out_of_order() -> None:
    from service.store.adaptors import AnnulArgv, CheckinKeys

    assert _adaptor(CheckinKeys)[:2] == [("list", False), ("event", False)]
    swapped = [_adaptor(AnnulArgv)[1], _adaptor(AnnulArgv)[0], *_adaptor(AnnulArgv)[2:]]
    assert swapped != _header("annul")["ARGV"]


def test_flat_puts_tuples_in_place_and_leaves_out_an_absent_key() -> None:
    from service.store.adaptors import CheckinKeys, ProcessArgv

    assert CheckinKeys("l", "e", "s", "x", "r", None, ()).flat() == ["l", "e", "s", "x", "r"]
    assert CheckinKeys("l", "e", "s", "x", "r", "t", ("a", "b")).flat() == ["l", "e", "s", "x", "r", "t", "a", "b"]
    assert ProcessArgv("g", 2, ("1-0", "2-0"), ("1-0", "created", "{}", 4)).flat() == \
        ["g", 2, "1-0", "2-0", "1-0", "created", "{}", 4]


def _split(text: str) -> list[str]:
    """Lua arguments at the top level: commas inside parentheses or quotes do not split."""
    parts, depth, quoted, current = [], 0, False, ""
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "({":
            depth += 1
        elif not quoted and ch in ")}":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return [*parts, current.strip()]


def _entry_fields(source: str) -> set[str]:
    """The field names a script writes into a stream entry: after XADD's id, in a `local
    entry = {...}` table, or appended to it."""
    names: set[str] = set()
    code = re.sub(r"--[^\n]*", "", source)
    for call in re.finditer(r"redis\.call\('XADD',(.*?)\)\n", code, re.S):
        args = _split(call.group(1))
        if args[-1] == "unpack(entry)":
            continue
        names.update(a.strip("'") for a in args[5::2])  # stream, MAXLEN, ~, cap, id: then pairs
    for table in re.finditer(r"local entry = \{(.*?)\}\n", code, re.S):
        names.update(a.strip("'") for a in _split(table.group(1))[::2])
    names.update(re.findall(r"entry\[#entry \+ 1\], entry\[#entry \+ 2\] = '(\w+)'", code))
    return names


def test_every_field_a_script_writes_into_a_change_entry_is_a_field() -> None:
    written = {name: _entry_fields(LUA.joinpath(f"{name}.lua").read_text()) for name in SCRIPTS}
    writers = {name for name, fields in written.items() if fields}
    assert writers == {"create", "batch", "import_codes", "withdraw", "transition", "checkin", "annul"}
    assert set().union(*written.values()) == {f.value for f in Field}

"""Hostile and malformed input, written byte by byte on a raw socket, through nginx and
straight to a replica: every answer is a 4xx problem+json (never text, HTML or a 500), no
answer echoes the request back or names a version, and a flood of them logs nothing."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from tooling.stack import LocalStack

from .conftest import MakeStack

pytestmark = pytest.mark.e2e
UUID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def stack(make_stack: MakeStack) -> LocalStack:
    return make_stack("hostile", replicas=1)


def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw`, read one answer (up to its Content-Length, or until the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if not chunk or (sep and length and len(body) >= int(length.group(1))):
                break
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split()[1]), headers, body


def request(line: str, *headers: str, body: bytes = b"") -> bytes:
    head = "\r\n".join([line, *headers]) + "\r\n\r\n"
    return head.encode("latin-1") + body


def assert_problem(status: int, headers: dict[str, str], body: bytes, expected: int, raw: bytes) -> None:
    assert status == expected, body
    assert headers["content-type"].startswith("application/problem+json")
    problem = json.loads(body)
    assert problem["status"] == expected and problem["type"].startswith("urn:tickets:problem:")
    assert problem["title"] and problem["detail"]
    # Nothing of the request comes back (aiohttp's own answer echoed the request line).
    request_line = raw.split(b"\r\n")[0]
    assert request_line[:12] not in body and b"Traceback" not in body
    assert not re.search(r"[0-9]\.[0-9]", headers.get("server", "")), headers.get("server")


NESTED = b"[" * 5000 + b"]" * 5000
BOTH_LAYERS = [
    ("unknown-method-token", request("FOO / HTTP/1.1", "Host: x"), 405, 400),
    ("lower-case-method", request("get / HTTP/1.1", "Host: x"), 400, 400),
    ("raw-non-ascii-in-path", b"GET /ticket/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", 400, 400),
    ("too-many-headers", request("GET / HTTP/1.1", "Host: x", *(f"X-H{i}: v" for i in range(300))), 400, 400),
    ("invalid-chunked-body", request("POST /ticket HTTP/1.1", "Host: x", "Transfer-Encoding: chunked",
                                     body=b"zz\r\n"), 400, 400),
    ("content-length-and-chunked", request("POST /ticket HTTP/1.1", "Host: x", "Content-Length: 3",
                                           "Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400, 400),
    ("nul-in-header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, 400),
    ("gzip-body", request("POST /ticket HTTP/1.1", "Host: x", "Content-Encoding: gzip", "Content-Length: 3",
                          body=b"abc"), 415, 415),
    ("unknown-encoding", request("POST /ticket HTTP/1.1", "Host: x", "Content-Encoding: zstd",
                                 "Content-Length: 3", body=b"abc"), 415, 415),
    ("deeply-nested-json", request("POST /ticket HTTP/1.1", "Host: x", f"Content-Length: {len(NESTED)}",
                                   body=NESTED), 400, 400),
    ("non-ascii-digit-limit", request("GET /ticket?limit=%C2%B2 HTTP/1.1", "Host: x"), 400, 400),
    ("arabic-indic-digit-limit", request("GET /ticket?limit=%D9%A1 HTTP/1.1", "Host: x"), 400, 400),
    ("forged-list-cursor", request("GET /ticket?cursor=MC4xODQ0Njc0NDA3MzcwOTU1MTYxNTAwMC4 HTTP/1.1",
                                   "Host: x"), 400, 400),
    ("forged-feed-cursor", request("GET /changes?after=MC4wLjA HTTP/1.1", "Host: x"), 400, 400),
    ("repeated-parameter", request("GET /ticket?limit=1&limit=2 HTTP/1.1", "Host: x"), 400, 400),
    ("id-with-white-space", request(f"GET /ticket?id=%20{UUID} HTTP/1.1", "Host: x"), 400, 400),
    ("id-with-trailing-newline", request(f"GET /ticket/{UUID}%0A HTTP/1.1", "Host: x"), 400, 400),
]
NGINX_ONLY = [
    ("unknown-transfer-coding", request("POST /ticket HTTP/1.1", "Host: x", "Transfer-Encoding: gzip"), 501),
    ("http-2-request-line", request("GET / HTTP/2.0", "Host: x"), 505),
    ("trace", request("TRACE / HTTP/1.1", "Host: x"), 405),
]
REPLICA_ONLY = [
    ("unknown-expectation", request("POST /ticket HTTP/1.1", "Host: x", "Expect: 200-ok",
                                    "Content-Length: 0"), 417),
]


@pytest.mark.parametrize(("name", "raw", "status"), [(n, r, s) for n, r, s, _ in BOTH_LAYERS] + NGINX_ONLY)
def test_through_nginx(stack: LocalStack, name: str, raw: bytes, status: int) -> None:
    got, headers, body = exchange(stack.cfg.port, raw)
    assert_problem(got, headers, body, status, raw)
    if status == 405:
        assert headers["allow"] == "GET,HEAD"


@pytest.mark.parametrize(("name", "raw", "status"), [(n, r, s) for n, r, _, s in BOTH_LAYERS] + REPLICA_ONLY)
def test_straight_to_a_replica(stack: LocalStack, name: str, raw: bytes, status: int) -> None:
    got, headers, body = exchange(stack.cfg.api_ports[0], raw)
    assert_problem(got, headers, body, status, raw)
    assert headers["server"] == "tickets"


def test_http_1_0_without_host_is_served(stack: LocalStack) -> None:
    for port in (stack.cfg.port, stack.cfg.api_ports[0]):
        status, headers, body = exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")
        assert status == 200 and json.loads(body) == {"status": "ok"}


def test_a_flood_of_bad_requests_logs_nothing(stack: LocalStack) -> None:
    log = stack.cfg.var_dir / "log" / "api1.log"
    before = log.read_bytes()
    for _ in range(20):
        for _, raw, _, _ in BOTH_LAYERS:
            exchange(stack.cfg.api_ports[0], raw)
    added = log.read_bytes()[len(before):].decode(errors="replace")
    assert added == "", added[:2000]


def _route_paths() -> list[str]:
    """A concrete path for every resource the app routes."""
    from service.api.app import create_app
    from service.settings import Settings

    app = create_app(Settings())
    concrete = {"{event}": "0123abcd", "{list}": "0123abcd-0000", "{delivery}": "msg_" + "0" * 26, "{source}": "shop"}
    paths = set()
    for resource in app.router.resources():
        path = re.sub(r"\{id[^}]*\}", UUID, resource.canonical)
        for name, value in concrete.items():
            path = path.replace(name, value)
        paths.add(path)
    return sorted(paths)


@pytest.mark.parametrize("path", _route_paths())
def test_nginx_allow_is_what_the_replicas_route(stack: LocalStack, path: str) -> None:
    """nginx's own 405 (an unknown method token) and the replica's (a known method no
    resource serves) name the same methods; nginx adds UPDATE where it translates it."""
    status, nginx, _ = exchange(stack.cfg.port, request(f"FOO {path} HTTP/1.1", "Host: x"))
    assert status == 405
    status, replica, _ = exchange(stack.cfg.port, request(f"PUT {path} HTTP/1.1", "Host: x"))
    assert status == 405
    served = set(replica["allow"].split(","))
    assert set(nginx["allow"].split(",")) == served | ({"UPDATE"} if "PATCH" in served else set())


def test_a_replica_closes_a_trickled_header_at_its_keepalive(make_stack: MakeStack) -> None:
    """A client that reaches a replica directly and sends a header line a second never gets
    further: the connection is closed at gunicorn's keepalive after it opened (75 s deployed;
    2 s here), however many bytes trickle in."""
    stack = make_stack("trickle", replicas=1, env={"KEEPALIVE_S": "2"})
    try:
        port = int(stack.replica_url(0).rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            opened = time.monotonic()
            closed_after = None
            for n in range(10):  # at most 10 s: a line a second, until the replica closes
                try:
                    s.sendall(f"X-Slow-{n}: a\r\n".encode())
                    if s.recv(1) == b"":
                        closed_after = time.monotonic() - opened
                        break
                except TimeoutError:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    closed_after = time.monotonic() - opened
                    break
        assert closed_after is not None and closed_after < 5, closed_after
    finally:
        stack.stop()

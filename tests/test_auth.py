"""API keys and roles, idempotent retries, and settings from the environment."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from service.api.app import create_app
from service.api_keys import ApiKeys, Role
from service.settings import Settings

from .conftest import AiohttpClient, Api
from .test_api import assert_problem

SECRETS = {
    "issuer": "iss-0123456789abcdef",
    "scanner": "scn-0123456789abcdef",
    "admin": "adm-0123456789abcdef",
}
API_KEYS = ",".join(f"{role}-key:{role}:{secret}" for role, secret in SECRETS.items())


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[role]}"}


@pytest.fixture
async def keyed(aiohttp_client: AiohttpClient, fake_redis: Redis) -> Api:
    settings = Settings(api_keys=ApiKeys.parse(API_KEYS))
    return Api(await aiohttp_client(create_app(settings, redis=fake_redis)))


async def _ticket(api: Api) -> str:
    r = await api.post("/ticket", headers=bearer("admin"))
    assert r.status == 201
    ticket_id: str = r.body["id"]
    return ticket_id


def test_keys_parse_commas_and_newlines() -> None:
    ring = ApiKeys.parse("a:issuer:0123456789abcdef0,\n b:scanner:0123456789abcdef1\n\nc:admin:0123456789abcdef2")
    assert [(k.name, k.role) for k in ring.keys] == [("a", Role.ISSUER), ("b", Role.SCANNER), ("c", Role.ADMIN)]
    assert ring.authenticate("0123456789abcdef1") == ring.keys[1]
    assert ring.authenticate("0123456789abcdef") is None
    assert "0123456789abcdef0" not in repr(ring)


@pytest.mark.parametrize("bad", [
    "a:issuer", "a:king:0123456789abcdef", "a:issuer:short", "a b:admin:0123456789abcdef",
    "a:issuer:0123456789abcdef,a:admin:0123456789abcdeX", "a:issuer:0123456789abcdef,b:admin:0123456789abcdef",
])
def test_bad_keys_are_refused_at_start(bad: str) -> None:
    with pytest.raises(ValueError):
        ApiKeys.parse(bad)


def test_keys_from_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("gate:scanner:0123456789abcdefXYZ\n")
    settings = Settings.from_env({"API_KEYS_FILE": str(path)})
    assert [k.name for k in settings.api_keys.keys] == ["gate"]
    with pytest.raises(ValueError):
        Settings.from_env({"API_KEYS_FILE": str(path), "API_KEYS": "x:admin:0123456789abcdef"})


def test_settings_from_env_and_bad_numbers() -> None:
    s = Settings.from_env({"REDIS_URL": "redis://r:1/2", "REDIS_TIMEOUT_MS": "250", "REPLAY_TTL_S": "9"})
    assert (s.redis_url, s.redis_timeout_ms, s.replay_ttl_s, s.api_keys.enabled) == ("redis://r:1/2", 250, 9, False)
    with pytest.raises(ValueError):
        Settings.from_env({"REDIS_TIMEOUT_MS": "soon"})
    with pytest.raises(ValueError):
        Settings.from_env({"REDIS_MAX_CONNECTIONS": "0"})


async def test_auth_off_says_so_and_warns(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    assert (await api.get("/")).body["auth"] == "off"
    with caplog.at_level(logging.WARNING):
        create_app(Settings())
    assert "auth is OFF" in caplog.text


async def test_public_routes_need_no_key(keyed: Api) -> None:
    for path in ("/", "/healthz", "/readyz", "/openapi.json"):
        assert (await keyed.get(path)).status == 200
    assert (await keyed.get("/")).body["auth"] == "on"


async def test_missing_or_unknown_key_is_401_with_challenge(keyed: Api) -> None:
    r = await keyed.post("/ticket")
    assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await keyed.post("/ticket", headers={"Authorization": "Bearer not-a-key-0123456789"})
    assert_problem(r, 401)
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert_problem(await keyed.post("/ticket", headers={"Authorization": f"Basic {SECRETS['admin']}"}), 401)


ROLE_MATRIX = [
    # (role, method, path template, allowed)
    ("issuer", "POST", "/ticket", True),
    ("issuer", "GET", "/ticket/{id}", True),
    ("issuer", "GET", "/ticket?id={id}", True),
    ("issuer", "GET", "/ticket", False),
    ("issuer", "POST", "/ticket/{id}/invalidate", False),
    ("issuer", "PATCH", "/ticket/validate?id={id}", False),
    ("scanner", "POST", "/ticket", False),
    ("scanner", "GET", "/ticket/{id}", True),
    ("scanner", "GET", "/ticket", False),
    ("scanner", "PATCH", "/ticket/invalidate?id={id}", True),
    ("scanner", "POST", "/ticket/{id}/validate", False),
    ("admin", "GET", "/ticket", True),
    ("admin", "POST", "/ticket/{id}/invalidate", True),
    ("admin", "POST", "/ticket/{id}/validate", True),
    ("issuer", "POST", "/ticket/{id}/revoke", True),
    ("scanner", "POST", "/ticket/{id}/revoke", False),
    ("admin", "POST", "/ticket/{id}/revoke", True),
    ("issuer", "POST", "/event", False),
    ("scanner", "POST", "/event", False),
    ("admin", "POST", "/event", True),
    ("issuer", "GET", "/event/{event}", True),
    ("scanner", "GET", "/event/{event}", True),
    ("scanner", "GET", "/event", True),
]


@pytest.mark.parametrize(("role", "method", "path", "allowed"), ROLE_MATRIX)
async def test_roles(keyed: Api, role: str, method: str, path: str, allowed: bool) -> None:
    ticket_id = await _ticket(keyed)
    event = await keyed.post("/event", json={"name": "Gala"}, headers=bearer("admin"))
    if path.endswith("/validate") or "validate?" in path and "invalidate" not in path:
        await keyed.post(f"/ticket/{ticket_id}/invalidate", headers=bearer("admin"))
    body = {"name": "Gala"} if path == "/event" and method == "POST" else None
    r = await keyed.request(method, path.format(id=ticket_id, event=event.body["id"]), headers=bearer(role), json=body)
    if allowed:
        assert r.status in (200, 201), r.body
    else:
        assert_problem(r, 403)
    # The acting key is named for nginx's access log, refused or not.
    assert r.headers["X-Actor"] == f"{role}-key"


async def test_denials_do_not_reveal_whether_a_ticket_exists(keyed: Api) -> None:
    known = await _ticket(keyed)
    unknown = str(uuid.uuid4())
    for who in ({}, bearer("issuer")):
        a = await keyed.post(f"/ticket/{known}/invalidate", headers=who)
        b = await keyed.post(f"/ticket/{unknown}/invalidate", headers=who)
        assert a.status == b.status and a.body == {**b.body, "detail": a.body["detail"]}
        assert a.body["detail"] == b.body["detail"]


async def test_secrets_are_never_logged(
    aiohttp_client: AiohttpClient, fake_redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        api = Api(await aiohttp_client(create_app(Settings(api_keys=ApiKeys.parse(API_KEYS)), redis=fake_redis)))
        await api.post("/ticket", headers=bearer("issuer"))
        await api.post("/ticket", headers={"Authorization": "Bearer wrong-secret-0123456789"})
    assert "admin-key (admin)" in caplog.text
    for secret in [*SECRETS.values(), "wrong-secret-0123456789"]:
        assert secret not in caplog.text


async def test_idempotent_create_replays_first_answer(keyed: Api) -> None:
    hdr = {**bearer("issuer"), "Idempotency-Key": "order-42"}
    first = await keyed.post("/ticket", headers=hdr)
    again = await keyed.post("/ticket", headers=hdr)
    assert first.status == again.status == 201 and again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert again.headers["Location"] == first.headers["Location"]
    # Scoped to the caller: the admin's "order-42" is another request.
    other = await keyed.post("/ticket", headers={**bearer("admin"), "Idempotency-Key": "order-42"})
    assert other.body["id"] != first.body["id"]
    assert len((await keyed.get("/ticket", headers=bearer("admin"))).body) == 2


async def test_idempotent_transition_and_reuse_for_another_request(keyed: Api) -> None:
    ticket_id = await _ticket(keyed)
    hdr = {**bearer("admin"), "Idempotency-Key": '"scan-7"'}
    first = await keyed.post(f"/ticket/{ticket_id}/invalidate", headers=hdr)
    again = await keyed.request("PATCH", f"/ticket/invalidate?id={ticket_id}", headers=hdr)
    assert first.status == again.status == 200 and again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"
    reused = await keyed.post(f"/ticket/{ticket_id}/validate", headers=hdr)
    assert_problem(reused, 422)
    assert (await keyed.get(f"/ticket/{ticket_id}", headers=bearer("admin"))).body["valid"] is False


@pytest.mark.parametrize("bad", ["", "x" * 256, "caf\u00e9", 'a"b'])
async def test_bad_idempotency_key_is_400(keyed: Api, bad: str) -> None:
    r = await keyed.request("POST", "/ticket", headers={**bearer("issuer"), "Idempotency-Key": bad}, check=False)
    assert_problem(r, 400)


# Every route the app serves, by its method and canonical path: what a call of it sends, with
# {event}, {list}, {ticket} and {token} of the event the route touches. Public routes name no
# key; the rest must keep the event rule (service/api/auth.py) for every kind of key.
PUBLIC_ROUTES = {("GET", "/"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json"),
                 ("GET", "/metrics"), ("GET", "/keys"), ("POST", "/device/enrol")}
EVENT_ROUTES: dict[tuple[str, str], list[tuple[str, dict[str, object] | None]]] = {
    ("GET", "/stats"): [("/stats", None)],
    ("GET", "/changes"): [("/changes?event={event}", None), ("/changes", None)],
    ("GET", "/events"): [("/events?event={event}", None)],
    ("POST", "/ticket"): [("/ticket", {"event": "{event}"})],
    ("GET", "/ticket"): [("/ticket?id={ticket}", None), ("/ticket?id={token}", None), ("/ticket", None)],
    ("POST", "/ticket/batch"): [("/ticket/batch", {"tickets": [{"event": "{event}"}]})],
    ("POST", "/ticket/invalidate"): [("/ticket/invalidate?id={ticket}", None)],
    ("PATCH", "/ticket/invalidate"): [("/ticket/invalidate?id={ticket}", None)],
    ("POST", "/ticket/validate"): [("/ticket/validate?id={ticket}", None)],
    ("PATCH", "/ticket/validate"): [("/ticket/validate?id={ticket}", None)],
    ("POST", "/ticket/{id}/invalidate"): [("/ticket/{ticket}/invalidate", None)],
    ("POST", "/ticket/{id}/validate"): [("/ticket/{ticket}/validate", None)],
    ("GET", "/ticket/{id}/history"): [("/ticket/{ticket}/history", None)],
    ("GET", "/ticket/{id}/token"): [("/ticket/{ticket}/token", None)],
    ("GET", "/ticket/{id}/qr.svg"): [("/ticket/{ticket}/qr.svg", None)],
    ("GET", "/ticket/{id}/qr.png"): [("/ticket/{token}/qr.png", None)],
    ("POST", "/ticket/{id}/revoke"): [("/ticket/{ticket}/revoke", {})],
    ("POST", "/event"): [("/event", {"name": "Another"})],
    ("GET", "/event"): [("/event", None)],
    ("GET", "/event/{event}"): [("/event/{event}", None)],
    ("POST", "/event/{event}/list"): [("/event/{event}/list", {"name": "Side door"})],
    ("GET", "/event/{event}/list"): [("/event/{event}/list", None)],
    ("GET", "/event/{event}/list/{list}"): [("/event/{event}/list/{list}", None)],
    ("GET", "/event/{event}/list/{list}/book"): [("/event/{event}/list/{list}/book", None)],
    ("GET", "/event/{event}/scans"): [("/event/{event}/scans", None)],
    ("POST", "/event/{event}/import"): [("/event/{event}/import", {"source": "shop", "codes": [{"code": "A-1"}]})],
    ("DELETE", "/event/{event}/import/{source}"): [("/event/{event}/import/shop", None)],
    ("GET", "/event/{event}/live"): [("/event/{event}/live", None)],
    ("POST", "/checkin"): [("/checkin", {"ticket": "{ticket}", "list": "{list}"}),
                           ("/checkin", {"ticket": "{token}", "list": "{list}"})],
    ("POST", "/checkin/annul"): [("/checkin/annul", {"ticket": "{ticket}", "list": "{list}"})],
    ("GET", "/ticket/{id}"): [("/ticket/{ticket}", None), ("/ticket/{token}", None)],
    ("POST", "/device"): [("/device", {"name": "Gate phone", "role": "scanner"})],
    ("GET", "/device"): [("/device", None)],
    ("GET", "/device/{id}"): [("/device/0123456789abcdef", None)],
    ("POST", "/device/{id}/roll"): [("/device/0123456789abcdef/roll", None)],
    ("POST", "/device/{id}/revoke"): [("/device/0123456789abcdef/revoke", None)],
    ("POST", "/webhook"): [("/webhook", {"url": "https://203.0.113.9/hook"})],
    ("GET", "/webhook"): [("/webhook", None)],
    ("GET", "/webhook/{id}"): [("/webhook/0123456789abcdef", None)],
    ("DELETE", "/webhook/{id}"): [("/webhook/0123456789abcdef", None)],
    ("POST", "/webhook/{id}/secret"): [("/webhook/0123456789abcdef/secret", None)],
    ("POST", "/webhook/{id}/enable"): [("/webhook/0123456789abcdef/enable", None)],
    ("GET", "/webhook/{id}/deliveries"): [("/webhook/0123456789abcdef/deliveries", None)],
    ("POST", "/webhook/{id}/deliveries/{delivery}/retry"): [
        ("/webhook/0123456789abcdef/deliveries/msg_0123456789abcdef0123456789/retry", None)],
}


def _route_key(method: str, canonical: str) -> tuple[str, str]:
    return method, canonical.split(":", 1)[0].rstrip("}") + "}" if "{id:" in canonical else canonical


def _fill(value: object, names: dict[str, str]) -> object:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


async def test_every_route_keeps_the_event_rule_for_every_kind_of_key(aiohttp_client: AiohttpClient,
                                                                      fake_redis: Redis) -> None:
    """Route x key: a key bound to the route's event is answered as an unbound key of its
    role is; a key bound to another event gets 403, on reads, tokens and writes alike; a
    route over every event is 403 to any bound key."""
    from .conftest import TEST_SIGNER

    admin = {"Authorization": "Bearer adm-0123456789abcdef"}
    open_api = Api(await aiohttp_client(create_app(Settings(signer=TEST_SIGNER), redis=fake_redis)))
    names: dict[str, dict[str, str]] = {}
    for label in ("mine", "theirs"):
        event = (await open_api.post("/event", json={"name": label})).body["id"]
        gate = (await open_api.post(f"/event/{event}/list", json={"name": "Gate"})).body["id"]
        ticket = (await open_api.post("/ticket", json={"event": event})).body["id"]
        token = (await open_api.get(f"/ticket/{ticket}/token")).body["token"]
        names[label] = {"event": event, "list": gate, "ticket": ticket, "token": token}
    keys = (f"ops:admin:adm-0123456789abcdef,free:scanner:free-0123456789abcdef,"
            f"mine:scanner:mine-0123456789abcdef:{names['mine']['event']},"
            f"theirs:scanner:theirs-0123456789abcdef:{names['theirs']['event']},"
            f"box:issuer:box-0123456789abcdef")
    app = create_app(Settings(api_keys=ApiKeys.parse(keys), signer=TEST_SIGNER), redis=fake_redis)
    api = Api(await aiohttp_client(app))
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD" and r.resource}
    assert {_route_key(m, c) for m, c in served} == set(EVENT_ROUTES) | PUBLIC_ROUTES
    for route in served:
        handler = next(r.handler for r in app.router.routes() if (r.method, r.resource and r.resource.canonical)
                       == route)
        if _route_key(*route) not in PUBLIC_ROUTES:
            assert getattr(handler, "event_scope", None) is not None, f"{route} names no event scope"
    table: list[tuple[str, str, int, int, int]] = []
    for (method, _), calls in EVENT_ROUTES.items():
        for path, body in calls:
            url = path.format(**names["mine"])
            kw = {} if body is None else {"json": _fill(body, names["mine"])}
            answers = {}
            for who in ("theirs", "mine", "free"):  # the refused first: nothing may change
                r = await api.request(method, url, headers={"Authorization": f"Bearer {who}-0123456789abcdef"},
                                      **kw)  # type: ignore[arg-type]
                answers[who] = r.status
            spans_all = "{" not in path and path not in ("/ticket", "/ticket/batch", "/checkin", "/checkin/annul",
                                                          "/event")
            table.append((method, path, answers["free"], answers["mine"], answers["theirs"]))
            if (method, path) == ("GET", "/event"):  # filtered to the bound event: below
                continue
            if spans_all or (method, path) == ("POST", "/event"):
                assert answers["mine"] == answers["theirs"] == 403, (method, path, answers)
                continue
            assert answers["theirs"] == 403, (method, path, answers)
            assert (answers["mine"] == 403) == (answers["free"] == 403), (method, path, answers)
    # A scanner reads its own event's data, and never mints a token (the box office prints).
    by_path = {(m, p): (free, mine) for m, p, free, mine, _ in table}
    assert by_path[("GET", "/event/{event}")] == (200, 200)
    assert by_path[("GET", "/ticket/{ticket}/history")] == (200, 200)
    assert by_path[("GET", "/ticket/{ticket}/token")] == (403, 403)
    listed = (await api.get("/event", headers={"Authorization": "Bearer mine-0123456789abcdef"})).body
    assert [e["id"] for e in listed] == [names["mine"]["event"]]
    box = {"Authorization": "Bearer box-0123456789abcdef"}
    assert (await api.get(f"/ticket/{names['theirs']['ticket']}/token", headers=box)).status == 200
    revoked = await api.post(f"/ticket/{names['theirs']['ticket']}/revoke", json={}, headers=admin)
    assert revoked.status == 200
    for kind in ("token", "qr.svg", "qr.png"):
        assert_problem(await api.get(f"/ticket/{names['theirs']['ticket']}/{kind}", headers=box), 409)

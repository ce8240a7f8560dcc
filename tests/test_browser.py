"""The gate and the box office in Debian's Chromium (headless, driven by Playwright), against
the real stack through nginx: the camera decoding a ticket's QR code from Chromium's fake
capture device, the verdicts, offline scans and their upload with a conflict, tampered
tokens, the installable app shell, accessibility (axe-core), screenshots under
var/screenshots, and the scan-to-verdict times (printed, and written beside them)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import shutil
import statistics
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import segno
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, sync_playwright

from tooling.procs import wait_until
from tooling.stack import LocalStack

from .conftest import MakeStack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "var" / "screenshots"
AXE = ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js"
KEYS = {"box": ("issuer", "box-0123456789abcdef"), "gate": ("scanner", "gate-0123456789abcdef"),
        "gate2": ("scanner", "gate2-0123456789abcdef"), "ops": ("admin", "ops-0123456789abcdef"),
        "watch": ("supervisor", "watch-0123456789abcdef")}
# The probe's flags: without the background-networking ones, Chromium keeps dialling out.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed: `make test` installs it (tooling/ensure-system.sh)")
    return found


@pytest.fixture(scope="module")
def stack(make_stack: MakeStack) -> LocalStack:
    api_keys = ",".join(f"{name}:{role}:{secret}" for name, (role, secret) in KEYS.items())
    return make_stack("browser", env={"API_KEYS": api_keys})


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture(scope="module", autouse=True)
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


class Client:
    """The API through nginx, as a box office or another gate would call it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, who: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {KEYS[who][1]}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path}: {err.code} {err.read()!r}") from None

    def venue(self, name: str, **list_body: Any) -> tuple[str, dict[str, Any]]:
        event = self.call("POST", "/event", "ops", {"name": name})["id"]
        gate = self.call("POST", f"/event/{event}/list", "ops", {"name": "North gate", **list_body})
        return event, gate

    def ticket(self, event: str, **body: Any) -> tuple[str, str]:
        made = self.call("POST", "/ticket", "box", {"event": event, **body})
        return made["id"], self.call("GET", f"/ticket/{made['id']}/token", "box")["token"]


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> Client:
    return Client(stack.url)


def new_context(browser: Browser, *, workers: str = "block") -> BrowserContext:
    # Service workers off unless a test is about them: a route or a cut network then applies
    # to the page's requests as they are.
    return browser.new_context(service_workers=workers, viewport={"width": 1024, "height": 720})  # type: ignore[arg-type]


def open_gate(page: Page, stack: LocalStack, event: str, gate: dict[str, Any], key: str = "gate") -> None:
    page.goto(f"{stack.url}/gate/")
    page.get_by_label("Scanner key").fill(KEYS[key][1])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Event").select_option(event)
    page.get_by_label("Check-in list").select_option(gate["id"])
    page.get_by_role("button", name="Start scanning").click()
    page.wait_for_function("() => window.__gate && window.__gate.synced >= 1")


def verdicts(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate("window.__gate.verdicts")
    return found


def scan_typed(page: Page, code: str) -> dict[str, Any]:
    """A hand scanner: the code typed into the focused field, then Enter."""
    before = len(verdicts(page))
    page.get_by_label("Ticket code (hand scanner or typed)").fill(code)
    page.get_by_label("Ticket code (hand scanner or typed)").press("Enter")
    page.wait_for_function(f"() => window.__gate.verdicts.length > {before}")
    return verdicts(page)[-1]


def verdict_text(page: Page) -> str:
    return page.locator("#verdict").inner_text()


def dismiss(page: Page) -> None:
    page.keyboard.press("Escape")
    page.wait_for_selector("#verdict", state="hidden")


def screenshot(page: Page, name: str, full_page: bool = False) -> Image.Image:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    image = Image.open(path).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 8, f"{path} is blank"
    return image


def dominant(image: Image.Image) -> tuple[int, int, int]:
    counts = image.resize((64, 64)).getcolors(maxcolors=4096) or []
    rgb: tuple[int, int, int] = max(counts)[1]  # type: ignore[assignment]
    return rgb


def y4m_of(token: str, path: Path, width: int = 640, height: int = 480) -> None:
    """A video of the ticket's QR code for Chromium's fake camera: the code as segno draws
    it, black on white, in YUV 4:2:0."""
    rows = [list(row) for row in segno.make_qr(token, error="m").matrix_iter(scale=1, border=4)]
    scale = (height - 40) // len(rows)
    left, top = (width - scale * len(rows)) // 2, (height - scale * len(rows)) // 2
    luma = bytearray(b"\xeb" * (width * height))
    for r, row in enumerate(rows):
        for c, dark in enumerate(row):
            if dark:
                for y in range(top + r * scale, top + (r + 1) * scale):
                    start = y * width + left + c * scale
                    luma[start:start + scale] = b"\x10" * scale
    chroma = b"\x80" * (width // 2 * height // 2 * 2)
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(2):
            f.write(b"FRAME\n" + bytes(luma) + chroma)


@contextlib.contextmanager
def camera_seeing(playwright: Playwright, code: str, tmp_path: Path) -> Iterator[Browser]:
    """A Chromium whose fake camera shows the QR code of `code`, closed after."""
    video = tmp_path / "camera.y4m"
    y4m_of(code, video)
    browser = playwright.chromium.launch(executable_path=chromium(), headless=True,
                                         args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={video}"])
    try:
        yield browser
    finally:
        browser.close()


def test_the_camera_reads_a_ticket_and_then_says_already_used(
        playwright: Playwright, stack: LocalStack, api: Client, tmp_path: Path) -> None:
    event, gate = api.venue("Camera night")
    ticket, token = api.ticket(event, type="vip", holder="Ada Lovelace")
    with camera_seeing(playwright, token, tmp_path) as browser:
        page = new_context(browser).new_page()
        open_gate(page, stack, event, gate)
        page.wait_for_function("() => window.__gate.verdicts.some(v => v.source === 'camera')", timeout=30_000)
        first = verdicts(page)[0]
        assert first == {"kind": "admitted", "reason": None, "mode": "online", "source": "camera"}
        assert "Admitted" in verdict_text(page) and "Type: vip" in verdict_text(page)
        assert dominant(screenshot(page, "gate-admitted")) == (11, 110, 46)
        assert page.evaluate("window.__gate.detector") in ("zxing-wasm", "native")
        # The camera still sees it: after the pause for one code, the second read is refused.
        page.wait_for_function("() => window.__gate.verdicts.length >= 2", timeout=30_000)
        second = verdicts(page)[1]
        assert second["kind"] == "refused" and second["reason"] == "already_used"
        text = verdict_text(page)
        assert "This ticket was already used." in text and "Used at " in text and "North gate" in text
        assert dominant(screenshot(page, "gate-already-used")) == (176, 0, 32)
        history = api.call("GET", f"/ticket/{ticket}/history", "gate")
        assert [h["type"] for h in history][:1] == ["created"]


def _hang(route: Route) -> None:
    """An API that does not answer: the request is left pending."""


def test_offline_scans_queue_sync_and_show_a_conflict(
        browser: Browser, stack: LocalStack, api: Client) -> None:
    event, gate = api.venue("Offline night")
    tickets = {name: api.ticket(event) for name in ("early", "later", "elsewhere", "hung")}
    context = new_context(browser)
    page = context.new_page()
    open_gate(page, stack, event, gate)
    assert scan_typed(page, tickets["early"][1])["kind"] == "admitted"
    dismiss(page)

    # The API stops answering: the scan waits its timeout, then is checked on the device.
    page.route("**/checkin", _hang)
    hung = scan_typed(page, tickets["hung"][1])
    assert hung == {"kind": "offline", "reason": None, "mode": "offline", "source": "typed"}
    page.unroute("**/checkin")
    dismiss(page)

    # The network is cut.
    context.set_offline(True)
    later = scan_typed(page, tickets["later"][1])
    assert later["kind"] == "offline" and "Admitted offline" in verdict_text(page)
    image = screenshot(page, "gate-admitted-offline")
    assert dominant(image) == (255, 176, 0)
    assert page.locator("#net").inner_text().startswith("Offline")
    dismiss(page)
    # Known to this device: used online before the cut, or offline here.
    again = scan_typed(page, tickets["early"][1])
    assert again["kind"] == "refused" and again["reason"] == "already_used"
    dismiss(page)
    assert scan_typed(page, tickets["later"][1])["reason"] == "already_used"
    assert "this gate, offline" in verdict_text(page)
    dismiss(page)
    # Another gate admits a ticket meanwhile; this one cannot know, and admits it too.
    api.call("POST", "/checkin", "gate2", {"ticket": tickets["elsewhere"][0], "list": gate["id"]})
    assert scan_typed(page, tickets["elsewhere"][1])["kind"] == "offline"
    dismiss(page)
    # A tampered code is refused offline too: one character of the signature changed.
    token = tickets["elsewhere"][1]
    tampered = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    refused = scan_typed(page, tampered)
    assert refused["kind"] == "refused" and refused["reason"] in ("bad_signature", "malformed_token")
    assert "altered or forged" in verdict_text(page) or "not a ticket" in verdict_text(page)
    screenshot(page, "gate-tampered-offline")
    dismiss(page)
    assert page.locator("#queue").inner_text() == "3 to upload"

    # Back online: the queue goes up; the ticket used elsewhere is a conflict, shown here and
    # recorded in its history.
    context.set_offline(False)
    page.wait_for_function("() => document.querySelector('#queue').textContent === ''", timeout=20_000)
    conflicts = page.locator("#conflicts li")
    assert conflicts.count() == 1
    assert "admitted offline here" in conflicts.inner_text() and "already used" in conflicts.inner_text()
    page.wait_for_function("() => document.querySelector('#admitted').textContent === '4'")
    screenshot(page, "gate-conflict")
    counts = api.call("GET", f"/event/{event}/list/{gate['id']}", "gate")
    assert counts["conflicts"] == 1 and counts["admitted"] == 4  # early, hung, later, elsewhere (gate2)
    elsewhere = tickets["elsewhere"][0]

    def history() -> list[str]:
        return [h["type"] for h in api.call("GET", f"/ticket/{elsewhere}/history", "gate")]

    # The processor writes histories behind the stream.
    wait_until(lambda: "checkin_conflict" in history(), what="the conflict in the ticket's history")
    assert history() == ["created", "checkin", "checkin_conflict"]
    context.close()


def test_a_tampered_code_is_refused_online(browser: Browser, stack: LocalStack, api: Client) -> None:
    event, gate = api.venue("Forgery night")
    _, token = api.ticket(event)
    page = new_context(browser).new_page()
    open_gate(page, stack, event, gate)
    middle = len(token) // 2
    tampered = token[:middle] + ("Q" if token[middle] != "Q" else "R") + token[middle + 1:]
    found = scan_typed(page, tampered)
    assert found == {"kind": "refused", "reason": "bad_signature", "mode": "online", "source": "typed"}
    assert "altered or forged" in verdict_text(page)
    screenshot(page, "gate-tampered")
    counts = api.call("GET", f"/event/{event}/list/{gate['id']}", "gate")
    assert counts["refused"]["bad_signature"] == 1
    page.context.close()


def _percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=20, method="inclusive")
    return {"n": len(values), "p50_ms": round(statistics.median(values), 1), "p95_ms": round(cuts[18], 1)}


def test_a_late_answer_for_an_earlier_pick_leaves_the_lists_of_the_event_picked(
    browser: Browser, stack: LocalStack, api: Client
) -> None:
    """The page asks for the first event's lists as it opens. A gate that picks another event
    before that answer arrives sees the lists of the event it picked, and the late answer
    changes nothing (it used to replace them, and Start then took another event's list)."""
    a, gate_a = api.venue("Late answer A")
    b, gate_b = api.venue("Late answer B")
    held: list[Route] = []

    def hold_the_first(route: Route) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    context = new_context(browser)
    page = context.new_page()
    page.route("**/event/*/list", hold_the_first)
    page.goto(f"{stack.url}/gate/")
    page.get_by_label("Scanner key").fill(KEYS["gate"][1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_function("() => document.getElementById('event').options.length > 0")
    first = page.get_by_label("Event").input_value()
    target, gate = (b, gate_b) if first == a else (a, gate_a)
    page.get_by_label("Event").select_option(target)
    page.wait_for_function("() => window.__gate.listLoads >= 1")  # the picked event's, the first held
    assert len(held) == 1 and held[0].request.url.endswith(f"/event/{first}/list")
    held[0].continue_()
    page.wait_for_function("() => window.__gate.listLoads >= 2")
    options = page.get_by_label("Check-in list").locator("option")
    assert [options.nth(i).get_attribute("value") for i in range(options.count())] == [gate["id"]]
    assert page.get_by_role("button", name="Start scanning").is_enabled()
    context.close()


def test_scan_to_verdict_times(browser: Browser, stack: LocalStack, api: Client) -> None:
    """From the decoded code to the painted verdict, in the page, online and offline."""
    event, gate = api.venue("Timing night", reentry=True)
    tokens = [api.ticket(event)[1] for _ in range(30)]
    context = new_context(browser)
    page = context.new_page()
    open_gate(page, stack, event, gate)
    for token in tokens[:15]:
        assert scan_typed(page, token)["kind"] == "admitted"
    context.set_offline(True)
    for token in tokens[15:]:
        assert scan_typed(page, token)["kind"] == "offline"
    page.wait_for_function("() => window.__gate.timings.length >= 30")
    timings: list[dict[str, Any]] = page.evaluate("window.__gate.timings")
    # The first offline scan met the cut network (a failed request); the others knew.
    figures = {mode: _percentiles([t["ms"] for t in timings if t["mode"] == mode]) for mode in ("online", "offline")}
    assert figures["online"]["n"] == 15 and figures["offline"]["n"] == 15
    assert all(t["ms"] > 0 for t in timings)
    (SHOTS / "scan-to-verdict.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nSCAN-TO-VERDICT {json.dumps(figures)}")
    context.close()


def test_the_gate_installs_and_opens_offline(browser: Browser, stack: LocalStack) -> None:
    context = new_context(browser, workers="allow")
    page = context.new_page()
    page.goto(f"{stack.url}/gate/")
    manifest = page.evaluate("fetch('manifest.json').then(r => r.json())")
    assert manifest["start_url"] == "/gate/" and manifest["display"] == "standalone" and manifest["icons"]
    page.wait_for_function("() => navigator.serviceWorker.controller !== null || "
                           "navigator.serviceWorker.ready.then(() => true)")
    page.evaluate("navigator.serviceWorker.ready")
    page.reload()  # now controlled, with the shell cached at install
    assert page.evaluate("navigator.serviceWorker.controller !== null")
    [name] = page.evaluate("caches.keys()")  # one cache, named for the release's files
    assert name.startswith("tickets-gate-")
    cached = page.evaluate("(name) => caches.open(name).then(c => c.keys()).then(k => k.map(r => r.url))", name)
    assert f"{stack.url}/vendor/zxing-wasm/zxing_reader.wasm" in cached
    context.set_offline(True)
    page.reload()
    assert page.get_by_role("heading", name="Sign in").is_visible()
    assert page.evaluate("typeof window.BarcodeDetectionAPI") == "object"
    context.close()


@pytest.mark.parametrize("path", ["/gate/", "/office/", "/live/"])
def test_a_page_shows_only_its_first_screen_and_nothing_moves_as_it_loads(
    browser: Browser, stack: LocalStack, path: str,
) -> None:
    """Lighthouse's cumulative layout shift, measured as Chrome reports it: zero. The gate's
    scanner (a grid) once showed under the sign-in form and then moved."""
    page = new_context(browser).new_page()
    page.set_viewport_size({"width": 412, "height": 823})  # Lighthouse's mobile screen
    page.add_init_script("""window.__shifts = [];
        new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__shifts.push(e.value); })
          .observe({ type: "layout-shift", buffered: true });""")
    page.goto(stack.url + path)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(SHOTS / f"first-screen-{path.strip('/')}.png"))
    assert page.evaluate("window.__shifts") == []
    if path == "/gate/":
        assert page.get_by_role("heading", name="Sign in").is_visible()
        assert not page.locator("#scanner").is_visible() and not page.locator("#pick").is_visible()
    page.context.close()


def test_the_box_office_issues_and_shows_qr_codes(browser: Browser, stack: LocalStack, api: Client) -> None:
    event, _ = api.venue("Box office night")
    page = new_context(browser).new_page()
    page.goto(f"{stack.url}/office/")
    page.get_by_label("Issuer key").fill(KEYS["ops"][1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#admin:not([hidden])")
    page.get_by_label("Event", exact=True).select_option(event)
    page.get_by_label("Type").fill("vip")
    page.get_by_label("How many").fill("3")
    page.get_by_role("button", name="Issue").click()
    page.wait_for_function("() => document.querySelectorAll('#issued img').length === 3 && "
                           "[...document.querySelectorAll('#issued img')].every(i => i.complete && i.naturalWidth > 0)")
    assert "Issued 3 tickets." in page.locator("#issue-status").inner_text()
    first_id = page.locator("#issued li").first.get_attribute("data-ticket")
    assert first_id and api.call("GET", f"/ticket/{first_id}", "box")["type"] == "vip"
    page.wait_for_function("() => document.querySelector('#counts').textContent.includes('Box office night')")
    screenshot(page, "office", full_page=True)
    printable = page.context.new_page()
    printable.goto(f"{stack.url}/office/ticket.html?id={first_id}")
    printable.wait_for_function("() => document.querySelector('#issued img') && "
                                "document.querySelector('#issued img').naturalWidth > 0")
    assert "Box office night" in printable.locator("#issued").inner_text()
    screenshot(printable, "office-ticket")
    # An issuer key sees no admin panel.
    issuer = new_context(browser).new_page()
    issuer.goto(f"{stack.url}/office/")
    issuer.get_by_label("Issuer key").fill(KEYS["box"][1])
    issuer.get_by_role("button", name="Sign in").click()
    issuer.wait_for_selector("#desk:not([hidden])")
    assert issuer.locator("#who").inner_text() == "Issuer" and issuer.locator("#admin").is_hidden()
    page.context.close()
    issuer.context.close()


def _axe(page: Page) -> list[dict[str, Any]]:
    page.add_script_tag(content=AXE.read_text())
    result: dict[str, Any] = page.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})")
    return [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]]} for v in result["violations"]]


def test_the_pages_pass_axe_and_work_by_keyboard(browser: Browser, stack: LocalStack, api: Client) -> None:
    event, gate = api.venue("Access night")
    _, token = api.ticket(event)
    # CSP allows this origin's scripts only, so axe is added through the test's own channel.
    context = browser.new_context(bypass_csp=True, service_workers="block")
    page = context.new_page()
    page.goto(f"{stack.url}/gate/")
    assert _axe(page) == []
    # By keyboard alone: the key, the list, the scan.
    page.keyboard.press("Tab")
    page.keyboard.type(KEYS["gate"][1])
    page.keyboard.press("Enter")
    page.wait_for_selector("#pick:not([hidden])")
    page.get_by_label("Event").select_option(event)
    page.get_by_label("Check-in list").select_option(gate["id"])
    page.get_by_role("button", name="Start scanning").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.__gate && window.__gate.synced >= 1")
    assert page.evaluate("document.activeElement.id") == "code"
    assert _axe(page) == []
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.__gate.verdicts.length === 1")
    assert page.get_by_role("alert").filter(has_text="Admitted").count() >= 1
    assert _axe(page) == []
    office = context.new_page()
    office.goto(f"{stack.url}/office/")
    assert _axe(office) == []
    context.close()


def test_the_live_view_follows_the_doors_as_scans_run(browser: Browser, stack: LocalStack, api: Client) -> None:
    """A supervisor's wall screen: the tiles move as scans land (pushed, not polled), a full
    area says so in words and colour, refusals by reason, an enrolled gate never seen is
    flagged offline; axe-core finds nothing."""
    event, hall = api.venue("Live night", reentry=True, capacity=4)
    door = api.call("POST", f"/event/{event}/list", "ops", {"name": "South door"})
    made = api.call("POST", "/device", "ops", {"name": "Gate phone 7", "role": "scanner", "event": event,
                                                "lists": [hall["id"]]})
    api.call("POST", "/device/enrol", "ops", {"token": made["enrolment"]["token"]})
    tickets = [api.ticket(event)[0] for _ in range(5)]
    context = browser.new_context(bypass_csp=True, service_workers="block", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{stack.url}/live/?event={event}")
    page.get_by_label("Supervisor key").fill(KEYS["watch"][1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_function("() => window.__live.snapshots === 1")
    hall_tile = page.locator(f"li.tile[data-list='{hall['id']}']")
    assert hall_tile.locator(".count").inner_text().replace("\n", "") == "0 / 4"
    assert "Offline: Gate phone 7" in hall_tile.inner_text()
    assert page.locator("#devices").inner_text().count("Offline") == 1
    screenshot(page, "live-doors-open")
    for ticket in tickets[:3]:
        api.call("POST", "/checkin", "gate2", {"ticket": ticket, "list": hall["id"]})
    api.call("POST", "/checkin", "gate2", {"ticket": tickets[4], "list": door["id"]})
    page.wait_for_function(f"() => document.querySelector(\"li.tile[data-list='{hall['id']}'] .count\")"
                           ".textContent.startsWith('3')", timeout=10_000)
    assert "Near capacity" not in hall_tile.inner_text() and "75% full" in hall_tile.inner_text()
    api.call("POST", "/checkin", "gate2", {"ticket": tickets[3], "list": hall["id"]})
    api.call("POST", "/checkin", "gate2", {"ticket": tickets[0], "list": hall["id"]})  # already inside: refused
    page.wait_for_function(f"() => document.querySelector(\"li.tile[data-list='{hall['id']}']\")"
                           ".textContent.includes('already inside')", timeout=10_000)
    assert "Full" in hall_tile.inner_text() and "over" in (hall_tile.get_attribute("class") or "")
    assert page.locator("#inside").inner_text() == "5" and page.locator("#refused").inner_text() == "1"
    assert page.evaluate("window.__live.updates") >= 1 and page.evaluate("window.__live.connects") == 1
    image = screenshot(page, "live-area-full")
    assert (176, 0, 32) in {c for _, c in (image.getcolors(maxcolors=1 << 20) or [])}  # the full tile's red
    assert _axe(page) == []
    context.close()
    api.call("POST", f"/device/{made['id']}/revoke", "ops")  # the module's stack is shared: leave no device


def test_the_vendored_files_are_the_pinned_ones_and_nothing_loads_from_elsewhere() -> None:
    import hashlib
    sums = (ROOT / "web" / "vendor" / "SHA256SUMS").read_text().split("\n")
    listed = {line.split("  ")[1]: line.split("  ")[0] for line in sums if line}
    assert {p for p in listed if p.endswith(("ponyfill.js", ".wasm", "index.js", "axe.min.js"))} == {
        "web/vendor/barcode-detector/ponyfill.js", "web/vendor/zxing-wasm/zxing_reader.wasm",
        "web/vendor/noble-ed25519/index.js", "tests/vendor/axe-core/axe.min.js"}
    for path, digest in listed.items():
        assert hashlib.sha256((ROOT / path).read_bytes()).hexdigest() == digest, path
        assert (ROOT / path).parent.joinpath("LICENSE").exists(), path
    # The .wasm is zxing-cpp compiled: its licence is beside it, and the index names every file.
    assert "Apache License" in (ROOT / "web" / "vendor" / "zxing-wasm" / "LICENSE-zxing-cpp").read_text()
    index = (ROOT / "web" / "vendor" / "README.md").read_text()
    for path in listed:
        if "LICENSE" not in path and "README" not in path:
            assert f"`{path.split('/', 2)[2]}`" in index or path.endswith("axe.min.js"), path
    ours = [p for p in (ROOT / "web").rglob("*") if p.suffix in (".html", ".js", ".css", ".json")
            and "vendor" not in p.parts]
    for page in ours:
        # SVG's namespace name is an identifier the browser compares, never an address it fetches.
        text = page.read_text().replace('"http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, page


def test_nginx_serves_the_pages_with_their_types_and_problems_for_the_rest(stack: LocalStack) -> None:
    def fetch(path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(stack.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    status, headers, body = fetch("/gate/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"<title>Gate" in body
    assert "'wasm-unsafe-eval'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Request-Id"] and headers["Cache-Control"] == "no-cache"
    for path, kind in (("/vendor/zxing-wasm/zxing_reader.wasm", "application/wasm"),
                       ("/gate/gate.js", "application/javascript"), ("/gate/manifest.json", "application/json"),
                       ("/office/", "text/html")):
        assert fetch(path)[1]["Content-Type"].startswith(kind), path
    for path, method, code in (("/gate/nothing.js", "GET", 404), ("/gate/", "POST", 405), ("/vendor/", "GET", 404)):
        status, headers, body = fetch(path, method)
        assert status == code and headers["Content-Type"] == "application/problem+json", path
        assert json.loads(body)["status"] == code


def test_the_page_reads_tokens_as_the_service_does(browser: Browser, stack: LocalStack) -> None:
    """web/gate/token.js against service/signing.py, on the same tokens: the claims of good
    ones, and the reason for altered ones."""
    from service.models import Refusal, Ticket, TicketState, new_ticket_id
    from service.signing import TicketSigner, TokenRefused

    signer = TicketSigner.parse(TicketSigner.generate_pem())
    stranger = TicketSigner.parse(TicketSigner.generate_pem())
    shapes: list[dict[str, Any]] = [{}, {"type": "vip"}, {"type": "A.b-c_9" * 4, "valid_from": 0.0},
                                    {"valid_until": 2.0**33 - 0.25}, {"type": "x", "valid_from": 1.9e9 + 0.7,
                                                                       "valid_until": 1.9e9 + 7200.2}]
    cases: list[tuple[str, str | dict[str, Any]]] = []
    for fields in shapes:
        token = signer.sign(Ticket(new_ticket_id("0badf00d"), 0.0, TicketState.VALID, **fields))
        claims = signer.verify(token)
        cases.append((token, {"ticketId": claims.ticket_id, "event": claims.event, "kid": claims.kid,
                              "type": claims.type, "validFrom": claims.valid_from, "validUntil": claims.valid_until}))
        for i in (5, len(token) // 2, len(token) - 2):
            altered = token[:i] + ("B" if token[i] != "B" else "C") + token[i + 1:]
            try:
                signer.verify(altered)
                expected: str = "verified"
            except TokenRefused as exc:
                expected = exc.reason.value
            cases.append((altered, expected))
        cases.append((stranger.sign(Ticket(new_ticket_id("0badf00d"), 0.0, TicketState.VALID, **fields)),
                      Refusal.UNKNOWN_KEY.value))
    page = new_context(browser).new_page()
    page.goto(f"{stack.url}/gate/")
    got = page.evaluate("""async ([jwks, cases]) => {
        const t = await import('/gate/token.js');
        const keys = t.publicKeysOf(jwks);
        const out = [];
        for (const [token] of cases) {
          try {
            const c = await t.verifyToken(token, keys);
            out.push({ticketId: c.ticketId, event: c.event, kid: c.kid, type: c.type,
                      validFrom: c.validFrom, validUntil: c.validUntil});
          } catch (err) { out.push(err.reason || String(err)); }
        }
        return out;
    }""", [signer.jwks(), cases])
    assert got == [expected for _, expected in cases]
    assert sum(isinstance(e, str) and e != "verified" for _, e in cases) >= 15
    page.context.close()


def test_the_gate_reads_its_book_from_the_tickets_and_refuses_a_revoked_ticket_offline(
        browser: Browser, stack: LocalStack, api: Client) -> None:
    event, gate = api.venue("Book night")
    (revoked, revoked_token), (used, used_token) = api.ticket(event), api.ticket(event)
    api.call("POST", f"/ticket/{revoked}/revoke", "box", {})
    api.call("POST", "/checkin", "gate2", {"ticket": used, "list": gate["id"]})
    context = new_context(browser)
    page = context.new_page()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    open_gate(page, stack, event, gate)
    assert any(f"/list/{gate['id']}/book" in url for url in asked)
    context.set_offline(True)
    assert scan_typed(page, revoked_token)["reason"] == "revoked"
    dismiss(page)
    assert scan_typed(page, used_token)["reason"] == "already_used"
    dismiss(page)
    context.close()


def test_a_gate_scans_imported_codes_online_and_judges_them_offline_from_digests(
        browser: Browser, stack: LocalStack, api: Client) -> None:
    """Tickets sold elsewhere: the gate knows their codes from its book (read before) and the
    change feed (imported since), as digests only, and judges them offline as our own."""
    event, gate = api.venue("Imported night")
    codes = ["EXT-ONLINE", "EXT-OFFLINE", "EXT-USED", "EXT-NEVER-HERE"]
    api.call("POST", f"/event/{event}/import", "box", {
        "source": "outside-shop", "codes": [{"code": c, "type": "standard"} for c in codes]})
    api.call("POST", "/checkin", "gate2", {"ticket": "EXT-USED", "list": gate["id"]})
    context = new_context(browser)
    page = context.new_page()
    open_gate(page, stack, event, gate)
    online = scan_typed(page, "EXT-ONLINE")
    assert online == {"kind": "admitted", "reason": None, "mode": "online", "source": "typed"}
    assert "Type: standard" in verdict_text(page)
    screenshot(page, "gate-imported-admitted")
    dismiss(page)
    # Imported while the gate is open: the change feed brings its code's digest.
    api.call("POST", f"/event/{event}/import", "box", {"source": "outside-shop", "codes": [{"code": "EXT-LATE"}]})
    synced = page.evaluate("window.__gate.synced")
    page.wait_for_function(f"() => window.__gate.synced > {synced}", timeout=20_000)
    context.set_offline(True)
    assert scan_typed(page, "EXT-OFFLINE")["kind"] == "offline"
    assert "Admitted offline" in verdict_text(page)
    screenshot(page, "gate-imported-offline")
    dismiss(page)
    assert scan_typed(page, "EXT-OFFLINE")["reason"] == "already_used"
    dismiss(page)
    assert scan_typed(page, "EXT-USED")["reason"] == "already_used"  # used elsewhere before the book was read
    dismiss(page)
    assert scan_typed(page, "EXT-LATE")["kind"] == "offline"
    dismiss(page)
    unknown = scan_typed(page, "EXT-NOBODY-SOLD")
    assert unknown["reason"] == "unknown_ticket" and "No such ticket." in verdict_text(page)
    dismiss(page)
    stored = page.evaluate("JSON.stringify(Object.assign({}, window.localStorage))")
    assert "EXT-NEVER-HERE" not in stored and "EXT-USED" not in stored  # codes as digests only
    digest = hashlib.sha256(f"{event}\nEXT-NEVER-HERE".encode()).hexdigest()[:32]
    assert digest in stored
    # Back online: the offline admissions go up by their codes, and land as scans of the tickets.
    context.set_offline(False)
    page.wait_for_function("() => document.querySelector('#queue').textContent === ''", timeout=20_000)
    counts = api.call("GET", f"/event/{event}/list/{gate['id']}", "gate")
    assert counts["admitted"] == 4 and counts["conflicts"] == 0  # used (gate2), online, offline, late
    context.close()


def test_the_camera_reads_an_imported_code(playwright: Playwright, stack: LocalStack, api: Client,
                                           tmp_path: Path) -> None:
    event, gate = api.venue("Imported camera night")
    made = api.call("POST", f"/event/{event}/import", "box", {"source": "shop", "codes": [{"code": "SHOP-0042"}]})
    with camera_seeing(playwright, "SHOP-0042", tmp_path) as browser:
        page = new_context(browser).new_page()
        open_gate(page, stack, event, gate)
        page.wait_for_function("() => window.__gate.verdicts.some(v => v.source === 'camera')", timeout=30_000)
        assert verdicts(page)[0] == {"kind": "admitted", "reason": None, "mode": "online", "source": "camera"}
        screenshot(page, "gate-imported-camera")
    ticket = made["tickets"][0]["id"]
    wait_until(lambda: len(api.call("GET", f"/ticket/{ticket}/history", "gate")) >= 2,
               what="the camera's scan in the imported ticket's history")
    assert [h["type"] for h in api.call("GET", f"/ticket/{ticket}/history", "gate")][:2] == ["created", "checkin"]


def test_signing_out_uploads_or_forgets_what_the_gate_holds(browser: Browser, stack: LocalStack, api: Client) -> None:
    event, gate = api.venue("Sign-out night")
    tickets = [api.ticket(event) for _ in range(2)]
    context = new_context(browser)
    page = context.new_page()
    open_gate(page, stack, event, gate)
    context.set_offline(True)
    assert scan_typed(page, tickets[0][1])["kind"] == "offline"
    dismiss(page)
    # Offline, the queued scan cannot go up: the person is asked, and says no.
    page.locator("#change").click()
    # The handler says no at once (a dialog left open would hold the click); the wait is for
    # the question itself, as the upload is tried first, for however long it takes.
    page.once("dialog", lambda dialog: dialog.dismiss())
    with page.expect_event("dialog") as asked:
        page.get_by_role("button", name="Sign out").click()
    assert "not uploaded" in asked.value.message
    page.wait_for_function("() => !document.querySelector('#pick').hidden")
    assert page.locator("#signin").is_hidden()
    # Online again, signing out uploads the queue first, then forgets every book.
    context.set_offline(False)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_selector("#signin", state="visible")
    assert api.call("GET", f"/event/{event}/list/{gate['id']}", "gate")["admitted"] == 1
    books = page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('tickets.gate.book.'))")
    assert books == []
    context.close()


def test_the_book_keeps_a_ticket_used_after_an_annulled_exit(browser: Browser, stack: LocalStack,
                                                             api: Client) -> None:
    """web/gate/book.js: entry, exit and an annulled exit at a single-entry list leave the
    ticket used (and the holder inside): an offline gate refuses it."""
    event, gate = api.venue("Annul night")
    ticket, token = api.ticket(event)
    jwks = api.call("GET", "/keys", "gate")
    page = new_context(browser).new_page()
    page.goto(f"{stack.url}/gate/")
    got = page.evaluate("""async ([jwks, list, event, ticket, token]) => {
        const { Book } = await import('/gate/book.js');
        const memory = new Map();
        const storage = { getItem: (k) => memory.get(k) ?? null, setItem: (k, v) => memory.set(k, v) };
        const book = new Book(list.id, storage);
        book.setKeys(jwks);
        book.state.list = list;
        book.state.event = { id: event };
        const change = (type, direction) => ({ type, ticket_id: ticket, list: list.id, direction, timestamp: 1 });
        for (const [type, direction] of [["checkin", "entry"], ["checkin", "exit"], ["checkin_annulled", "exit"]]) {
          book.apply(change(type, direction));
        }
        const afterExit = await book.decide(token, "entry", Date.now() / 1000);
        book.apply(change("checkin_annulled", "entry"));
        const afterEntry = await book.decide(token, "entry", Date.now() / 1000);
        return [afterExit.reason, !!book.state.inside[ticket], afterEntry.admitted];
    }""", [jwks, gate, event, ticket, token])
    assert got == ["already_used", False, True]
    page.context.close()


def test_a_gate_enrols_from_the_offices_code_and_stops_when_revoked(
        playwright: Playwright, browser: Browser, stack: LocalStack, api: Client, tmp_path: Path) -> None:
    """The box office makes a device bound to a gate and shows its enrolment code; the gate
    page reads it through the (fake) camera, enrols, takes its list and direction from the
    device, scans; the office revokes it; the gate's next scan shows it revoked and leaves
    nothing of the key on the device."""
    event, gate = api.venue("Device night")
    tickets = [api.ticket(event) for _ in range(2)]
    office = new_context(browser).new_page()
    office.goto(f"{stack.url}/office/")
    office.get_by_label("Issuer key").fill(KEYS["ops"][1])
    office.get_by_role("button", name="Sign in").click()
    office.wait_for_selector("#devices", state="visible")
    office.get_by_label("Device name").fill("North 1")
    office.locator("#device-event").select_option(event)
    office.wait_for_function(f"() => [...document.querySelectorAll('#device-list option')].some(o => o.value === "
                             f"'{gate['id']}')")
    office.locator("#device-list").select_option(gate["id"])
    office.locator("#device-direction").select_option("entry")
    office.get_by_role("button", name="Make device").click()
    office.wait_for_selector("#enrolment", state="visible")
    office.wait_for_function("() => document.querySelector('#enrolment-qr').naturalWidth > 0")
    screenshot(office, "office-device-enrolment", full_page=True)
    url = office.locator("#enrolment-link").get_attribute("href")
    assert url is not None and "/gate/#enrol=tke_" in url
    with camera_seeing(playwright, url, tmp_path) as camera:
        page = new_context(camera).new_page()
        page.goto(f"{stack.url}/gate/")
        page.get_by_role("button", name="Scan enrolment code").click()
        page.wait_for_function("() => window.__gate.enrolled && window.__gate.synced >= 1", timeout=30_000)
        assert page.locator("#where").inner_text() == "North 1 · North gate · Entry"
        assert scan_typed(page, tickets[0][1])["kind"] == "admitted"
        screenshot(page, "gate-device-admitted")
        dismiss(page)
        device_key = page.evaluate("JSON.parse(localStorage.getItem('tickets.gate')).key")
        office.once("dialog", lambda dialog: dialog.accept())
        office.get_by_role("button", name="Revoke").click()
        office.wait_for_selector("td.state.revoked")
        # Every replica refuses the key once its worker has checked (within 250 ms).
        for replica in (stack.replica_url(i) + f"/event/{event}" for i in range(2)):
            wait_until(functools.partial(refused, replica, device_key), 5, f"{replica} to refuse the revoked key")
        page.get_by_label("Ticket code (hand scanner or typed)").fill(tickets[1][1])
        page.get_by_label("Ticket code (hand scanner or typed)").press("Enter")
        page.wait_for_selector("#revoked", state="visible")
        screenshot(page, "gate-device-revoked")
        assert "wiped" in page.locator("#revoked-detail").inner_text() and page.locator("#where").inner_text() == ""
        assert page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('tickets.gate'))") == []
        assert api.call("GET", f"/event/{event}/list/{gate['id']}", "gate")["admitted"] == 1
    office.context.close()


def refused(url: str, key: str) -> bool:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=5):
            return False
    except urllib.error.HTTPError as e:
        return e.code == 401


def test_the_service_workers_cache_is_named_for_the_files_it_holds() -> None:
    """A release that changes a file of the gate's shell must give the cache a new name, or a
    gate keeps the old files: sw.js names it for a digest of them."""
    import hashlib

    gate = ROOT / "web" / "gate"
    sw = (gate / "sw.js").read_text()
    shell_list = re.search(r"const SHELL = \[(.*?)\]", sw, re.S)
    assert shell_list is not None
    digest = hashlib.sha256()
    for rel in re.findall(r'"([^"]+)"', shell_list.group(1)):
        if rel != "./":
            digest.update((gate / rel).resolve().read_bytes())
    expected = f'const CACHE = "tickets-gate-{digest.hexdigest()[:12]}";'
    assert expected in sw, f"web/gate/sw.js must say: {expected}"

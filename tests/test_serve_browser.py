"""The instrument page in a real headless browser: Debian's chromium driven by Playwright.

The server runs for real (uvicorn on a free localhost port); the test drags the puck, plays a
computer key and a (simulated) MIDI keyboard with the sustain pedal, and checks what the page
requested and decoded. A screenshot goes to ``out/serve_page.png`` for humans to look at.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import timbre
from timbre.serve import Instrument, create_app

CHROMIUM = Path("/usr/bin/chromium")
# Debian's browser, never a downloaded one; no sandbox (tests may run as root), no network chatter.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOT = Path(__file__).resolve().parents[1] / "out" / "serve_page.png"
# Headless chromium offers no Web MIDI: a stand-in input the test plays through the page's own handler.
FAKE_MIDI = """
(() => {
  const input = { name: "test keyboard", onmidimessage: null };
  window.fakeMidi = { send: (bytes) => input.onmidimessage({ data: Uint8Array.from(bytes) }) };
  navigator.requestMIDIAccess = async () => ({ inputs: new Map([["test", input]]), onstatechange: null });
})();
"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing (Debian package chromium, installed by `make install`)"
    ),
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """Base URL of the instrument served by uvicorn from a thread."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY, as timbre serve
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    app = create_app(Instrument(timbre.load()), allowed_hosts=["127.0.0.1"])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_page_plays_notes_from_the_pad_the_keyboard_and_midi(server: str) -> None:
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 820})
            page.on("request", lambda request: requested.append(request.url))
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.add_init_script(FAKE_MIDI)
            page.goto(server + "/")
            page.wait_for_function("() => window.timbreState && window.timbreState.ready", timeout=30_000)
            corners = page.evaluate("() => window.timbreState.corners")
            assert [page.input_value(f"select[data-corner='{i}']") for i in range(4)] == corners
            assert page.evaluate("() => window.timbreState.midi") == "test keyboard"

            # Drag the puck from the centre towards the top-right corner.
            pad = page.locator("#pad").bounding_box()
            puck = page.locator("#puck").bounding_box()
            page.mouse.move(puck["x"] + puck["width"] / 2, puck["y"] + puck["height"] / 2)
            page.mouse.down()
            page.mouse.move(pad["x"] + 0.8 * pad["width"], pad["y"] + 0.2 * pad["height"], steps=8)
            page.mouse.up()
            position = page.evaluate("() => window.timbreState.position")
            assert position["x"] == pytest.approx(0.8, abs=0.01) and position["y"] == pytest.approx(0.2, abs=0.01)

            # Computer key A is middle C in octave 4.
            with page.expect_response(lambda response: response.url.endswith("/api/v1/note")) as note:
                page.keyboard.down("a")
            assert note.value.status == 200 and note.value.headers["content-type"] == "audio/wav"
            page.wait_for_function("() => window.timbreState.decoded.length >= 1", timeout=30_000)
            page.keyboard.up("a")
            state = page.evaluate("() => window.timbreState")
            request = state["requests"][0]
            assert (request["pitch"], request["x"], request["y"], request["corners"]) == (60, 0.8, 0.2, corners)
            decoded = state["decoded"][0]
            seconds = request["seconds"]
            assert (decoded["pitch"], decoded["sampleRate"], decoded["channels"]) == (60, 16000, 1)
            assert decoded["length"] == round(seconds * 16000), "the AudioBuffer does not hold the whole note"
            page.wait_for_function("() => window.timbreState.played.length >= 1", timeout=10_000)

            # The same key at the same place comes from the client cache: no second request.
            page.keyboard.press("a")
            page.wait_for_function("() => window.timbreState.played.length >= 2", timeout=10_000)
            assert len(page.evaluate("() => window.timbreState.requests")) == 1

            # X moves the computer keys an octave up; the on-screen keys follow and play on click.
            page.keyboard.press("x")
            page.keyboard.press("a")
            page.wait_for_function("() => window.timbreState.decoded.length >= 2", timeout=30_000)
            page.locator(".key[data-pitch='76']").click()
            page.wait_for_function("() => window.timbreState.decoded.length >= 3", timeout=30_000)
            assert [request["pitch"] for request in page.evaluate("() => window.timbreState.requests")] == [60, 72, 76]

            # MIDI: note on (velocity 90), the sustain pedal holds it past note off, pedal up releases it.
            page.select_option("#seconds", "4")
            page.evaluate("() => window.fakeMidi.send([0x90, 67, 90])")
            assert page.evaluate("() => window.timbreState.voices") == 1
            page.wait_for_function("() => window.timbreState.decoded.length >= 4", timeout=30_000)
            page.evaluate("() => { window.fakeMidi.send([0xB0, 64, 127]); window.fakeMidi.send([0x80, 67, 0]); }")
            assert page.evaluate("() => window.timbreState.voices") == 1
            assert page.inner_text("#sustain") == "on"
            page.evaluate("() => window.fakeMidi.send([0xB0, 64, 0])")
            assert page.evaluate("() => window.timbreState.voices") == 0
            state = page.evaluate("() => window.timbreState")
            assert state["decoded"][3]["pitch"] == 67 and state["decoded"][3]["length"] == 4 * 16000
            sources = ["computer", "computer", "computer", "screen", "midi"]
            assert [played["source"] for played in state["played"]] == sources
            assert all(played["latencyMs"] > 0 for played in state["played"])
            assert "ms key → sound" in page.inner_text("#latency")
            # The rainbowgram of the last note was drawn (some pixels are not black).
            lit = page.evaluate(
                "(() => { const c = document.getElementById('rainbowgram');"
                " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " let n = 0; for (let i = 0; i < d.length; i += 4) n += (d[i] + d[i+1] + d[i+2]) > 30;"
                " return n / (d.length / 4); })()"
            )
            assert lit > 0.02, f"rainbowgram nearly black ({lit:.3f} of pixels lit)"

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            assert state["errors"] == [] and problems == []
        finally:
            browser.close()
    assert requested and all(url.startswith(server + "/") for url in requested), requested

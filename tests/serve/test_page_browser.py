"""The search page in a real browser: headless Chromium (the system's: Debian's ``chromium``
package) driven by Playwright, against the real server (uvicorn on a free loopback port).

Skips with one line where Playwright or Chromium is missing (``apt-get install -y chromium``;
never ``playwright install``: no browser download)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jemc_infer.serve.library import Library

# Debian's real binary first: its /usr/bin/chromium wrapper script misbehaves under sh
CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium() -> str | None:
    found = [os.environ.get("JEMC_CHROMIUM"), *CANDIDATES, shutil.which("chromium"), shutil.which("chromium-browser")]
    return next((p for p in found if p and os.access(p, os.X_OK)), None)


pytestmark = pytest.mark.skipif(chromium() is None, reason="no Chromium found (apt-get install -y chromium, or set JEMC_CHROMIUM)")
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install 'jemc-infer[dev]')")


@pytest.fixture()
def server(served_index: Path, runtime_bundle: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The real server (uvicorn, in a thread) on a free port; its address."""
    import uvicorn

    from jemc_infer.serve.app import create_app

    library = Library(served_index, runtime_bundle)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(library), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if srv.started:
                break
            thread.join(0.05)
        assert srv.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
        library.close()


def first_hit(base: str, text: str) -> dict:
    import json
    import urllib.request

    req = urllib.request.Request(f"{base}/search", data=json.dumps({"text": text, "k": 12}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["results"][0]["hits"][0]


def search_and_play(base: str, text: str, keyboard: bool) -> tuple[dict, dict]:
    """Type ``text``, wait for the results; play the first (click, or Tab + Enter). What the page showed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-background-networking",
                                                                      "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page()
            page.goto(base + "/")
            page.fill("#q", text)
            page.press("#q", "Enter")
            page.wait_for_selector("#results .hit img")
            first = page.locator("#results .hit").first
            page.wait_for_function("() => { const i = document.querySelector('#results .hit img'); return i.complete && i.naturalWidth > 0 }",
                                   timeout=20_000)
            shown = first.evaluate("b => ({id: Number(b.dataset.id), text: b.innerText, img: b.querySelector('img').naturalWidth,"
                                   " src: b.querySelector('img').getAttribute('src')})")
            # the time of the first seek the page makes, recorded by the test (the video then plays on)
            page.evaluate("() => { window.seeks = []; document.querySelector('#player')"
                          ".addEventListener('seeked', e => window.seeks.push(e.target.currentTime)); }")
            if keyboard:
                first.focus()
                page.keyboard.press("Enter")
            else:
                first.click()
            page.wait_for_function("() => window.seeks.length > 0", timeout=20_000)
            played = page.evaluate("() => { const v = document.querySelector('#player');"
                                   " return {seek: window.seeks[0], src: v.currentSrc, error: v.error && v.error.code, id: v.dataset.id}; }")
            return shown, played
        finally:
            browser.close()


def _starts(expected: dict) -> float:
    assert expected["moment"] is not None  # the index keeps moments (new indexes do)
    return float(expected["moment"]["start"])


def test_search_click_plays_the_hits_moment(server: str) -> None:
    expected = first_hit(server, "a man is cooking")
    start = _starts(expected)
    shown, played = search_and_play(server, "a man is cooking", keyboard=False)
    assert shown["id"] == expected["id"] and expected["path"] in shown["text"] and f"{expected['score']:.3f}" in shown["text"]
    assert shown["img"] > 0 and shown["src"] == f"/videos/{expected['id']}/thumbnail?t={start:g}"
    assert played["error"] is None and played["src"].endswith(f"/videos/{expected['id']}/file")
    assert abs(played["seek"] - start) <= 0.1, (played, start)


def test_enter_plays_the_hits_moment(server: str) -> None:
    expected = first_hit(server, "a dog is running")
    start = _starts(expected)
    shown, played = search_and_play(server, "a dog is running", keyboard=True)
    assert shown["id"] == expected["id"] and shown["img"] > 0
    assert shown["src"] == f"/videos/{expected['id']}/thumbnail?t={start:g}"
    assert played["error"] is None and abs(played["seek"] - start) <= 0.1, (played, start)


def test_more_like_this_lists_the_others(server: str) -> None:
    from playwright.sync_api import sync_playwright

    expected = first_hit(server, "a man is cooking")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto(server + "/")
            page.fill("#q", "a man is cooking")
            page.press("#q", "Enter")
            page.wait_for_selector("#results .more")
            page.locator("#results .more").first.click()
            page.wait_for_function("() => document.querySelector('#status').textContent.includes(' like ')", timeout=20_000)
            ids = page.evaluate("() => [...document.querySelectorAll('#results .hit')].map(b => Number(b.dataset.id))")
        finally:
            browser.close()
    assert ids and expected["id"] not in ids

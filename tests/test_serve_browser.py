"""The page of ``keras-svs serve`` in a real headless browser: Debian's ``chromium``,
driven by Selenium through the system's ``chromedriver`` (no driver download). On a server
with a token, the page asks for it once; then it uploads the demo clip, waits for "done",
and checks both players (their sources load: HTTP 200 with the page's token, 401 without;
the clip's duration), solo and mute, the download links (the files they save are the
server's stems), the mask picture, a reload, and an error shown as the API's one line.

Skipped where chromium, its driver or Selenium is missing, except in CI (``CI`` set, as
``.ci/run`` runs it after installing them): there a missing browser fails the test.
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import soundfile as sf

from test_serve_process import Server, wait_for

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo" / "falcon69.flac"
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def browser_paths() -> tuple[str, str]:
    """``(chromium, chromedriver)``; skips (fails in CI) where either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        driver = None
    if chromium and driver:
        return chromium, driver
    message = ("the browser test needs Debian's chromium and chromium-driver (apt-get install "
               "chromium chromium-driver) and selenium (requirements-lock.txt)")
    if IN_CI:
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


#: Checked on import, before any fixture is made.
CHROMIUM, CHROMEDRIVER = browser_paths()


@pytest.fixture
def browser(tmp_path):
    """A headless chromium that saves downloads into ``tmp_path / "downloads"``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1100,1000", "--autoplay-policy="
                     "no-user-gesture-required", "--mute-audio"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(30)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def page_state(driver) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('li.job')].map((card) => ({
            status: card.dataset.status || null,
            text: card.querySelector('.status').textContent,
            players: [...card.querySelectorAll('audio')].map((a) => ({
                stem: a.dataset.stem, url: a.dataset.url, src: a.src,
                duration: a.duration, ready: a.readyState, muted: a.muted})),
            links: [...card.querySelectorAll('a.download')].map((a) => ({
                name: a.download, href: a.href, url: a.dataset.url})),
            plot: (card.querySelector('img.plot') || {}).naturalWidth || 0}));""")


def test_the_page_separates_the_demo_clip_in_a_browser(tmp_path, serve_model, browser):
    from selenium.webdriver.common.by import By

    server = Server(tmp_path / "data", serve_model, plot=True, token="a-token-for-the-page")
    try:
        browser.get(server.url)
        # the page asks for the token once, then keeps it
        login = wait_for(lambda: (lambda f: f if f.is_displayed() else None)(
            browser.find_element(By.ID, "login")), 30, "the page to ask for the token")
        login.find_element(By.NAME, "token").send_keys("a-token-for-the-page")
        login.find_element(By.CSS_SELECTOR, "button").click()
        wait_for(lambda: browser.execute_script(
            "return document.querySelector('select[name=model]').options.length"), 30,
            "the page to load its options")
        browser.find_element(By.ID, "file").send_keys(str(DEMO))
        wait_for(lambda: [c["status"] for c in page_state(browser)] == ["done"], 120,
                 "the job to be done", 0.2)
        wait_for(lambda: all(p["ready"] >= 1 for p in page_state(browser)[0]["players"])
                 and page_state(browser)[0]["plot"] > 0, 30, "the players and the picture")
        [card] = page_state(browser)
        assert card["text"] == "done"
        clip = sf.info(DEMO)
        assert [p["stem"] for p in card["players"]] == ["vocals", "accompaniment"]
        for player in card["players"]:
            assert abs(player["duration"] - clip.duration) < 0.01, player
            statuses = browser.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "const auth = {Authorization: 'Bearer a-token-for-the-page'};"
                "Promise.all([fetch(arguments[0], {headers: auth}), fetch(arguments[0])])"
                ".then((r) => done(r.map((x) => x.status)), (e) => done(String(e)));",
                player["url"])
            assert statuses == [200, 401]  # with the page's token, and without
            response = server.client.get(player["url"])
            assert response.status_code == 200 and response.headers["content-type"] == \
                "audio/wav"

        # solo the vocals: the accompaniment is muted; solo again: both play
        solo = browser.find_elements(By.CSS_SELECTOR, "li.job button.solo")
        solo[0].click()
        assert [p["muted"] for p in page_state(browser)[0]["players"]] == [False, True]
        solo[0].click()
        browser.find_elements(By.CSS_SELECTOR, "li.job button.mute")[0].click()
        assert [p["muted"] for p in page_state(browser)[0]["players"]] == [True, False]

        # the download links save the server's stems under the clip's name
        for link in browser.find_elements(By.CSS_SELECTOR, "li.job a.download"):
            link.click()
        names = {f"falcon69 ({stem}).wav": url for stem, url in
                 zip(("vocals", "accompaniment"), [p["url"] for p in card["players"]])}
        wait_for(lambda: sorted(p.name for p in browser.downloads.iterdir()) == sorted(names),
                 30, "the downloads")
        time.sleep(0.5)  # let the browser close the files
        for name, url in names.items():
            assert (browser.downloads / name).read_bytes() == server.client.get(url).content

        # the job list (and the token) are kept across a reload; an error is the API's line
        browser.refresh()
        wait_for(lambda: [c["status"] for c in page_state(browser)] == ["done"], 30,
                 "the job after a reload")
        not_audio = tmp_path / "notes.wav"
        not_audio.write_text("not audio at all " * 50)
        browser.find_element(By.ID, "file").send_keys(str(not_audio))
        message = wait_for(lambda: browser.find_element(By.ID, "message").text, 30,
                           "the error message")
        assert message.startswith("notes.wav: not an audio file this server reads")
    finally:
        assert server.stop(signal.SIGTERM) == 0

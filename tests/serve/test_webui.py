"""The web page in headless Chromium (Debian's `chromium`, driven by Playwright with no browser
download): it loads, a text is entered, generate is clicked, and the player receives the audio the
API makes for the same request; a mistake shows the project's message, not a traceback.
Screenshots go to the test's tmp dir, or to $UNIMOE_SCREENSHOTS (docs/img/webui-*.png came from there)."""

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from playwright.sync_api import expect, sync_playwright

TIMEOUT_MS = 60_000  # hang guard, not a performance bound
expect.set_options(timeout=TIMEOUT_MS)  # assertions wait as long as actions (a busy machine loads the page slowly)
SPEECH = {"input": "Rice is served.", "seed": 7}  # in the voice the page picks first
# the player's <audio> elements, the waveform's inside its shadow root included
PLAYER_DURATIONS = """() => [...document.querySelectorAll('#result-audio, #result-audio *')]
    .flatMap(e => [...e.querySelectorAll('audio'), ...(e.shadowRoot ? e.shadowRoot.querySelectorAll('audio') : [])])
    .map(a => a.duration).filter(d => d > 0)"""


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    assert chromium, "no chromium: install Debian's `chromium` package (`make install` runs scripts/install-system.sh)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])  # root in a container
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url + "/")
    yield page
    page.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    return Path(os.environ.get("UNIMOE_SCREENSHOTS", tmp_path))


def test_speech_from_the_page_plays_the_audio_the_api_makes(page, server, screenshots):
    text = page.locator("#speech-text textarea")
    expect(text).to_be_visible()
    page.screenshot(path=screenshots / "webui-page.png")
    assert (screenshots / "webui-page.png").stat().st_size > 0

    text.fill(SPEECH["input"])
    page.locator("#sampling").get_by_text("Sampling").click()
    page.locator("#seed textarea, #seed input").fill(str(SPEECH["seed"]))
    page.locator("#speech-generate").click()
    page.wait_for_function(f"({PLAYER_DURATIONS})().length > 0", timeout=TIMEOUT_MS)  # playable: it has a length
    expect(page.locator("#result-spectrogram img")).to_be_visible()
    assert page.locator("#result-spectrogram img").evaluate("img => img.naturalWidth") > 0
    page.screenshot(path=screenshots / "webui-result.png", full_page=True)

    url = page.locator("#result-audio a[download]").get_attribute("href")
    shown, rate = sf.read(io.BytesIO(page.request.get(url).body()), dtype="int16")
    api = server.client.post("/v1/audio/speech", json={"model": "m", **SPEECH, "response_format": "pcm",
                                                         "voice": server.client.get("/v1/voices").json()["voices"][0]})
    assert rate == 16_000 and len(shown) > 0
    assert page.evaluate(PLAYER_DURATIONS)[0] == pytest.approx(len(shown) / rate, abs=0.05)
    assert np.array_equal(shown, np.frombuffer(api.content, dtype="<i2"))  # same request, same seed, same audio
    assert 'unimoe_requests_total{endpoint="page-speech",outcome="ok"} 1.0' in server.client.get("/metrics").text


def test_an_uploaded_voice_prompt_is_checked_like_the_apis(page, tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16_000, dtype=np.float32), 16_000)
    page.get_by_role("tab", name="Voice cloning").click()
    page.locator("#clone-prompt input[type=file]").set_input_files(silent)
    page.locator("#clone-transcript textarea").fill("Glue the sheet.")
    page.locator("#clone-text textarea").fill("Rice is served.")
    page.locator("#clone-generate").click()
    expect(page.get_by_text("the voice prompt is silent").first).to_be_visible()


def test_a_mistake_shows_the_projects_message_not_a_traceback(page, server):
    page.get_by_role("tab", name="Music").click()
    page.locator("#music-generate").click()  # no caption
    expect(page.get_by_text("caption is empty").first).to_be_visible()
    assert "Traceback" not in page.content()
    assert 'unimoe_requests_total{endpoint="page-music",outcome="invalid"} 1.0' in server.client.get("/metrics").text

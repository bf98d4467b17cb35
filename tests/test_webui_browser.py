"""The shared page in headless Chromium, as two people with the same login use it: the first translates a clip and
watches the result; the second, given the first one's video URL, gets 403. Skipped without Chromium or playwright
(.ci/run installs Debian's chromium where it can)."""

import os
import shutil
import socket
from fractions import Fraction

import pytest

from fresco_v2v.testing import moving_square_clip, write_test_video

CHROMIUM = os.environ.get("FRESCO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Headless, and quiet on a machine without a network (no update, sync or first-run requests).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOGIN = ("alice", "a-long-password")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_in(browser, url: str):
    page = browser.new_context().new_page()
    page.goto(url)
    page.locator("input[type=text]").first.fill(LOGIN[0])
    page.locator("input[type=password]").fill(LOGIN[1])
    page.locator("button.primary").first.click()
    page.get_by_role("button", name="Translate", exact=True).wait_for(timeout=60_000)
    return page


def test_a_second_visitor_cannot_fetch_the_first_visitors_video(tmp_path):
    pytest.importorskip("gradio")
    sync_api = pytest.importorskip("playwright.sync_api")
    from fresco_v2v.webui_page import launch

    src = write_test_video(tmp_path / "in.mp4", moving_square_clip(8, 64, 80, 20, (8, 20), (3, 1)), Fraction(25))
    runs = tmp_path / "runs"
    app = launch(port=_free_port(), output_root=runs, auth=LOGIN, public=True, prevent_thread_lock=True)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            first = _log_in(browser, app.local_url)
            first.set_input_files("input[type=file] >> nth=0", str(src))
            first.get_by_label("Prompt").fill("a painting")
            first.get_by_label("Base model").fill("tiny")
            first.get_by_label("Max frames (0: all)").fill("6")
            first.get_by_label("Short side (px)").click()
            first.get_by_role("option", name="128", exact=True).click()
            first.get_by_role("button", name="Translate", exact=True).click()
            first.wait_for_function("document.querySelectorAll('video').length >= 2", timeout=180_000)
            video_url = first.eval_on_selector_all("video", "els => els.map(e => e.src)")[-1]
            (visitor,) = runs.iterdir()
            (run,) = visitor.iterdir()
            assert run.name in video_url and str(runs) not in first.content()  # the page names the run, not its folder
            mine = first.request.get(video_url)
            assert mine.status == 200 and mine.body() == (run / "video.mp4").read_bytes()

            second = _log_in(browser, app.local_url)
            assert second.goto(video_url).status == 403  # the very URL, opened by someone else
            assert second.request.get(video_url).status == 403
            assert second.request.get(f"{app.local_url}gradio_api/file={run / 'video.mp4'}").status == 403
            assert first.request.get(f"{app.local_url}gradio_api/file={run / 'video.mp4'}").status == 403
            browser.close()
    finally:
        app.close()

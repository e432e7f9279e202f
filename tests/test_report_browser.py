"""``labelless report`` in a real browser: Debian's headless Chromium opens the page from a
``file://`` URL; the DOM must have the title, one gallery per class, and every ``<img>`` loaded
with a non-zero natural width. A screenshot is saved (to ``$LABELLESS_SCREENSHOT_DIR`` when set,
else the test's temporary folder).

Needs ``chromium``, ``chromedriver`` (Debian: ``apt-get install chromium chromium-driver``) and
the ``selenium`` package (the ``dev`` extra). Nothing downloads a browser: the binaries are
passed explicitly. Outside CI a missing browser skips the test; in CI (``CI=true``) it fails,
because ``.ci/run`` installs the browser first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from labelless.cli import main

TINY = "openclip:labelless-tiny:random"


def _browser_or_fail():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    problem = None
    try:
        import selenium  # noqa: F401
    except ImportError:
        problem = "the selenium package is not installed (pip install -e '.[dev]')"
    if chromium is None or driver is None:
        problem = "chromium/chromedriver not found (apt-get install chromium chromium-driver)"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test cannot run in CI: {problem}")
        pytest.skip(problem)
    return chromium, driver


@pytest.fixture
def browser(monkeypatch):
    chromium, driver = _browser_or_fail()
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1360,900", "--hide-scrollbars"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def test_report_in_headless_chromium(browser, capsys, tmp_path, colour_folder):
    runs = []
    for name, data, extra in (("labelled", f"imagefolder:root={colour_folder}", []),
                              ("unlabeled", f"folder:root={colour_folder}", ["--classes", "blue,green,red"])):
        rc = main(["zeroshot", "--model", TINY, "--data", data, "--out", str(tmp_path / name),
                   "--no-progress", "--cache-dir", str(tmp_path / "cache"), *extra])
        assert rc == 0, capsys.readouterr().err
        runs.append(str(tmp_path / name))
    rc = main(["report", *runs, "--out", str(tmp_path / "report")])
    assert rc == 0, capsys.readouterr().err
    page = tmp_path / "report" / "report.html"

    browser.get(page.resolve().as_uri())
    assert browser.title == "labelless report: 2 runs on imagefolder"
    galleries = browser.execute_script(
        "return Array.from(document.querySelectorAll('section.gallery')).map(s => s.dataset.class)")
    assert sorted(galleries) == ["blue", "green", "red"]
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")  # any lazy image
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) > 3 * 2  # thumbnails of both runs for 3 classes, and the figures
    not_loaded = [src for src, complete, width in images if not complete or width == 0]
    assert not not_loaded, f"images that did not load: {not_loaded}"

    shots = Path(os.environ.get("LABELLESS_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1360, min(int(height), 8000))
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(shots / "report.png"))
    assert (shots / "report.png").stat().st_size > 10_000

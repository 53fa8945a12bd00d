"""The viewer page in headless Chromium: upload a real record, check what is drawn, save a screenshot.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them when it runs as root
with apt-get) and the real-data sample in ``../shared/data``; skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import ecgmae
from conftest import shared_path
from ecgmae.data.io import read_record
from serve_util import need_serve, running

pytestmark = pytest.mark.slow  # tiny pre-trained and fine-tuned runs, a server and a headless Chromium

need_serve()
pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Root needs --no-sandbox; the rest keeps Chromium from reaching for the network or a GPU.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1500,1250",
    "--force-device-scale-factor=1",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip(
            f"headless Chromium not found ({CHROMIUM}, {DRIVER}): apt-get install chromium chromium-driver "
            "(make test does this as root)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _wait(driver, check, what: str, seconds: float = 120):
    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: check(d), message=what)


def _pixels(driver) -> dict[str, int]:
    """Counts of black (signal), red (reconstruction) and blue (masked span) pixels on the canvas."""
    return driver.execute_script("""
        const cv = document.getElementById('ecg');
        const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
        let black = 0, red = 0, blue = 0;
        for (let i = 0; i < d.length; i += 4) {
          const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
          if (r < 60 && g < 60 && b < 60) black++;
          else if (r > 170 && g < 90 && b < 90) red++;
          else if (b > r + 20 && b > 200 && g > 200) blue++;
        }
        return {black, red, blue};""")


def test_viewer_draws_a_real_record_with_labels_and_reconstruction(browser, runs, tmp_path):
    folder = shared_path("cinc2021-sample")
    hea, mat = folder / "E07500.hea", folder / "E07500.mat"
    clf, mae = ecgmae.load(runs["ft"]), ecgmae.load(runs["mae"])
    with running(clf, mae=mae, examples=folder) as url:
        browser.get(url + "/")
        _wait(browser, lambda d: "classifier run" in d.find_element(By.ID, "model").text, "model card shown")
        assert not browser.find_element(By.ID, "ratio-box").get_attribute("hidden")  # the slider is offered
        browser.find_element(By.ID, "files").send_keys(f"{hea}\n{mat}")
        _wait(
            browser,
            lambda d: d.find_element(By.ID, "ecg").get_attribute("data-reconstruction") == "true",
            "the reconstruction drawn",
        )
        canvas = browser.find_element(By.ID, "ecg")
        assert canvas.get_attribute("data-panels") == "12" and canvas.get_attribute("data-rhythm") == "II"
        drawn = browser.execute_script("return window.ecgmaeViewer.drawn")
        assert drawn["record"] == "E07500" and drawn["reconstruction"] and drawn["redPoints"] > 100
        leads = [p["lead"] for p in drawn["panels"]]
        assert sorted(leads[:12]) == sorted(clf.leads) and leads[12] == "II"  # 3 x 4 + rhythm strip
        px = _pixels(browser)
        assert px["black"] > 2000 and px["red"] > 200 and px["blue"] > 2000, px
        # label probabilities: every label, the server's numbers, highest first
        items = browser.find_elements(By.CSS_SELECTOR, "#labels li")
        shown = {li.get_attribute("data-label"): float(li.get_attribute("data-prob")) for li in items}
        expect = dict(zip(clf.label_names, clf.predict_proba(read_record(hea)), strict=True))
        assert shown.keys() == expect.keys()
        np.testing.assert_allclose([shown[k] for k in expect], list(expect.values()), rtol=0, atol=1e-12)
        assert [float(li.get_attribute("data-prob")) for li in items] == sorted(shown.values(), reverse=True)
        assert "75% of patches masked" in browser.find_element(By.ID, "caption").text
        browser.save_screenshot(str(tmp_path / "viewer.png"))
        if os.environ.get("ECGMAE_VIEWER_SCREENSHOT"):  # how docs/viewer.png is made
            browser.save_screenshot(os.environ["ECGMAE_VIEWER_SCREENSHOT"])
        assert (tmp_path / "viewer.png").stat().st_size > 10_000

        # the slider asks for another reconstruction
        before = drawn["redPoints"]
        browser.execute_script(
            "const s = document.getElementById('mask-ratio'); s.value = '0.3';"
            "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));"
        )
        _wait(browser, lambda d: "30% of patches masked" in d.find_element(By.ID, "caption").text, "mask ratio 30%")
        assert browser.find_element(By.ID, "mask-ratio-value").text == "30%"
        assert browser.execute_script("return window.ecgmaeViewer.drawn.redPoints") < before

        # an example from the server's folder
        browser.execute_script(
            "const s = document.getElementById('examples'); s.value = 'E07501';s.dispatchEvent(new Event('change'));"
        )
        _wait(browser, lambda d: d.execute_script("return window.ecgmaeViewer.drawn.record") == "E07501", "example")

        # a header without its signal file: the server's one-line error, shown on the page
        browser.find_element(By.ID, "files").clear()
        browser.find_element(By.ID, "files").send_keys(str(hea))
        _wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed(), "the error shown")
        assert browser.find_element(By.ID, "error").text == "E07500.hea: data file E07500.mat not found"


def test_viewer_of_a_classifier_alone_draws_the_record_as_uploaded(browser, runs, tmp_path):
    folder = shared_path("cinc2021-sample")
    clf = ecgmae.load(runs["ft"])
    with running(clf) as url:
        browser.get(url + "/")
        _wait(browser, lambda d: "classifier run" in d.find_element(By.ID, "model").text, "model card shown")
        assert browser.find_element(By.ID, "ratio-box").get_attribute("hidden")  # nothing to reconstruct
        browser.find_element(By.ID, "files").send_keys(f"{folder / 'JS20000.hea'}\n{folder / 'JS20000.mat'}")
        _wait(browser, lambda d: d.find_element(By.ID, "ecg").get_attribute("data-panels") == "12", "12 panels")
        canvas = browser.find_element(By.ID, "ecg")
        assert canvas.get_attribute("data-reconstruction") == "false" and canvas.get_attribute("data-rhythm") == "II"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#labels li")) == len(clf.label_names)
        assert "500 Hz" in browser.find_element(By.ID, "caption").text  # the record's own rate: as uploaded
        px = _pixels(browser)
        assert px["black"] > 2000 and px["red"] == 0, px

        # an .npy upload: the rate and lead fields appear and go with it
        rec = read_record(folder / "JS20001.hea")
        np.save(tmp_path / "six_leads.npy", rec.signal[:6])
        browser.find_element(By.ID, "files").clear()
        browser.execute_script(f"document.getElementById('leads').value = '{','.join(rec.leads[:6])}'")
        browser.find_element(By.ID, "files").send_keys(str(tmp_path / "six_leads.npy"))
        _wait(browser, lambda d: d.execute_script("return window.ecgmaeViewer.drawn.record") == "six_leads", ".npy")
        assert browser.find_element(By.ID, "npy-fields").is_displayed()
        drawn = browser.execute_script("return window.ecgmaeViewer.drawn")
        assert sorted(p["lead"] for p in drawn["panels"]) == sorted([*rec.leads[:6], "II"])  # V1-V6: "absent"
        shown = {
            li.get_attribute("data-label"): float(li.get_attribute("data-prob"))
            for li in browser.find_elements(By.CSS_SELECTOR, "#labels li")
        }
        expect = clf.predict_proba(rec.signal[:6], fs=500, leads=rec.leads[:6])
        np.testing.assert_allclose([shown[k] for k in clf.label_names], expect, rtol=0, atol=1e-12)

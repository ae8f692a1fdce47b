"""A headless Chromium for the browser tests: Debian's chromium + chromedriver (installed
with apt-get when missing), driven by selenium.

    from tests.support.browser import browser  # noqa: F401  (the fixture)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HEADLESS_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,2200",
)


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver when missing. A machine that cannot
    fails the test with what to do (as Azurite's harness does): a browser test that
    skips would pass a CI run that never looked at the page."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    if shutil.which("apt-get") is None:
        pytest.fail(f"the browser tests need {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install chromium "
                    "chromium-driver); they are missing and apt-get is not available")  # fmt: skip
    install = ["apt-get", "install", "-y", "chromium", "chromium-driver"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        done = subprocess.run(install, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"cannot install the browser tests' Chromium: `{' '.join(install)}` failed "
                        f"({done.returncode}): {done.stderr.strip()[-500:]}")  # fmt: skip


@pytest.fixture
def browser(tmp_path):
    """A fresh headless Chromium (its own profile under the test's tmp path), quit after the test."""
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in HEADLESS_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()

#!/usr/bin/env python3
"""Opens a report page (`sae report`'s index.html) in headless Chromium and checks it as
a reader would see it: the page loads from disk with no network, logs no console errors,
and every image on it loads. Saves a screenshot of the whole page.

usage: report_check.py INDEX_HTML SCREENSHOT_PNG
Needs chromium, chromedriver (Debian: chromium chromium-driver) and selenium (pip).
"""
import pathlib
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-2])
    page = pathlib.Path(sys.argv[1]).resolve()
    shot = pathlib.Path(sys.argv[2])
    if not page.is_file():
        sys.exit(f"{page}: no such report page")
    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(flag)
    opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    problems = []
    try:
        driver.get(page.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i =>"
            " [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]);")
        if not images:
            problems.append("the page shows no images")
        for src, complete, w, h in images:
            if not (complete and w > 0 and h > 0):
                problems.append(f"image {src} did not load")
        for entry in driver.get_log("browser"):
            if entry["level"] == "SEVERE":
                problems.append(f"console {entry['level']}: {entry['message']}")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(max(height, 900), 16000))
        driver.save_screenshot(str(shot))
        title = driver.title
    finally:
        driver.quit()
    if problems:
        sys.exit(f"{page}:\n  " + "\n  ".join(problems))
    print(f"{page}: '{title}', {len(images)} images loaded, no console errors; "
          f"screenshot {shot}")


if __name__ == "__main__":
    main()

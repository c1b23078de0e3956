"""The playground page at ``/`` in a real browser: headless Chromium (Debian's chromium and
chromium-driver, which .ci/run installs) loads it from a loopback server with an API key,
ranks five documents, and the test reads the ranked list off the page.

Set ``CROSSRANK_PLAYGROUND_SCREENSHOT=docs/playground.png`` to refresh the screenshot in
the docs; otherwise it is written to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import running

KEY = "playground-key-123"
QUERY = "how do vaccines train the immune system?"
DOCUMENTS = [
    "The 2014 World Cup final was played in the Maracana stadium in Rio de Janeiro.",
    "Vaccines expose the immune system to a harmless piece of a pathogen, so that it learns "
    "to make antibodies against it.",
    "Sourdough bread is leavened with wild yeast and lactic acid bacteria.",
    "Memory B cells formed after vaccination respond quickly when the real pathogen appears.",
    "The Amazon river carries more water than any other river on Earth.",
]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    for program in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(program), (
            f"{program} is missing: apt-get install -y chromium chromium-driver (.ci/run does)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1100,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_ranks_five_documents_as_reranker_rerank(
    browser, bundled_reranker, reranker, tmp_path
):
    with running({"crossrank-default": bundled_reranker, "tiny": reranker}, api_key=KEY) as url:
        page = httpx.get(f"{url}/")  # the page itself needs no key; the API does
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "://" not in page.text  # no CDN, nothing remote: it works offline

        browser.get(f"{url}/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: "API key" in b.find_element(By.ID, "error").text)
        browser.find_element(By.ID, "api-key").send_keys(KEY, Keys.TAB)  # change: models load
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#model option")) == 2)
        query = browser.find_element(By.ID, "query")
        query.clear()
        query.send_keys(QUERY)
        documents = browser.find_element(By.ID, "documents")
        documents.clear()
        documents.send_keys("\n".join(DOCUMENTS))
        browser.find_element(By.ID, "rank").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#results li")) == 5)

        items = browser.find_elements(By.CSS_SELECTOR, "#results li")
        shown = [
            (
                int(li.get_attribute("data-index")),
                float(li.find_element(By.CLASS_NAME, "score").text),
            )
            for li in items
        ]
        want = bundled_reranker.rerank(QUERY, DOCUMENTS)
        assert [i for i, _ in shown] == [r.index for r in want]
        assert [s for _, s in shown] == pytest.approx([r.relevance_score for r in want], abs=1e-4)
        assert DOCUMENTS[want[0].index] in items[0].text
        tokens = sum(len(f) for f in bundled_reranker.encoder.encode(QUERY, DOCUMENTS))
        assert browser.find_element(By.ID, "tokens").text == str(tokens)
        assert int(browser.find_element(By.ID, "latency").text) >= 0
        assert browser.find_element(By.ID, "error").text == ""

        target = Path(os.environ.get("CROSSRANK_PLAYGROUND_SCREENSHOT") or tmp_path / "page.png")
        assert browser.save_screenshot(str(target))
        assert target.stat().st_size > 10_000

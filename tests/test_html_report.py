"""`snakemake --report` shows the study's tables and figures, checked in a real (headless) Chromium."""

import shutil
import subprocess
import sys

import pytest
import yaml

from .conftest import REPO, tiny_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: flags that keep a headless Chromium off the network of a sandbox without internet
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]


def test_html_report_shows_the_tables_and_figures(tmp_path):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package drives Chromium")
    cfg = tiny_config(tmp_path, {"vae": {"class": "vae", "label": "Tiny VAE", "params": {"latents": 4, "hidden": [16]}}},
                      epochs=1)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    snakemake = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                 str(tmp_path), "--configfile", str(tmp_path / "study.yaml")]
    for args in (["--cores", "2"], ["--report", str(tmp_path / "report.html")]):
        done = subprocess.run([*snakemake, *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto((tmp_path / "report.html").as_uri())
            for category in ("Tables", "Figures", "Aggregated results"):  # every kind of output is registered
                assert page.get_by_text(category, exact=True).count() == 1, category
            page.get_by_text("Figures", exact=True).click()
            assert page.get_by_text("tiny_nll_per_model.png").count() >= 1
            page.goto((tmp_path / "report.html").as_uri())  # back to the start page
            page.get_by_text("Tables", exact=True).click()
            page.locator("tr", has_text="tables.html").locator("a[iconname=eye]").click()
            page.wait_for_timeout(1000)
            (tables,) = [frame for frame in page.frames if frame.url.startswith("data:")]
            shown = tables.inner_text("body")
            assert "Table 1: MLP layers" in shown and "Tiny VAE" in shown and "Test NLL" in shown
            _assert_figures_shown(tables, n=2)  # the NLL and Table 1's training curves
            page.goto((tmp_path / "reports" / "tables.html").as_uri())  # the page as rendered, opened alone
            _assert_figures_shown(page, n=2)
            page.screenshot(path=str(tmp_path / "report.png"))
        finally:
            browser.close()
    assert (tmp_path / "report.png").stat().st_size > 50_000  # a rendered page, not a blank one


def _assert_figures_shown(frame, n: int) -> None:
    """``n`` images, every one loaded (a broken one has no natural width and shows its alt text), each alone in its
    paragraph: a caption glued to an image (a Markdown list item whose continuation lost its indentation) shares it."""
    images = frame.eval_on_selector_all("img", """els => els.map(e => ({
        loaded: e.complete && e.naturalWidth > 0, alt: e.alt, beside: e.parentElement.textContent.trim()}))""")
    assert len(images) == n, images
    assert all(image["loaded"] for image in images), [image["alt"] for image in images if not image["loaded"]]
    assert all(image["beside"] == "" for image in images), [image["beside"] for image in images]

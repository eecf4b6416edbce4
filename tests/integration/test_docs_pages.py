"""The docs pages render in a real headless Chromium, with no network but loopback.

``make browser`` installs Debian's chromium (``.ci/run`` does); without it
these tests are skipped. The assets come from app/static/docs
(``make docs-assets``), so a page that renders proves nothing is fetched
from a CDN.
"""

import shutil
import subprocess

import pytest
import requests

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",
]
SUMMARY = "Predict one output per instance, in one vectorised call"

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (make browser)"
)


def chromium(tmp_path, *arguments) -> str:
    profile = tmp_path / "profile"
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    return result.stdout


@needs_chromium
def test_redoc_renders_the_predict_operation(server, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", f"{server.url}/redoc")
    assert SUMMARY in dom and "/predict" in dom


@needs_chromium
def test_swagger_ui_renders_the_predict_operation(server, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", f"{server.url}/swagger-ui")
    assert 'data-path="/predict"' in dom and SUMMARY in dom


def test_the_docs_assets_are_served_by_the_app(server):
    for path in ("redoc/redoc.standalone.js", "swagger-ui/swagger-ui-bundle.js"):
        response = requests.get(f"{server.url}/static/docs/{path}", timeout=5)
        assert response.status_code == 200 and len(response.content) > 100_000

"""The report as a browser shows it: headless Chromium opens index.html from disk, the page's own
check script confirms every figure loaded and the summary table is visible; a screenshot is taken."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from report.build import write_report
from report.frame import read_runs

FIXTURE = Path(__file__).parent / "fixtures" / "runs.json.gz"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((p for p in (shutil.which(c) for c in CANDIDATES) if p), None)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="headless Chromium not installed here (apt-get install -y chromium); CI installs it"
    ),
]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser-report")
    path, _ = write_report(read_runs(FIXTURE), out, source="fixture")
    return path


def test_every_image_loads_and_the_summary_is_visible(index, tmp_path):
    dom = chromium(tmp_path, "--virtual-time-budget=15000", "--dump-dom", index.as_uri()).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, f"no DOM came back from Chromium: {dom[:500]!r}"
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(0)))
    assert attrs.get("summary-visible") == "yes", attrs
    assert attrs.get("images-broken") == "0", attrs
    assert int(attrs.get("images-total", 0)) >= 15, attrs
    assert attrs.get("check") == "ok", attrs


def test_screenshot_is_a_rendered_page(index, tmp_path):
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--virtual-time-budget=15000", index.as_uri())
    assert shot.exists() and shot.stat().st_size > 50_000
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        colours = im.convert("RGB").resize((320, 500)).getcolors(maxcolors=1_000_000)
        assert len(colours) > 50  # text, table shading and coloured badges, not a blank page

"""The report as a browser shows it, with two results sources side by side (a bundle and local runs): headless
Chromium opens index.html from disk; the page's own check script confirms every figure loaded, the summary table
is visible and every claim's tab bar shows exactly one source; a link opens a chosen source's tab; a screenshot is
taken and is a rendered page."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.study.bundles import write_bundle
from report import studies
from report.build import write_report
from report.bundle import make_bundle
from report.frame import read_extras, read_runs
from report.sources import Source, from_bundle

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


def page_checks(tmp_path: Path, url: str) -> dict[str, str]:
    dom = chromium(tmp_path, "--virtual-time-budget=15000", "--dump-dom", url).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, f"no DOM came back from Chromium: {dom[:500]!r}"
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(0)))


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """The fixture as a shipped bundle ("reference") beside some of the same runs, one seed each, as "your runs"."""
    out = tmp_path_factory.mktemp("browser-report")
    runs = read_runs(FIXTURE)
    bundle = write_bundle(
        make_bundle(runs, read_extras(FIXTURE.with_name("extras.json.gz")), studies.shipped(), "reference"), out / "ref.json.gz"
    )
    mine = Source(
        "your runs", "sqlite:///mlflow.db", runs[(runs["seed"] == 0) & runs["study"].isin(["init", "activation", "optimizer"])]
    )
    path, _ = write_report([from_bundle(bundle), mine], out / "report")
    return path


def test_every_image_loads_the_summary_is_visible_and_each_tab_bar_shows_one_source(index, tmp_path):
    attrs = page_checks(tmp_path, index.as_uri())
    assert attrs.get("summary-visible") == "yes", attrs
    assert attrs.get("images-broken") == "0", attrs
    assert int(attrs.get("images-total", 0)) >= 30, attrs  # each source draws its own figures
    assert int(attrs.get("tab-bars", 0)) >= 8 and attrs.get("tabs-ok") == "yes", attrs  # the claims both sources cover
    assert "tab-claim-xavier-vs-he-0" in attrs.get("open-tabs", "").split(), attrs  # the larger sample is the headline
    assert attrs.get("check") == "ok", attrs
    html = index.read_text()
    summary = html[html.index('id="summary"') : html.index("</table>", html.index('id="summary"'))]
    assert "<th>reference · smoke · CPU</th>" in summary and "<th>your runs · smoke · CPU</th>" in summary


def test_a_link_opens_the_chosen_sources_tab(index, tmp_path):
    attrs = page_checks(tmp_path, index.as_uri() + "#tab-claim-xavier-vs-he-1")
    opened = attrs.get("open-tabs", "").split()
    assert "tab-claim-xavier-vs-he-1" in opened and "tab-claim-xavier-vs-he-0" not in opened, attrs
    assert attrs.get("tabs-ok") == "yes", attrs


def test_screenshot_is_a_rendered_page(index, tmp_path):
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--virtual-time-budget=15000", index.as_uri())
    assert shot.exists() and shot.stat().st_size > 50_000
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        colours = im.convert("RGB").resize((320, 500)).getcolors(maxcolors=1_000_000)
        assert len(colours) > 50  # text, table shading and coloured badges, not a blank page

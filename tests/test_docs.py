"""The docs path that works offline (Quarto cannot be installed here): nbdev_proc_nbs, then every processed
notebook converts to HTML with nbconvert, and headless Chromium renders the index page with its title and a plot."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars"]


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    proc = out / "_proc"
    subprocess.run([str(BIN / "nbdev_proc_nbs")], cwd=ROOT, check=True, capture_output=True, timeout=600)
    shutil.copytree(ROOT / "_proc", proc)
    nbs = sorted(proc.rglob("*.ipynb"))
    assert len(nbs) >= 10, [p.name for p in nbs]
    p = subprocess.run([str(BIN / "jupyter"), "nbconvert", "--to", "html", "--output-dir", str(out / "html"),
                        *map(str, nbs)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return out / "html"


def test_every_notebook_converts(html_dir):
    src = {p.stem for p in (ROOT / "nbs").glob("*.ipynb")}
    got = {p.stem for p in html_dir.glob("*.html")}
    assert src <= got, src - got
    for p in html_dir.glob("*.html"):
        text = p.read_text()
        assert "<h1" in text, f"{p.name}: no title"
        assert "Traceback (most recent call last)" not in text, f"{p.name}: a stored error output"


@pytest.mark.skipif(not _chromium(), reason="Chromium is not installed (CI installs Debian's chromium package)")
def test_index_renders_title_and_plot(html_dir, tmp_path):
    from PIL import Image

    index = html_dir / "index.html"
    html = index.read_text()
    assert re.search(r"<h1[^>]*>\s*loss_lin_slope", html), "index has no title"
    assert "data:image/png;base64," in html, "index has no embedded plot"
    shot = tmp_path / "index.png"
    env = {**os.environ, "HOME": str(tmp_path)}
    common = [_chromium(), *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400"]
    dom = subprocess.run([*common, "--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=120,
                         env=env)
    assert "loss_lin_slope" in dom.stdout and "<img" in dom.stdout, dom.stderr[-2000:]
    subprocess.run([*common, f"--screenshot={shot}", index.as_uri()], capture_output=True, timeout=120, env=env)
    img = Image.open(shot).convert("L")
    w, h = img.size
    hist = img.histogram()
    dark = sum(hist[:200]) / (w * h)  # text and plot lines
    assert dark > 0.01, f"the screenshot is (nearly) blank: {dark:.4f} of pixels are dark"
    shutil.copy(shot, ROOT / "_proc" / "index-screenshot.png")  # kept for a person to look at

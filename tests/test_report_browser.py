"""The HTML report as a researcher sees it on a laptop: loaded in headless Chromium at a 1280 × 900 px window, nothing
scrolls sideways (`document.documentElement.scrollWidth <= window.innerWidth`), the answer (pilot gate, H1, H2) is on
the first screen, numbers are right-aligned and text left-aligned, and every figure loads.

The report comes from a synthetic sweep with faults, runs that never learned and long run ids (no training); Chromium
(Debian's `chromium` package, installed by CI) runs as in `test_docs.py`."""
import json
import re
import shutil
import subprocess
from html import unescape

import pytest

from loss_lin_slope.report import write_report
from loss_lin_slope.testing import make_synthetic_sweep

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
W, H = 1280, 900

_PROBE = r"""<script>
window.addEventListener("load", () => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top + scrollY, r.width, r.height]; };
  const align = sel => [...document.querySelectorAll(sel)].map(e => getComputedStyle(e).textAlign);
  const out = {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
               cards: [...document.querySelectorAll(".card")].map(box),
               wide: [...document.querySelectorAll("table, img, pre, h1, h2, p")]
                       .filter(e => e.getBoundingClientRect().right > window.innerWidth).map(e => e.tagName),
               num: align("td.num"), txt: align("td.txt"),
               imgs: [...document.images].map(i => [i.complete, i.naturalWidth])};
  const pre = document.createElement("pre");
  pre.id = "probe"; pre.style.display = "none"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    sw = make_synthetic_sweep(tmp / "runs", "browser", n_runs=12, epochs=16, steps_per_epoch=40,
                              curvature_every_n_steps=100, chunk_epochs=4,
                              faults={"missing": 1, "nan": 1, "frequency": 1, "diverged": 1},
                              shape={8: "never_learned", 9: "never_learned"})
    path, analysis = write_report(sw.path, tmp / "out", n_boot=200, workers=1)
    return path, analysis


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium); CI "
                                             "installs it")
def test_report_fits_a_laptop_screen(report, tmp_path):
    path, analysis = report
    probed = tmp_path / "probed.html"
    probed.write_text(path.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    shot = tmp_path / "first_screen.png"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--no-first-run", "--disable-extensions", f"--window-size={W},{H}",
                        "--virtual-time-budget=10000", "--dump-dom", f"--screenshot={shot}", probed.as_uri()],
                       capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="probe"[^>]*>(.*?)</pre>', r.stdout, re.S)
    assert m, f"Chromium did not run the page (exit {r.returncode}):\n{r.stderr[-3000:]}"
    info = json.loads(unescape(m.group(1)))
    assert info["scrollWidth"] <= info["innerWidth"], (info["scrollWidth"], info["innerWidth"], info["wide"])
    assert len(info["cards"]) == 3 and all(top + h <= H for _, top, _, h in info["cards"]), info["cards"]
    assert info["num"] and set(info["num"]) == {"right"} and info["txt"] and set(info["txt"]) == {"left"}
    assert info["imgs"] and all(ok and w > 0 for ok, w in info["imgs"])
    assert shot.exists() and shot.stat().st_size > 10_000
    assert "||" not in path.read_text(encoding="utf-8")
    assert [c["condition"] for c in analysis.verdict.conditions] == ["frequencies", "fits", "data"]

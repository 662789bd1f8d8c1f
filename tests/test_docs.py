"""The docs path that works offline (Quarto cannot be installed on the CI machine).

1. `nbdev_proc_nbs` processes every notebook (a copy of nbs/ in a temporary directory, so nothing is written to the
   repository), as `nbdev_docs` does before Quarto renders: front matter, `show_doc` cells for every exported name
   (which executes the notebooks' import and export cells), directives. It must not report an error or warn about
   cells that mix imports with other code.
2. Every processed notebook converts to HTML with `jupyter nbconvert --to html` (not executed: the committed outputs
   are what the docs show).
3. Headless Chromium loads the converted index page: its DOM must carry the site's title (from the index notebook's
   `# Title` front matter) and a loaded PNG plot of a reasonable size, and a screenshot must show them: the
   title's box holds drawn text, the plot's box holds the plot (many colours, close to the PNG itself), the page is
   not blank. `page_problems` is also run on deliberately broken pages (empty, no title, no plot, a broken, blank,
   tiny or different image), which it must reject.

Also here: every public function and class has a `show_doc` entry with its docstring on its reference page, and
`nbs/sidebar.yml` (the site's navigation; `custom_sidebar = True`) lists every notebook, so `nbdev_docs` builds the
complete site wherever Quarto is installed.

Chromium (Debian's `chromium` package) runs with `--headless --no-sandbox --disable-gpu`; without it the
Chromium tests are skipped (CI installs it).
"""
import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, console_script

NBS = ROOT / "nbs"
BIN = Path(sys.executable).parent
CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                                              "chromium); CI installs it")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
WIDTH = 1280


def front_matter_title(nb_path: Path) -> str:
    "The title nbdev puts into the front matter: the first markdown cell's `# Title`."
    for c in json.loads(nb_path.read_text())["cells"]:
        if c["cell_type"] == "markdown":
            m = re.match(r"#\s+(.+)", "".join(c["source"]).strip())
            assert m, f"{nb_path.name}: the first markdown cell is not a `# Title`"
            return m.group(1).strip()
    raise AssertionError(f"{nb_path.name} has no markdown cell")


def front_matter_title_block(nb, resources):
    """nbconvert preprocessor (`--HTMLExporter.preprocessors=test_docs.front_matter_title_block`): the raw YAML
    front-matter cell nbdev writes becomes the title block Quarto would render (an `<h1>` title and the
    description) and the page's `<title>`; plain nbconvert would print the YAML as text and title the page by its
    file name."""
    import nbformat
    import yaml

    if nb.cells and nb.cells[0].cell_type == "raw" and nb.cells[0].source.lstrip().startswith("---"):
        fm = yaml.safe_load(nb.cells[0].source.strip().strip("-")) or {}
        if fm.get("title"):
            nb.metadata["title"] = str(fm["title"])
            md = f"# {fm['title']}" + (f"\n\n> {fm['description']}" if fm.get("description") else "")
            nb.cells[0] = nbformat.v4.new_markdown_cell(md)
    return nb, resources


# --------------------------------------------------------------------------------------------------------------
# 1-2. nbdev_proc_nbs and nbconvert

def build_site(d: Path, nbs: Path = NBS) -> dict:
    "In `d`: process a copy of the docs sources (`nbs`) with nbdev_proc_nbs, convert every result to HTML."
    shutil.copy(ROOT / "settings.ini", d)
    (d / "nbs").mkdir()
    for p in nbs.iterdir():  # the notebooks and the site files (the _quarto.yml symlink is copied as a file)
        if p.is_file() and p.suffix in (".ipynb", ".yml", ".css"):
            shutil.copy(p, d / "nbs" / p.name)
    env = dict(ENV)
    if not shutil.which("quarto", path=env["PATH"]):  # else nbdev_proc_nbs tries to install it (sudo, pip install -e)
        stub = d / "stub-bin"
        stub.mkdir()
        (stub / "quarto").write_text('#!/bin/sh\necho "quarto is not installed (test stub)" >&2\nexit 1\n')
        (stub / "quarto").chmod(0o755)
        env["PATH"] = f"{stub}{os.pathsep}{env['PATH']}"
    r = subprocess.run([console_script("nbdev_proc_nbs"), "--n_workers", "2"], cwd=d, env=env, capture_output=True,
                       text=True, timeout=600)
    proc_log = r.stdout + r.stderr
    assert r.returncode == 0, f"nbdev_proc_nbs exited {r.returncode}:\n{proc_log[-6000:]}"
    proc = d / "_proc"
    out = d / "html"
    nbs = sorted(proc.glob("*.ipynb"))
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), ENV.get("PYTHONPATH", "")])}
    r = subprocess.run([console_script("jupyter"), "nbconvert", "--to", "html", "--output-dir", str(out),
                        "--HTMLExporter.preprocessors=test_docs.front_matter_title_block", *map(str, nbs)],
                       cwd=d, env=env, capture_output=True, text=True, timeout=600)
    return {"dir": d, "proc": proc, "html": out, "proc_log": proc_log, "nbconvert": r}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    return build_site(tmp_path_factory.mktemp("docs"))


def test_proc_nbs_processes_every_notebook_without_errors(site):
    log = site["proc_log"]
    for bad in ("Traceback", "Error in notebook", "Exception", "Found cells containing imports and other code"):
        assert bad not in log, f"nbdev_proc_nbs reported {bad!r}:\n{log[-6000:]}"
    sources = sorted(p.name for p in NBS.glob("*.ipynb"))
    processed = sorted(p.name for p in site["proc"].glob("*.ipynb"))
    assert processed == sources, (processed, sources)
    qy = site["proc"] / "_quarto.yml"
    assert qy.exists() and "sidebar" in (site["proc"] / "sidebar.yml").read_text()
    for p in site["proc"].glob("*.ipynb"):  # nbdev turned `# Title` + `> description` into front matter
        nb = json.loads(p.read_text())
        first = nb["cells"][0]
        assert first["cell_type"] == "raw" and "title:" in "".join(first["source"]), p.name
    ref = json.loads((site["proc"] / "03_slopes.ipynb").read_text())  # show_doc output for exported names
    assert any("show_doc(loglog_fit)" in "".join(c["source"]) for c in ref["cells"] if c["cell_type"] == "code")


def _plain_md(text: str) -> str:
    "Markdown without links (nbdev turns backticked names into links), backticks and extra whitespace."
    return " ".join(re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).replace("`", "").split())


def test_public_api_is_on_its_reference_page(site):
    "Every public function and class has a `show_doc` entry with its docstring on its notebook's page."
    import test_api_docs as api

    cells, missing = {}, []
    for mod, name, obj in api.public_api():
        nb = api.notebook_of(mod)
        if nb not in cells:
            cells[nb] = json.loads((site["proc"] / nb).read_text())["cells"]
        doc = _plain_md((obj.__doc__ or "").strip().split("\n\n")[0])[:60]
        for c in cells[nb]:
            if c["cell_type"] == "code" and re.search(rf"^show_doc\({re.escape(name)}\)\s*$", "".join(c["source"]),
                                                      re.M):
                md = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in c.get("outputs", []))
                if f"### {name}" in md and doc in _plain_md(md):
                    break
        else:
            missing.append(f"{nb}: {name}")
    assert not missing, "no show_doc entry with the docstring for:\n" + "\n".join(missing)


def test_every_processed_notebook_converts_to_html(site):
    r = site["nbconvert"]
    assert r.returncode == 0, f"nbconvert exited {r.returncode}:\n{r.stderr[-6000:]}"
    # nbdev marks the show_doc cells it adds with a `has_sd` key, which nbformat's schema does not know: nbconvert
    # logs that as an ERROR and goes on. Apart from that key every processed notebook must be valid.
    errors = [ln for ln in r.stderr.splitlines() if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", ln)
              and "Additional properties are not allowed ('has_sd' was unexpected)" not in ln]
    assert not errors, "\n".join(errors)
    import nbformat

    for p in sorted(site["proc"].glob("*.ipynb")):
        nb = json.loads(p.read_text())
        for c in nb["cells"]:
            c.pop("has_sd", None)
        nbformat.validate(nbformat.from_dict(nb))
    for p in sorted(site["proc"].glob("*.ipynb")):
        h = site["html"] / f"{p.stem}.html"
        assert h.exists() and h.stat().st_size > 10_000, h
        text = h.read_text(encoding="utf-8")
        title = front_matter_title(NBS / p.name)
        head = re.search(r"<title>(.*?)</title>", text, re.S)
        assert head and html.unescape(head.group(1)).strip() == title, (h.name, head and head.group(1))
        h1 = re.search(r"<h1[^>]*>(.*?)</h1>", text, re.S)
        h1_text = html.unescape(re.sub(r"<[^>]+>", "", h1.group(1))).replace("¶", "").strip() if h1 else None
        assert h1_text == title.replace("`", ""), (h.name, h1_text)
        assert "output-file:" not in text, f"{h.name}: the front matter is printed as text"


def test_sidebar_lists_every_notebook():
    "`nbdev_docs` builds the site from sidebar.yml (custom_sidebar = True): every notebook must be in it."
    import yaml

    side = yaml.safe_load((NBS / "sidebar.yml").read_text())

    def hrefs(items):
        for it in items:
            if isinstance(it, str):
                yield it
            elif "href" in it:
                yield it["href"]
            else:
                yield from hrefs(it.get("contents", []))

    listed = list(hrefs(side["website"]["sidebar"]["contents"]))
    assert sorted(listed) == sorted(p.name for p in NBS.glob("*.ipynb")), listed
    assert len(listed) == len(set(listed))
    quarto = yaml.safe_load((ROOT / "_quarto.yml").read_text())
    assert {"nbdev.yml", "sidebar.yml"} <= set(quarto["metadata-files"])
    assert os.path.realpath(NBS / "_quarto.yml") == os.path.realpath(ROOT / "_quarto.yml")


# --------------------------------------------------------------------------------------------------------------
# 3. Chromium

_PROBE = r"""<script>
window.addEventListener("load", () => {
  const box = e => { const r = e.getBoundingClientRect();
                     return [r.left + scrollX, r.top + scrollY, r.width, r.height].map(Math.round); };
  const h1 = document.querySelector("h1");
  const text = e => { const c = e.cloneNode(true); c.querySelectorAll(".anchor-link").forEach(a => a.remove());
                      return c.textContent.replace(/\s+/g, " ").trim(); };
  const imgs = [...document.images].map(i => { const s = i.getAttribute("src") || "";
    return {src: s.slice(0, 40), tail: s.slice(-60), w: i.naturalWidth, h: i.naturalHeight, complete: i.complete,
            box: box(i)}; });
  const out = {title: document.title, h1: h1 ? text(h1) : null,
               h1box: h1 ? box(h1) : null, imgs, height: document.documentElement.scrollHeight,
               text: document.body ? document.body.innerText.length : 0};
  const pre = document.createElement("pre");
  pre.id = "lls-probe"; pre.style.display = "none"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args, height: int = 2000, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                           f"--window-size={WIDTH},{height}", "--virtual-time-budget=10000", *args],
                          capture_output=True, text=True, timeout=timeout)


def render(page: Path, workdir: Path, height: int = 2000) -> tuple[dict, Path]:
    """Load `page` in headless Chromium: (what the rendered DOM holds, a screenshot `WIDTH` × `height` px).

    The DOM is measured by a script added to a copy of the page (it only reads: title, first `<h1>` and every image
    with its natural size and its box in page coordinates, and appends them in a hidden `<pre>`) and read back with
    `--dump-dom`; the same load writes the screenshot. When the largest image ends below the screenshot, the page is
    shot again, tall enough to show it."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = page.read_text(encoding="utf-8", errors="replace")
    probed = workdir / f"probed-{page.name}"
    probed.write_text(src.replace("</body>", _PROBE + "</body>") if "</body>" in src else src + _PROBE,
                      encoding="utf-8")
    shot = workdir / f"{page.stem}.png"
    r = _chromium("--dump-dom", f"--screenshot={shot}", probed.as_uri(), height=height)
    m = re.search(r'<pre id="lls-probe"[^>]*>(.*?)</pre>', r.stdout, re.S)
    assert m, f"Chromium did not run the page (exit {r.returncode}):\n{r.stderr[-3000:]}"
    info = json.loads(html.unescape(m.group(1)))
    assert shot.exists(), f"Chromium wrote no screenshot (exit {r.returncode}):\n{r.stderr[-3000:]}"
    if info["imgs"]:
        big = max(info["imgs"], key=lambda i: i["box"][2] * i["box"][3])
        bottom = big["box"][1] + big["box"][3] + 50
        if height < bottom <= 20_000:
            return render(page, workdir, bottom)
    return info, shot


def _decode_data_png(page: Path, tail: str):
    "The PIL image of the page's `data:image/png` image whose src ends with `tail` (None if not decodable)."
    from PIL import Image

    text = page.read_text(encoding="utf-8", errors="replace")
    for m in re.finditer(r'src="data:image/png;base64,([^"]+)"', text):
        if m.group(1).endswith(tail):
            try:
                return Image.open(io.BytesIO(base64.b64decode(m.group(1)))).convert("RGB")
            except Exception:
                return None
    return None


def _stats(img) -> dict:
    "Share of non-white pixels, share of dark pixels and the number of distinct (4-bit) colours."
    import numpy as np

    a = np.asarray(img.convert("RGB"), dtype=np.int64).reshape(-1, 3)
    if not len(a):
        return {"ink": 0.0, "dark": 0.0, "colours": 0}
    return {"ink": float((a.min(1) < 235).mean()), "dark": float((a.sum(1) < 3 * 110).mean()),
            "colours": len(np.unique((a >> 4) @ np.array([256, 16, 1])))}


def page_problems(page: Path, info: dict, shot: Path, title: str, min_plot: int = 150) -> list[str]:
    "What is wrong with the rendered page (empty when the title and a plot are in the DOM and on the screenshot)."
    import numpy as np
    from PIL import Image, ImageOps

    problems = []
    img = Image.open(shot).convert("RGB")
    st = _stats(img)
    if st["ink"] < 0.0002 or st["colours"] < 3:  # an empty page: ~0; a heading and a line of text: ~0.0004
        problems.append(f"the screenshot is blank ({st})")
    if info.get("title") != title:
        problems.append(f"the page title is {info.get('title')!r}, not {title!r}")
    if info.get("h1") != title or not info.get("h1box"):
        problems.append(f"no <h1> {title!r} on the page (found {info.get('h1')!r})")
    else:
        x, y, w, h = info["h1box"]
        if w < 20 or h < 10 or y + h > img.height:
            problems.append(f"the title's box {info['h1box']} is not on the screenshot")
        elif _stats(img.crop((x, y, x + w, y + h)))["dark"] < 0.01:
            problems.append(f"no text drawn in the title's box {info['h1box']}")
    plots = [i for i in info["imgs"] if i["src"].startswith("data:image/png")]
    if not plots:
        return problems + ["no data:image/png plot on the page"]
    good = [i for i in plots if i["complete"] and i["w"] >= min_plot and i["h"] >= min_plot]
    if not good:
        return problems + [f"no loaded plot of at least {min_plot}×{min_plot} px: {plots}"]
    p = max(good, key=lambda i: i["w"] * i["h"])
    x, y, w, h = p["box"]
    if w < min_plot // 2 or h < min_plot // 2 or x < 0 or y < 0 or x + w > img.width or y + h > img.height:
        return problems + [f"the plot's box {p['box']} is not on the screenshot ({img.width}×{img.height})"]
    crop = img.crop((x, y, x + w, y + h))
    cs = _stats(crop)
    if cs["ink"] < 0.02 or cs["colours"] < 12:
        problems.append(f"the plot's box {p['box']} is blank on the screenshot ({cs})")
    ref = _decode_data_png(page, p["tail"])
    if ref is not None:  # the screenshot shows this image: small difference at thumbnail size
        a = ImageOps.grayscale(crop.resize((48, 48)))
        b = ImageOps.grayscale(ref.resize((48, 48)))
        diff = float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean())
        if diff > 30:
            problems.append(f"the screenshot's plot region differs from the plot (mean |Δ| = {diff:.0f})")
    return problems


@needs_chromium
def test_index_page_shows_title_and_plot(site, tmp_path):
    page = site["html"] / "index.html"
    title = front_matter_title(NBS / "index.ipynb")
    info, shot = render(page, tmp_path)
    problems = page_problems(page, info, shot, title)
    assert not problems, "\n".join(problems) + f"\n(DOM: {info})"


def _png(w: int, h: int, blank: bool = False) -> str:
    "A base64 PNG: a line plot (matplotlib) or a blank white image."
    from PIL import Image

    buf = io.BytesIO()
    if blank:
        Image.new("RGB", (w, h), "white").save(buf, format="PNG")
    else:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(w / 100, h / 100), dpi=100)
        ax.loglog([1, 10, 100], [3, 1, 0.4], "o-")
        ax.set(title="loss", xlabel="epoch")
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


@needs_chromium
def test_page_problems_rejects_broken_pages(tmp_path):
    title = "A title"
    head = f"<html><head><title>{title}</title></head><body><h1>{title}</h1><p>Some text.</p>"
    plot = _png(500, 350)
    pages = {
        "good": head + f'<img src="data:image/png;base64,{plot}"></body></html>',
        "empty": "<html><body></body></html>",
        "no_plot": head + "</body></html>",
        "no_title": f'<html><body><p>text</p><img src="data:image/png;base64,{plot}"></body></html>',
        "broken_image": head + '<img src="data:image/png;base64,iVBORw0KGgoAAAAbroken"></body></html>',
        "blank_image": head + f'<img src="data:image/png;base64,{_png(500, 350, blank=True)}"></body></html>',
        "tiny_image": head + f'<img src="data:image/png;base64,{_png(60, 40)}"></body></html>',
        "other_image": head + f'<img src="data:image/png;base64,{plot}" style="filter: invert(1)"></body></html>',
    }
    found = {}
    for name, text in pages.items():
        page = tmp_path / f"{name}.html"
        page.write_text(text)
        info, shot = render(page, tmp_path / name)
        found[name] = page_problems(page, info, shot, title)
    assert found["good"] == [], found["good"]
    for name, problems in found.items():
        if name != "good":
            assert problems, f"page_problems accepted the {name} page"
    assert any("blank" in p for p in found["empty"]) and any("no data:image/png" in p for p in found["empty"])
    assert found["no_plot"] == ["no data:image/png plot on the page"], found["no_plot"]
    assert any("title" in p for p in found["no_title"]) and len(found["no_title"]) == 2
    assert any("no loaded plot" in p for p in found["broken_image"])
    assert any("blank on the screenshot" in p for p in found["blank_image"])
    assert any("no loaded plot" in p for p in found["tiny_image"])
    assert found["other_image"] and all("differs from the plot" in p for p in found["other_image"])

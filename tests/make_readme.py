"""README.md from nbs/index.ipynb, rendered the way an nbdev README reads (nbdev's own `nbdev_readme` needs Quarto,
which no package registry here provides): `#|` directive lines are dropped from the code shown, cells marked
`#| hide` or `#| include: false` are left out, IPython magics (`%…`) are not shown, every code fence says its
language, and the stored outputs are kept (text as text, figures as image files in README_files/, committed
beside README.md). Images the notebooks link from nbs/images/ (`![..](images/x.png)`, as the docs site serves them)
are linked as nbs/images/x.png, so one file serves both. Run from anywhere: `python tests/make_readme.py`; `tests/check.sh` runs it and fails if
README.md or README_files/ then differ from what is committed."""
import re
import shutil
import sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]
FILES = "README_files"


def readme_notebook(path: Path) -> nbformat.NotebookNode:
    "The index notebook as the README shows it (see the module docstring)."
    nb = nbformat.read(path, as_version=4)
    nb.metadata["language_info"] = {"name": "python"}  # nbdev_clean strips it; the fences take their language from it
    cells = []
    for c in nb.cells:
        if c.cell_type == "code":
            lines = c.source.splitlines()
            directives = [ln[2:].strip() for ln in lines if ln.startswith("#|")]
            if any(re.fullmatch(r"hide|include:\s*false", d) for d in directives):
                continue
            c.source = "\n".join(ln for ln in lines if not ln.startswith("#|") and not ln.lstrip().startswith("%"))
            c.source = c.source.strip("\n")
            if not c.source and not c.get("outputs"):
                continue
        cells.append(c)
    nb.cells = cells
    return nb


def render(out: Path = ROOT) -> Path:
    "Write `out/README.md` and `out/README_files/`; returns the README's path."
    nb = readme_notebook(ROOT / "nbs" / "index.ipynb")
    body, res = MarkdownExporter().from_notebook_node(nb, resources={"output_files_dir": FILES,
                                                                     "unique_key": "README"})
    body = re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"
    body = body.replace("](images/", "](nbs/images/")  # the README sits one folder above the notebooks
    shutil.rmtree(out / FILES, ignore_errors=True)
    for name, data in (res.get("outputs") or {}).items():
        p = out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (out / "README.md").write_text(body, encoding="utf-8")
    return out / "README.md"


if __name__ == "__main__":
    render(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)

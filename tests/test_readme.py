"""README.md reads as an nbdev README: generated from nbs/index.ipynb, every code fence with a language, no
directives or magics, its figures committed beside it, its commands written for the repository root."""
import re

from helpers import ROOT
from make_readme import render


def test_readme_is_generated_and_clean(tmp_path):
    out = render(tmp_path)
    text = out.read_text()
    assert text == (ROOT / "README.md").read_text(), "README.md is stale: run python tests/make_readme.py"
    for f in (tmp_path / "README_files").iterdir():
        assert f.read_bytes() == (ROOT / "README_files" / f.name).read_bytes(), f.name
    fences = [ln for ln in text.splitlines() if ln.startswith("```")]
    assert fences and len(fences) % 2 == 0
    assert all(re.fullmatch(r"```[a-z]+", ln) for ln in fences[::2]), fences[::2]  # each opening names a language
    code = re.findall(r"```[a-z]+\n(.*?)```", text, re.S)
    assert not [ln for block in code for ln in block.splitlines() if ln.startswith(("#|", "%"))]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images and all((ROOT / i).is_file() for i in images), images
    assert "../demo" not in text and "--to /" not in text and "--out-dir" not in text
    assert re.search(r"\n\s*[a-z]+-lr0\.05-wd0\.001-s1-[0-9a-f]{10}\n", text)  # the run_id, printed

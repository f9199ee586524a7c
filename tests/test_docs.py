"""The documentation holds together: the README, ``docs/design.md`` (the record of each design choice) and
``docs/benchmarks.md`` (the supporting measurements) link to files and headings that exist, every named section
they or the code cite by ``docs/<file>.md, *Name*`` is there, and every result file in ``bench/results/`` is cited.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _headings(path: Path) -> list[str]:
    return re.findall(r"(?m)^#{1,6} (.+?)\s*$", path.read_text(encoding="utf-8"))


def _section_names(path: Path) -> list[str]:
    """Headings and the italic leads that open a paragraph (``*Name*: ...``)."""
    text = path.read_text(encoding="utf-8")
    return _headings(path) + re.findall(r"(?m)^\*([^*\n]+)\*:", text)


def test_docs_exist_and_the_readme_links_them():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("design.md", "benchmarks.md"):
        assert (ROOT / "docs" / name).is_file()
        assert f"](docs/{name})" in readme, f"the README should link docs/{name}"


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(doc):
    text = doc.read_text(encoding="utf-8")
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in {_slug(h) for h in _headings(dest)}:
            bad.append(f"{target}: no such heading")
    assert not bad, f"{doc.name}: {bad}"


def test_named_sections_cited_as_file_and_name_exist():
    """``docs/design.md, *Name*`` or ``README, *Name*`` anywhere in the docs, the app or the core names a heading (or
    a bold or italic lead) of that file, so a repair note or a widget's help text sends the reader somewhere real."""
    names = {f"docs/{f.name}": _section_names(f) for f in (ROOT / "docs").glob("*.md")}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    names["README"] = _headings(ROOT / "README.md") + re.findall(r"\*\*([^*\n]+?)\*\*", readme)
    sources = DOC_FILES + sorted(ROOT.glob("backdoor_core/**/*.py")) + sorted(ROOT.glob("app_pages/*.py")) \
        + sorted(ROOT.glob("bench/*.py"))
    bad, seen = [], 0
    for src in sources:
        text = " ".join(src.read_text(encoding="utf-8").split())  # a citation may wrap across lines
        for file, name in re.findall(r"(docs/\w+\.md|README)`?[,\"]* \*([^*]+)\*", text):
            seen += 1
            if not any(n.startswith(name.strip()) for n in names.get(file, [])):
                bad.append(f"{src.relative_to(ROOT)}: {file}, *{name}*")
    assert seen > 20 and not bad, bad


def test_every_result_file_is_cited():
    """``bench/results/`` holds only what the README and docs/ report (the archive is indexed on its own)."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOC_FILES)
    files = [p for p in (ROOT / "bench" / "results").iterdir() if p.is_file()]
    assert files
    uncited = [p.name for p in files if p.name not in text and p.stem not in text]
    assert not uncited, uncited

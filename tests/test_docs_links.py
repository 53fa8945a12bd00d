"""Every relative link in the README and the docs pages resolves: the file exists and, for `#anchor`, the heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Pages other branches are writing now, linked from the README ahead of time. Tolerated only while absent: once a
# page exists its links and anchors are checked like any other. Remove an entry when its page lands.
PENDING: set[str] = set()

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`+[^`]*`+")
# [text](target "title") and ![alt](target); text may hold one level of brackets.
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target "title" (CommonMark: a title is quoted or in parentheses; `[x]: a b` is plain text)
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def doc_files() -> list[Path]:
    """README.md and the other top-level pages, docs/*.md and benchmarks/*.md."""
    return [
        *sorted(ROOT.glob("*.md")),
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "benchmarks").glob("*.md")),
    ]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(HTML_ID.findall(line))
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    out = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("", line)
        out += INLINE.findall(line)
        m = REFERENCE.match(line)
        if m:
            out.append(m.group(1))
    return out


def broken_links(path: Path, root: Path = ROOT, pending: frozenset[str] | set[str] = frozenset()) -> list[str]:
    problems = []
    for target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path.resolve()
        try:
            rel = dest.relative_to(root.resolve()).as_posix()
        except ValueError:
            problems.append(f"{target}: outside the repository")
            continue
        if not dest.exists():
            if rel not in pending:
                problems.append(f"{target}: {rel} does not exist")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading '#{anchor}' in {rel}")
    return problems


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page, pending=PENDING) == []


def test_docs_pages_are_linked_from_the_readme() -> None:
    assert len(links(ROOT / "README.md")) >= 10, "the README's links were not found: is the link pattern broken?"
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md") if not EXTERNAL.match(t)}
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert unlinked == [], f"docs pages the README does not link: {unlinked}"


def test_the_checker_catches_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Some `code`: here (too)\n\n## Some code here too\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#some-code-here-too) [ok](docs/a.md#some-code-here-too-1) [ok](#top)\n"
        "# Top\n[web](https://example.org/x) `[in code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n"
        "[gone](docs/missing.md) [bad anchor](docs/a.md#no-such) ![img](docs/missing.png)\n"
        "[pending](docs/later.md) [escape](../outside.md)\n"
        '[ref]: docs/gone.md "title"\n[not a ref]: compare v1...v2\n'
    )
    assert broken_links(page, root=tmp_path, pending={"docs/later.md"}) == [
        "docs/missing.md: docs/missing.md does not exist",
        "docs/a.md#no-such: no heading '#no-such' in docs/a.md",
        "docs/missing.png: docs/missing.png does not exist",
        "../outside.md: outside the repository",
        "docs/gone.md: docs/gone.md does not exist",
    ]

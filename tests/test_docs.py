"""The README and docs/ point only at files and headings that exist, so moving a page cannot leave a dead link."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def heading_anchors(page: Path) -> set[str]:
    """The anchors a Markdown renderer gives a page's headings: lower case, punctuation dropped, spaces as '-'."""
    headings = re.findall(r"^#{1,6}\s+(.+)$", FENCE.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def broken_links(page: Path) -> list[str]:
    """Relative links and image sources of `page` whose file, or heading after '#', does not exist."""
    broken = []
    for match in LINK.finditer(FENCE.sub("", page.read_text())):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):
            continue  # a web address or mailto: not checked offline
        path, _, anchor = target.partition("#")
        destination = (page.parent / path) if path else page
        if not destination.exists() or (anchor and (destination.is_dir() or anchor not in heading_anchors(destination))):
            broken.append(target)
    return broken


def test_every_link_in_the_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    assert {str(page.relative_to(ROOT)): broken_links(page) for page in pages if broken_links(page)} == {}


def test_a_missing_file_or_heading_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Mode coverage on the 2D mixtures\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n[ok](other.md#mode-coverage-on-the-2d-mixtures) [self](#top) [web](https://example.org/x)\n"
        "[gone](missing.md) [no heading](other.md#speed) <img src=\"img/none.png\">\n"
        "```\n[inside a code block](nowhere.md)\n```\n"
    )
    assert broken_links(page) == ["missing.md", "other.md#speed", "img/none.png"]

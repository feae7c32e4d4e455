"""The repository stands alone: every document it cites is inside it.

The contract between the stages is ``docs/architecture.md`` and the vendor layouts are
``docs/payload-formats.md``; nothing tracked may send a reader to a team document outside the
repository, to a ``docs/*.md`` that does not exist, or to a heading a document does not have.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]

#: Applied migrations are immutable: the sink refuses a migration whose text (comments included)
#: no longer matches the checksum a database recorded. Their comments predate docs/.
_IMMUTABLE = frozenset(
    {
        "sinks/timescale/migrations/0001_schema.sql",
        "sinks/timescale/migrations/0002_roles.sql",
    }
)
_OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared")
_DOC_PATH = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)(?:#([\w-]+))?")
_MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _tracked() -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(_REPO), "ls-files", "-z"], check=True, capture_output=True, text=True
    )
    return [name for name in listed.stdout.split("\0") if name and (_REPO / name).is_file()]


def _text(name: str) -> str | None:
    data = (_REPO / name).read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def slug(heading: str) -> str:
    """A heading's anchor as GitHub renders it: lower case, punctuation dropped, spaces to ``-``
    (GitHub's ``html-pipeline`` TOC filter)."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


@cache
def anchors(document: Path) -> frozenset[str]:
    """Every heading anchor of a Markdown file; repeated headings get ``-1``, ``-2``, …"""
    seen: dict[str, int] = {}
    found = set()
    in_code = False
    for line in document.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = re.match(r"#{1,6} (.+)", line)
        if in_code or match is None:
            continue
        base = slug(match[1])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def test_slug_follows_github() -> None:
    assert slug("Milesight AM307 and AM319") == "milesight-am307-and-am319"
    assert slug("How LoRaWAN uplinks arrive over MQTT") == "how-lorawan-uplinks-arrive-over-mqtt"
    assert slug("Windows and indicators") == "windows-and-indicators"
    assert slug("`citysense` (the CLI): why?") == "citysense-the-cli-why"


TRACKED = _tracked()


def test_the_contract_documents_exist() -> None:
    for name in ("docs/architecture.md", "docs/payload-formats.md"):
        assert name in TRACKED, f"{name} must be tracked"


def test_nothing_points_outside_the_repository() -> None:
    offenders = [
        f"{name}:{number}: {line.strip()}"
        for name in TRACKED
        if name not in _IMMUTABLE and (text := _text(name)) is not None
        for number, line in enumerate(text.splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert not offenders, "references to documents outside the repository:\n" + "\n".join(offenders)


def test_every_cited_docs_page_and_heading_exists() -> None:
    broken = []
    for name in TRACKED:
        text = _text(name)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for match in _DOC_PATH.finditer(line):
                target = _REPO / "docs" / match[1]
                if not target.is_file():
                    broken.append(f"{name}:{number}: docs/{match[1]} does not exist")
                elif match[2] and match[2] not in anchors(target):
                    broken.append(f"{name}:{number}: docs/{match[1]} has no heading #{match[2]}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("name", [n for n in TRACKED if n.endswith(".md")])
def test_markdown_links_resolve_inside_the_repository(name: str) -> None:
    source = _REPO / name
    broken = []
    for target in _MD_LINK.findall(source.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (source.parent / path_part).resolve() if path_part else source
        if not resolved.is_relative_to(_REPO):
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{name}: " + "; ".join(broken)

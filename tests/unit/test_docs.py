"""The README and docs/api.md stay true of the code: the kinds table, the operations, links inside the repo."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.api_reference import END, START, document, reference
from shared.kind_catalog import markdown_table
from shared.kinds import platform_registry

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
API_DOC = (ROOT / "docs" / "api.md").read_text()


def between(text: str, start: str, end: str) -> str:
    return text[text.index(start) + len(start):text.index(end)]


def test_the_readme_kinds_table_is_generated_from_the_declarations() -> None:
    assert between(README, "<!-- kinds:start -->\n", "<!-- kinds:end -->") == markdown_table(platform_registry()), (
        "regenerate it with `python -m scripts.kinds_table`")


def test_docs_api_lists_every_operation_of_the_served_document() -> None:
    generated = reference(document())
    assert API_DOC[API_DOC.index(START):API_DOC.index(END) + len(END) + 1] == generated, (
        "regenerate it with `python -m scripts.api_reference --write`")


def test_the_readme_links_only_to_files_in_the_repository() -> None:
    for text, base in ((README, ROOT), (API_DOC, ROOT / "docs")):
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            assert not target.startswith(("http://", "https://", "../")) or "127.0.0.1" in target, target
            if not target.startswith("http"):
                assert (base / target).exists(), target
        assert "../shared" not in text
        assert "`run_at`/`delay`" not in text

"""The README stays true: its quickstart is the two commands, its configuration table names
every setting the processes read, and it is self-contained: every link stays inside the
repository and lands on a file (and heading) that exists."""

import re
from pathlib import Path

import pytest

from bootstrap.settings import ApiSettings

README_PATH = Path(__file__).resolve().parents[2] / "README.md"
README = README_PATH.read_text()


def test_the_quickstart_is_make_up_and_make_test():
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert "make up" in quickstart and "make test" in quickstart


def test_every_setting_is_in_the_configuration_table():
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [
        name.upper() for name in ApiSettings.model_fields if f"`{name.upper()}`" not in table
    ]
    assert missing == [], f"document these settings in README.md: {missing}"


DOCS = sorted((README_PATH.parent / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)|<(\w+://[^>]+)>")


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", [README_PATH, *DOCS], ids=lambda p: p.name)
def test_every_link_points_inside_the_repository(page: Path):
    text = page.read_text()
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        assert "://" not in target and not target.startswith(("mailto:", "//")), (
            f"{page.name} links outside the repository: {target}"
        )
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_relative_to(README_PATH.parent), f"{page.name}: {target} leaves the repo"
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked.read_text()), f"{page.name}: no #{anchor} in {path}"


def test_the_readme_needs_nothing_outside_the_repository():
    for page in [README_PATH, *DOCS]:
        text = page.read_text()
        assert "DESIGN.md" not in text and "../shared" not in text, page.name


def test_the_readme_documents_the_api_and_links_its_contracts():
    api = README.split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    for needed in ("openssl dgst -sha256 -hmac", "curl", "TradingClient", "client_order_id"):
        assert needed in api, needed
    assert "409" in api and "401" in api  # a reused id with another body; a replayed POST
    for doc in ("docs/api.md", "docs/signing.md", "docs/errors.md"):
        assert f"]({doc})" in api


def test_the_replay_recipe_is_the_command_not_a_snippet():
    replay = README.split("### Replaying a history locally", 1)[1].split("\n### ", 1)[0]
    assert "trading replay history.json" in replay and "Replayer(" not in replay

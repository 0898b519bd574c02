"""Issue 25, point 7: a user who installed the wheel reads the README on PyPI, where a relative link
(`docs/profile.md`) leads nowhere. Every link in the README is absolute (or an anchor on the page),
every link into the project's repository (pyproject's Source URL) names a file this checkout has,
and the README says that benchmarks/ and `python -m benchmarks` need a source checkout."""

from __future__ import annotations

import re

from tests.paths import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _links() -> list[str]:
    return LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_every_readme_link_is_absolute_or_an_anchor():
    links = _links()
    assert links, "the README links to nothing: has the link syntax changed?"
    relative = [link for link in links if not link.startswith(("https://", "http://", "#"))]
    assert not relative, f"relative links lead nowhere from PyPI: {relative}"


def test_every_link_into_the_repository_names_a_file_it_has():
    found = re.search(r'^Source = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert found, "pyproject.toml has no Source URL"
    source = found.group(1).rstrip("/")
    prefix = source + "/blob/main/"
    into = [link for link in _links() if link.startswith(source + "/")]
    assert into, "no README link into the repository"
    for link in into:
        assert link.startswith(prefix), link
        path = link.removeprefix(prefix).split("#")[0]
        assert (ROOT / path).is_file(), f"{link}: no {path} in this checkout"


def test_the_readme_says_benchmarks_need_a_source_checkout():
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "`benchmarks/`, `tests/` and `make` exist only in a source checkout" in text

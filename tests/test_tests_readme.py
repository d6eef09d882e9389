"""tests/README.md maps README claims to tests: every test file and test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def named_tests(text: str) -> list[tuple[str, str]]:
    """(file, test name or "") for each reference in the test column of the claim tables:
    ``test_x.py``, ``test_x.py::test_y``, and ``::test_z`` (in the file named before it)."""
    refs = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or set(cells[-1]) <= set("- "):
            continue
        current = None
        for ref in re.findall(r"`([^`]+)`", cells[-1]):
            file, _, name = ref.partition("::")
            if file:
                current = file
            if current is not None and current.endswith(".py"):
                refs.append((current, name))
    return refs


def missing(text: str) -> list[str]:
    """The references of ``text`` to a test file or a test (``name*``: a prefix) not there."""
    out = []
    for file, name in named_tests(text):
        path = TESTS / file
        if not path.is_file():
            out.append(file)
            continue
        pattern = re.escape(name[:-1]) if name.endswith("*") else re.escape(name) + r"\("
        if name and not re.search(r"^def " + pattern, path.read_text(), re.MULTILINE):
            out.append(f"{file}::{name}")
    return out


def test_every_test_the_map_names_exists() -> None:
    text = (TESTS / "README.md").read_text()
    assert len(named_tests(text)) > 100  # the map was read, not skipped
    assert missing(text) == []


def test_the_check_finds_a_missing_file_and_a_missing_test() -> None:
    # The control: references that must be rejected, and ones that must pass, read the same
    # way as the map.
    table = ("| claim | test |\n| --- | --- |\n"
             "| x | `test_train.py::test_a`, `test_cli.py::test_nope`, "
             "`::test_version_names_the_package_and_needs_no_torch`, `::test_quiet_*` |\n")
    assert len(named_tests(table)) == 4
    assert missing(table) == ["test_train.py", "test_cli.py::test_nope"]

"""The README stays true: its equation table names markers that sit on the lines it quotes, every
marker in core/ is in the table, its links resolve, its example runs, and it stays a short manual."""

import re
from pathlib import Path

import pytest

from conftest import ROOT

README = (ROOT / "README.md").read_text()
CORE = ROOT / "src" / "backprop_lab" / "core"
MAX_LINES = 250
ROW = re.compile(  # | lecture (may hold escaped pipes, \|) | `code` | [file](path) `[eq:name]` |
    r"^\|(?:[^|\\]|\\.)+\| `(?P<code>[^`]+)` \| \[(?P<file>[\w.]+)\]\((?P<path>src/backprop_lab/core/[\w.]+)\) "
    r"`\[eq:(?P<name>[\w-]+)\]` \|$",
    re.M,
)
MARKER = re.compile(r"\[eq:([\w-]+)\]")
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def table_rows(text: str) -> list[re.Match]:
    return list(ROW.finditer(text))


def marker_problems(rows: list[re.Match], root: Path) -> list[str]:
    """Why a row does not hold: its file, its marker (exactly once) or the quoted code on that line."""
    problems = []
    for row in rows:
        path = root / row["path"]
        if path.name != row["file"] or not path.is_file():
            problems.append(f"{row['path']} is not the file {row['file']}")
            continue
        tag = f"[eq:{row['name']}]"
        lines = [line for line in path.read_text().splitlines() if tag in line]
        if len(lines) != 1:
            problems.append(f"{tag} occurs {len(lines)} times in {row['path']}, not once")
        elif row["code"] not in lines[0]:
            problems.append(f"the line with {tag} in {row['path']} no longer holds {row['code']!r}: {lines[0]!r}")
    return problems


def code_markers(core: Path) -> set[str]:
    return {name for f in core.glob("*.py") for name in MARKER.findall(f.read_text())}


def broken_links(text: str, root: Path) -> list[str]:
    """Relative link targets (files or folders, any #anchor dropped) that do not exist under root."""
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    return [t for t in targets if not (root / t.split("#", 1)[0]).exists()]


def test_equation_table_markers_sit_on_the_quoted_lines():
    rows = table_rows(README)
    assert len(rows) >= 15
    assert marker_problems(rows, ROOT) == []
    names = [row["name"] for row in rows]
    assert len(names) == len(set(names)), "a marker is named by two rows"


def test_every_marker_in_core_is_in_the_table():
    in_code = code_markers(CORE)
    assert len(in_code) >= 15
    orphans = in_code - {row["name"] for row in table_rows(README)}
    assert orphans == set(), f"markers in core/ missing from the README table: {sorted(orphans)}"


def test_the_checks_catch_a_moved_marker_and_a_changed_line(tmp_path):
    """The helpers above fail on the mistakes they exist for (so the tests using them can fail)."""
    src = tmp_path / "src" / "backprop_lab" / "core"
    src.mkdir(parents=True)
    (src / "m.py").write_text("z = a @ W.t()  # z^l  [eq:z]\nx = 1  # [eq:twice]\ny = 2  # [eq:twice]\n")
    table = (
        "| z \\|\\|x\\|\\| | `z = a @ W.t()` | [m.py](src/backprop_lab/core/m.py) `[eq:z]` |\n"
        "| z | `z = W @ a` | [m.py](src/backprop_lab/core/m.py) `[eq:z]` |\n"
        "| t | `x = 1` | [m.py](src/backprop_lab/core/m.py) `[eq:twice]` |\n"
        "| g | `g` | [m.py](src/backprop_lab/core/m.py) `[eq:gone]` |\n"
    )
    rows = table_rows(table)
    assert len(rows) == 4
    problems = marker_problems(rows, tmp_path)
    assert len(problems) == 3
    assert "no longer holds 'z = W @ a'" in problems[0]
    assert "[eq:twice] occurs 2 times" in problems[1]
    assert "[eq:gone] occurs 0 times" in problems[2]
    assert code_markers(src) - {row["name"] for row in rows} == set()
    (src / "n.py").write_text("# [eq:orphan]\n")
    assert code_markers(src) - {row["name"] for row in rows} == {"orphan"}


def test_readme_is_a_short_manual():
    lines = README.splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines, at most {MAX_LINES}"
    assert "<!-- results:begin -->" in lines and "<!-- results:end -->" in lines
    assert "make train" in README and "make test" in README


def test_readme_links_point_at_existing_paths(tmp_path):
    links = LINK.findall(README)
    assert any(t.startswith("docs/") for t in links) and any(t.startswith("src/") for t in links)
    assert broken_links(README, ROOT) == []
    (tmp_path / "here.md").write_text("")
    text = "[a](here.md) [b](missing.md#x) [c](https://example.org/x) [d](#section) ![e](gone.png)"
    assert broken_links(text, tmp_path) == ["missing.md#x", "gone.png"]


@pytest.mark.parametrize("page", ["data.md", "scale-out.md", "troubleshooting.md"])
def test_docs_pages_links_point_at_existing_paths(page):
    path = ROOT / "docs" / page
    assert broken_links(path.read_text(), path.parent) == []


def test_readme_python_example_runs():
    example = README.split("```python\n", 1)[1].split("```", 1)[0]
    printed = []
    exec(example, {"print": printed.append, "__name__": "readme"})
    assert printed == [True]

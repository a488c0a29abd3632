"""The README stays true: its equation table points at the lines it quotes, its example runs."""

import re

from conftest import ROOT

README = (ROOT / "README.md").read_text()
ROW = re.compile(
    r"^\|[^|]+\| `(?P<code>[^`]+)` \| \[(?P<file>[\w.]+):(?P<line>\d+)\]\((?P<path>[^)#]+)#L(?P=line)\) \|$", re.M
)


def test_equation_table_points_at_the_quoted_lines():
    rows = list(ROW.finditer(README))
    assert len(rows) >= 15
    for row in rows:
        lines = (ROOT / row["path"]).read_text().splitlines()
        assert row["path"].endswith(row["file"])
        assert row["code"] in lines[int(row["line"]) - 1], (
            f"{row['file']}:{row['line']} no longer holds {row['code']!r}"
        )


def test_readme_python_example_runs():
    example = README.split("```python\n", 1)[1].split("```", 1)[0]
    printed = []
    exec(example, {"print": printed.append, "__name__": "readme"})
    assert printed == [True]

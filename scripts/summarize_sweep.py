"""Summarize a finished (or half-finished) Hydra sweep: `python scripts/summarize_sweep.py outputs/multiruns/<stamp>`.

Writes summary.csv, summary.md and summary.png into the sweep dir and prints the markdown table: one row
per group of jobs that differ only in `seed` (mean ± std over its seeds, population members included),
a column per swept key, and the failures below (see docs/sweeps.md). Useful for sweeps that ran without
the SummarizeSweep callback, or were interrupted before it ran.
Exits 1 with a one-line `error: ...` if the dir is missing or holds no job folders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backprop_lab.errors import print_error
from backprop_lab.reporting.jobs import find_job_dirs
from backprop_lab.reporting.sweeps import write_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun dir, e.g. outputs/multiruns/<stamp>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print_error(f"{args.sweep_dir} is not a directory (pass a sweep folder, e.g. outputs/multiruns/<stamp>)")
        return 1
    if not find_job_dirs(args.sweep_dir):
        print_error(
            f"no job folders (.hydra/overrides.yaml or metrics.json) under {args.sweep_dir} (pass a sweep folder)"
        )
        return 1
    paths = write_summary(args.sweep_dir)
    print(paths[1].read_text(), end="")
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reproduce the lecture's claims and write docs/results.md.

    python scripts/report.py [--quick] [--data D] [--out DIR]


Trains every experiment in conf/experiment/ (runs in outputs/report/<mode>-<data>/), then writes
one PNG per claim and results.md into --out (default: docs/ for the full report on the embedded
digits, docs/<data>/ for other data, docs/<mode>/ for --quick and --tiny). --quick: few epochs, a few minutes.
--tiny: 200 images and 1 epoch (for tests). --reuse: keep runs whose config is unchanged.
--readme PATH: also replace the text between PATH's `<!-- results:begin -->` and `<!-- results:end -->`
lines with the results summary (default: README.md for the full report on the embedded digits into
docs/, no README otherwise); --no-readme: never. A README without the markers is an error, reported
before any training.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny MLPs: threads only add overhead

import torch

from backprop_lab.errors import ConfigError, fail
from backprop_lab.paths import PROJECT_ROOT
from backprop_lab.reporting.report import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick", help="few epochs (a few minutes)")
    mode.add_argument("--tiny", action="store_const", dest="mode", const="tiny", help="200 images, 1 epoch (tests)")
    parser.add_argument("--data", default="mnist_subset", choices=("mnist_subset", "fashion_mnist"))
    parser.add_argument("--out", help="folder for results.md and the figures")
    parser.add_argument("--runs", help="folder for the training runs (default: outputs/report/<mode>-<data>)")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs whose config is unchanged")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="runs trained at once, one core each (default: all)"
    )
    readme = parser.add_mutually_exclusive_group()
    readme.add_argument(
        "--readme",
        help="README whose results markers get the summary (default: README.md for "
        "the full report on the embedded digits into docs/)",
    )
    readme.add_argument("--no-readme", action="store_true", help="write no README summary")
    args = parser.parse_args(argv)
    mode_name = args.mode or "full"
    if (
        args.readme is None
        and not args.no_readme
        and mode_name == "full"
        and args.data == "mnist_subset"
        and args.out is None
    ):
        args.readme = str(PROJECT_ROOT / "README.md")
    if args.out is None:  # docs/ for the full report on the embedded digits, else a subfolder
        sub = mode_name if mode_name != "full" else "" if args.data == "mnist_subset" else args.data
        args.out = str(PROJECT_ROOT / "docs" / sub)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    warnings.filterwarnings("ignore", module="lightning")  # per-run hints (workers, logging intervals) are noise here
    warnings.filterwarnings("ignore", message="Encountered `nan`")  # a diverged run's metrics: reported as such
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "tensorboard"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("backprop_lab").setLevel(logging.WARNING)
    try:
        md = build(
            mode_name,
            args.data,
            args.out,
            args.runs,
            args.reuse,
            echo=lambda s: print(s, flush=True),
            readme=args.readme,
            workers=max(1, args.workers),
        )
    except ConfigError as e:
        fail(str(e))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

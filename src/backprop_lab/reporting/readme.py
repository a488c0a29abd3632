"""The README's Results region: docs/results.md condensed to one row per claim (ours with its 95%
interval, published, the command, the verdict), written between the README's
`<!-- results:begin -->` and `<!-- results:end -->` lines; every other byte is kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from backprop_lab.errors import ConfigError
from backprop_lab.reporting.markdown import (
    ANCHORS,
    BEGIN,
    END,
    PUBLISHED,
    accuracy_verdict,
    best,
    cost_verdict,
    epoch1,
    fmt,
    gradient_facts,
    leader,
    members,
    momentum_verdict,
    other_reports,
    pct,
    provenance,
    ratio_verdict,
    status,
)


def _row(claim: str, ours: str, published: str, command: str, verdict: str) -> str:
    return (
        f"| {claim} | {ours} | {published} | " + "<br>".join(f"`{c}`" for c in command.splitlines()) + f" | {verdict} |"
    )


def _names(runs: list[dict], sep: str = " / ") -> str:
    return sep.join(f"`{m['variant']}`" for m in runs)


def readme_summary(res: dict[str, Any], out: Path, readme_dir: Path, figures: list[str]) -> str:
    """results.md condensed for the README: one row per claim, the figures; links relative to readme_dir."""
    plan, d, cmd, g = res["plan"], res["data"], res["commands"], gradient_facts(res)
    docs = Path(os.path.relpath(out, readme_dir)).as_posix() + "/"
    rows = []
    for key, name, m, claim in (
        (
            "nielsen_ch1",
            "nielsen_ch1",
            res["nielsen_ch1"],
            "NNDL ch. 1 network (784-30-10, sigmoid, quadratic cost, N(0,1) init, plain SGD), test accuracy",
        ),
        (
            "nielsen_ch3",
            "nielsen_ch3",
            res["nielsen_ch3"],
            "NNDL ch. 3 network (784-100-10, cross-entropy, L2, N(0,1/n_in) init), best validation accuracy",
        ),
        *(
            (m["variant"], "mse_vs_cross_entropy", m, f"ch. 1 network with `{m['variant']}`, test accuracy")
            for m in res["mse_vs_cross_entropy"]
        ),
    ):
        _, anchor, verdict = accuracy_verdict(res, key, m, name)
        rows.append(_row(claim, pct(members(m, ANCHORS[key][1])), pct(anchor), cmd[name], verdict))
    ce, ex, opt, act, bs = (
        res[k] for k in ("mse_vs_cross_entropy", "exploding_gradients", "optimizers", "activations", "batch_size")
    )
    s, (r4, book4) = g["sigmoid"], g["ratio"][4]
    relu = f" (relu: {g['relu_ratio']:.3g}x)" if g["relu_ratio"] else ""
    mid = (2, 3)
    ratios_mid = " / ".join(f"{g['ratio'][k][0]:.3g}x" for k in mid)
    book_mid = " / ".join(fmt(PUBLISHED[k]) for k in mid) + "; " + " / ".join(f"{g['ratio'][k][1]:.3g}x" for k in mid)
    exploded = " / ".join(pct(best(m)) if m["status"] == "completed" else status(m) for m in ex)
    per = [m["train_seconds"] / max(1, len((m.get("history") or {}).get("epoch", []))) for m in bs]
    # (claim, ours, published, command, verdict), one row each
    table = [
        (
            f"cross-entropy learns faster than the quadratic cost: val/acc after epoch 1, {_names(ce)}",
            " / ".join(pct(epoch1(m)) for m in ce),
            "-",
            cmd["mse_vs_cross_entropy"],
            cost_verdict(ce),
        ),
        (
            f"vanishing gradients at init, 4 sigmoid hidden layers (mean of {plan.init_seeds} nets): "
            "‖delta^l‖, l = 1..4; last / first",
            f"{fmt(s[4])}; {r4:.3g}x{relu}",
            f"{fmt(PUBLISHED[4])}; {book4:.3g}x",
            cmd["vanishing_gradients"],
            ratio_verdict(g, (4,)),
        ),
        (
            "the same, 2 / 3 hidden layers; last / first",
            " / ".join(fmt(s[k]) for k in mid) + "; " + ratios_mid,
            book_mid,
            cmd["vanishing_gradients"],
            ratio_verdict(g, mid),
        ),
        (
            f"exploding gradients (4x100 ReLU, N(0,1)): ‖delta^1‖ / ‖delta^4‖ at init; best val/acc, {_names(ex)}",
            f"{g['explode_ratio']:.3g}x; {exploded}",
            "-",
            cmd["exploding_gradients"],
            g["explode_verdict"],
        ),
        (
            f"momentum speeds up learning: val/acc after epoch 1 / best, {_names(opt, '; ')}",
            "; ".join(f"{pct(epoch1(m))} / {pct(best(m))}" for m in opt),
            "-",
            cmd["optimizers"],
            momentum_verdict(opt),
        ),
        (
            f"tanh and ReLU learn faster than sigmoid: val/acc after epoch 1, {_names(act)}",
            " / ".join(pct(epoch1(m)) for m in act),
            "-",
            cmd["activations"],
            leader(act, "activation=sigmoid"),
        ),
        (
            f"mini-batch size: seconds per epoch, best val/acc, {_names(bs)}",
            " / ".join(f"{t:.2g} s {pct(best(m))}" for t, m in zip(per, bs)),
            "-",
            cmd["batch_size"],
            leader(bs, "data.batch_size=10"),
        ),
    ]
    rows += [_row(*r) for r in table]
    lines = [
        "<!-- Generated by scripts/report.py (src/backprop_lab/reporting/readme.py) from its runs: "
        "don't edit by hand. -->",
        f"Measured by {provenance(res)}. Epochs: "
        + ", ".join(f"{k} {v}" for k, v in plan.epochs.items())
        + f". Every run, figure and reason: [{docs}results.md]({docs}results.md).",
        "",
        "| Claim | Ours | Published | Command | Verdict |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    if d["name"] == "mnist_subset":
        lines += [
            f"The published accuracies are for full MNIST (50,000 training images); this report trains on "
            f"{d['sizes']['train']:,}, so the accuracies above are not expected to reach them. With the four "
            "MNIST files in `data/MNIST/raw`, `python train.py experiment=nielsen_ch1` and "
            f"`experiment=nielsen_ch3` run the book's settings and schedules ({ANCHORS['nielsen_ch1'][2]} and "
            f"{ANCHORS['nielsen_ch3'][2]} epochs); the report does not run them (it trains on the embedded "
            "digits or Fashion-MNIST).",
            "",
        ]
    lines += [
        *other_reports(out, docs),
        *([""] if other_reports(out) else []),
        *(f"![{Path(f).stem.replace('_', ' ')}]({docs}{f})" for f in figures),
    ]
    return "\n".join(lines)


def _region(text: str, path: Path) -> tuple[int, int]:
    """Offsets of the text between the markers; a one-line ConfigError when they are missing or out of order."""
    n_begin, n_end = text.count(BEGIN), text.count(END)
    if n_begin != 1 or n_end != 1 or text.index(BEGIN) > text.index(END):
        raise ConfigError(
            f"{path} has {n_begin} {BEGIN} and {n_end} {END} markers; the generated results need "
            f"exactly one of each, in that order, around the generated part of its Results section "
            f"(add them, or pass --no-readme)"
        )
    return text.index(BEGIN) + len(BEGIN), text.index(END)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(
            f"cannot read the README {path}: {e.strerror or type(e).__name__} (pass --readme PATH or --no-readme)"
        ) from None


def check_readme(path: str | Path) -> None:
    """Raise the one-line ConfigError write_readme would, before any training starts."""
    _region(_read(Path(path)), Path(path))


def write_readme(path: str | Path, summary: str) -> None:
    """Replace exactly the text between the markers with summary (on its own lines); the rest is kept byte for byte."""
    path = Path(path)
    text = _read(path)
    start, end = _region(text, path)
    path.write_bytes((text[:start] + "\n" + summary.strip("\n") + "\n" + text[end:]).encode("utf-8"))

"""The report's text: docs/results.md (every claim with its runs), and the facts and verdicts the
README's summary (readme.py) shares with it, all read from the results `report.collect` returns,
never typed in. Numbers are means with their 95% intervals; verdicts come from paired differences."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from backprop_lab.inspection.delta_norms import hidden_mean
from backprop_lab.paths import PROJECT_ROOT
from backprop_lab.stats import summary

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
# NNDL ch. 5's hidden-layer norms ||delta^l|| at initialisation for [784, 30 x k, 10] sigmoid nets, by k.
PUBLISHED = {2: [0.0657, 0.309], 3: [0.0118, 0.0600, 0.283], 4: [0.00298, 0.0171, 0.0695, 0.285]}
# Published accuracies (NNDL): value, the metric it compares with, the book's epochs.
ANCHORS = {
    "nielsen_ch1": (0.9542, "test/acc", 30),
    "nielsen_ch3": (0.9804, "val/acc_best", 60),
    "loss=mse": (0.9542, "test/acc", 30),
    "loss=cross_entropy": (0.9549, "test/acc", 30),
}
TIE = 0.01  # accuracies closer than this (1 point) count as level: a few validation images


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3g}" for v in values)


def table_at_init(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: per run (`variant`, `at_init` norms of several nets), the mean hidden-layer norms, the
    published ones for sigmoid nets, and last / first hidden layer."""
    rows = ["| net | ‖delta^l‖ at init, l = 1.. (mean) | published | last / first |", "|---|---|---|---|"]
    for m in runs:
        mean = hidden_mean(m["at_init"])
        book = PUBLISHED.get(len(mean)) if "sigmoid" in m["variant"] else None
        rows.append(
            f"| `{m['variant']}` | {fmt(mean)} | {fmt(book) if book else '-'} | {mean[-1] / mean[0]:.3g}"
            f"{f' (published {book[-1] / book[0]:.3g})' if book else ''} |"
        )
    return rows


# (experiment, title, claim, the run the others are compared with)
SECTIONS = (
    (
        "mse_vs_cross_entropy",
        "Quadratic cost vs cross-entropy",
        "NNDL ch. 3: with sigmoid outputs the quadratic "
        "cost's gradient carries sigma'(z^L), so saturated outputs learn slowly; cross-entropy cancels it. Published "
        "after 30 epochs: 95.42% (quadratic, ch. 1) and 95.49% (cross-entropy).",
        "loss=mse",
    ),
    (
        "optimizers",
        "Optimizers",
        "The lecture: momentum dampens the oscillations of plain SGD and speeds up "
        "learning. A fair test: plain SGD, momentum and Nesterov momentum at the same learning rate (mu 0.9 makes "
        "momentum's effective step on a steady gradient lr/(1-mu), 10x SGD's), Adam at its usual 0.001, and as a "
        "control plain SGD at momentum's effective step. No published number.",
        "optimizer=sgd",
    ),
    (
        "activations",
        "Hidden activations",
        "tanh and ReLU hidden units learn faster than sigmoids. No published number.",
        "activation=sigmoid",
    ),
    (
        "batch_size",
        "Mini-batch size",
        "A mini-batch is one matrix product, so an epoch takes far less time than "
        "with single examples; very large batches make few updates per epoch. All at lr 0.5 on the mean cost: "
        "batch 1 takes the most (and noisiest) steps, batch 1000 the fewest. No published number.",
        "data.batch_size=10",
    ),
    (
        "vanishing_gradients",
        "Vanishing gradients",
        "NNDL ch. 5: in deep sigmoid nets ‖delta^l‖ = ‖dC/db^l‖ "
        "(mean cost over the first 1,000 training images) shrinks layer by layer towards the input; with 4 hidden "
        "layers the first learns ~100x slower than the last. Our nets use network2.py's init, as the book's ch. 5 "
        "numbers do: weights N(0, 1/n_in), biases N(0, 1) (`model.init=scaled`); sigmoid outputs, cross-entropy.",
        "activation=sigmoid model.hidden=[30]",
    ),
    (
        "exploding_gradients",
        "Exploding gradients",
        "With large weights every layer multiplies delta by more "
        "than 1 going backwards, so the first layers get huge gradients and SGD blows up; clipping the gradient "
        "norm keeps the steps bounded. No published number.",
        "trainer.gradient_clip_val=null",
    ),
)


# ----------------------------------------------------------------------------- reading the runs


def pct(v: float | list | None) -> str:
    """One value as a percentage; a population's values as their mean ± the 95% interval's half-width."""
    if isinstance(v, list):
        s = summary(v)
        if s["mean"] is None:
            return "-"
        return f"{100 * s['mean']:.2f}%" + (f" ± {100 * s['ci95']:.2f}" if s["ci95"] is not None else "")
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "-"


def mean(v: list | None) -> float | None:
    return summary(v)["mean"] if v else None


def members(m: dict, key: str) -> list[float | None] | None:
    """A run's per-member values of `key` (one per seed, in seed order), or None when it has none."""
    if m.get("members"):
        values = [x.get(key) for x in m["members"]]
        return values if any(v is not None for v in values) else None
    return [m[key]] if m.get(key) is not None else None


def epoch1(m: dict) -> list[float] | None:
    """val/acc after the first epoch, per member."""
    h = m.get("history") or {}
    if h.get("val/acc_members"):
        return list(h["val/acc_members"][0])
    return [h["val/acc"][0]] if h.get("val/acc") else None


def best(m: dict) -> list[float | None] | None:
    return members(m, "val/acc_best")


def test_acc(m: dict) -> list[float | None] | None:
    return members(m, "test/acc")


def status(m: dict) -> str:
    return m["status"] + (f" at step {m['stopped_at_step']}" if m.get("stopped_at_step") is not None else "")


def hidden_layers(m: dict) -> int:
    return m["variant"].count("30")


def accuracy_verdict(res: dict, key: str, m: dict, name: str) -> tuple[float | None, float, str]:
    """Ours, the published accuracy and the verdict, with the reasons for a miss."""
    anchor, metric, book_epochs = ANCHORS[key]
    ours, n, epochs = m.get(metric), (m.get("data_sizes") or res["data"]["sizes"])["train"], res["plan"].epochs[name]
    fashion = res["data"]["name"] == "fashion_mnist"
    why = ["Fashion-MNIST (clothes) is a harder task than MNIST digits"] if fashion else []
    if n < 50_000:
        why.append(f"{n:,} training images instead of the book's 50,000")
    if epochs < book_epochs:
        why.append(f"{epochs} of the book's {book_epochs} epochs")
    gap = 100 * (anchor - ours) if ours is not None else None
    verdict = (
        "no result: " + status(m)
        if gap is None
        else "reproduced (within 1 point)"
        if gap <= 1
        else f"misses by {gap:.1f} points: " + ("; ".join(why) or "no known cause")
    )
    return ours, anchor, verdict


def paired(x: list, y: list) -> dict:
    """The difference x - y per seed (the members of two runs share their seeds), summarised."""
    return summary([a - b for a, b in zip(x, y) if a is not None and b is not None])


def compare(a: dict, b: dict, what: str, metrics: tuple[tuple[str, Callable], ...]) -> str:
    """Run a against run b on each metric: both values, the paired difference with its 95% interval, and
    the verdict the interval gives (beat: all of it above 0; lost: all below; level: it contains 0).
    Runs of one seed have no interval: there, level means within TIE."""
    text = []
    for label, get in metrics:
        x, y = get(a), get(b)
        d = paired(x, y) if x and y else {"mean": None}
        if d["mean"] is None:
            text.append(f"{label} {pct(x)} vs {pct(y)} (no result: {status(a)} / {status(b)})")
            continue
        diff, ci = d["mean"], d["ci95"]
        if ci is None:
            word = "beat" if diff > TIE else "lost" if -diff > TIE else f"level: within {100 * TIE:g} point"
            text.append(f"{label} {pct(x)} vs {pct(y)}, {100 * diff:+.1f} points ({word}, one seed)")
            continue
        word = "beat" if diff - ci > 0 else "lost" if diff + ci < 0 else "level: the interval contains 0"
        text.append(
            f"{label} {pct(x)} vs {pct(y)}, paired difference {100 * diff:+.2f} ± {100 * ci:.2f} points "
            f"over {d['n']} seeds ({word})"
        )
    return f"`{a['variant']}` against {what}: " + "; ".join(text) + "."


VAL = (("val/acc after epoch 1", epoch1), ("best val/acc", best))


def momentum_verdict(runs: list[dict]) -> str:
    """Whether momentum beat plain SGD at the same learning rate, and SGD at momentum's effective step."""
    by = {m["variant"]: m for m in runs}
    mom, sgd = by.get("optimizer=momentum"), by.get("optimizer=sgd")
    if not (mom and sgd):
        return "no momentum and plain SGD runs to compare."
    text = [compare(mom, sgd, f"plain SGD at the same lr {sgd['lr']:g}", VAL)]
    text += [
        compare(
            mom,
            m,
            f"plain SGD at lr {m['lr']:g}, momentum's effective step lr/(1-mu) with mu "
            f"{mom['momentum']:g} (what momentum adds beyond a larger step)",
            VAL,
        )
        for m in runs
        if m["variant"].startswith("optimizer=sgd optimizer.lr=")
    ]
    return " ".join(text)


def cost_verdict(runs: list[dict]) -> str:
    by = {m["variant"]: m for m in runs}
    ce, mse = by.get("loss=cross_entropy"), by.get("loss=mse")
    if not (ce and mse):
        return "no runs of both costs to compare."
    return compare(
        ce,
        mse,
        f"the quadratic cost, each at its own tuned rate (lr {ce['lr']:g} and {mse['lr']:g})",
        (VAL[0], ("test/acc", test_acc)),
    )


def leader(runs: list[dict], baseline: str) -> str:
    done = [m for m in runs if epoch1(m) is not None]
    if not done:
        return "no run finished an epoch."
    first, top = max(done, key=lambda m: mean(epoch1(m))), max(done, key=lambda m: mean(best(m)) or 0)
    base = next((m for m in done if m["variant"] == baseline), None)
    vs = f" (`{baseline}`: {pct(epoch1(base))})" if base and base is not first else ""
    return (
        f"after one epoch `{first['variant']}` leads with {pct(epoch1(first))}{vs}; best over the run: "
        f"`{top['variant']}` with {pct(best(top))}."
    )


def gradient_facts(res: dict) -> dict[str, Any]:
    """The vanishing and exploding numbers both texts quote: per sigmoid depth k the mean hidden-layer norms at
    init and (ours, published) ‖delta^k‖/‖delta^1‖; the 4-layer relu ratio; the exploding net's norms."""
    mean = {(hidden_layers(m), "relu" in m["variant"]): hidden_mean(m["at_init"]) for m in res["vanishing_gradients"]}
    sigmoid = {k: v for (k, relu), v in mean.items() if not relu}
    ratio = {k: (v[-1] / v[0], PUBLISHED[k][-1] / PUBLISHED[k][0]) for k, v in sigmoid.items() if k in PUBLISHED}
    relu4 = mean.get((4, True))
    explode = res["exploding_at_init"][:-1]
    return {
        "sigmoid": sigmoid,
        "ratio": ratio,
        "relu_ratio": relu4[-1] / relu4[0] if relu4 else None,
        "explode": explode,
        "explode_ratio": explode[0] / explode[-1],
        "explode_verdict": ("grows" if explode[0] > explode[-1] else "does not grow") + " towards the input",
    }


def ratio_verdict(g: dict, depths: tuple[int, ...]) -> str:
    ok = all(book / 3 <= ours <= 3 * book for ours, book in (g["ratio"][k] for k in depths))
    return "reproduced (last / first within 3x of the published)" if ok else "differs by more than 3x"


def provenance(res: dict) -> str:
    """The command, mode, time and data of the report."""
    plan, d = res["plan"], res["data"]
    flag = {"quick": "--quick ", "tiny": "--tiny "}.get(plan.mode, "") + f"--workers {res.get('workers', 1)} "
    reused = f", reusing {res['reused']} finished runs" if res["reused"] else ""
    return (
        f"`python scripts/report.py {flag}--data {d['name']}{' --reuse' if reused else ''}` ({plan.mode} mode, "
        f"{res['n_runs']} runs, {res.get('workers', 1)} at a time) in {res['seconds'] / 60:.1f} min{reused} "
        "(training time of all runs: "
        f"{res['train_seconds'] / 60:.1f} min) on {d['source']} (train/val/test "
        f"{d['sizes']['train']}/{d['sizes']['val']}/{d['sizes']['test']})"
    )


def other_reports(out: Path, prefix: str = "") -> list[str]:
    others = sorted(p.parent.name for p in out.glob("*/results.md"))
    return ["Other reports: " + ", ".join(f"[{o}]({prefix}{o}/results.md)" for o in others)] if others else []


# ----------------------------------------------------------------------------- results.md


def _accuracy_row(res: dict, key: str, m: dict, name: str) -> str:
    ours, anchor, verdict = accuracy_verdict(res, key, m, name)
    return f"| {key} ({ANCHORS[key][1]}) | {pct(members(m, ANCHORS[key][1]))} | {pct(anchor)} | {verdict} |"


def _runs_table(runs: list[dict]) -> list[str]:
    rows = ["| run | status | val/acc after epoch 1 | best val/acc | test/acc | epochs | s/epoch |", "|---" * 7 + "|"]
    for m in runs:
        e = len((m.get("history") or {}).get("epoch", []))
        per = f"{m['train_seconds'] / e:.2f}" if e and "train_seconds" in m else "-"
        rows.append(
            f"| `{m['variant'] or 'run'}` | {status(m)} | {pct(epoch1(m))} | {pct(best(m))} "
            f"| {pct(test_acc(m))} | {e} | {per} |"
        )
    return rows


def markdown(res: dict[str, Any], out: Path) -> str:
    plan, cmd, g = res["plan"], res["commands"], gradient_facts(res)
    deep = [m for m in res["vanishing_gradients"] if hidden_layers(m) == 4]
    runs = Path(res["runs_dir"])
    runs = runs.relative_to(PROJECT_ROOT) if runs.is_relative_to(PROJECT_ROOT) else runs
    r4, book4 = g["ratio"][4]
    lines = [
        "# The lecture's claims, reproduced",
        "",
        f"Written by {provenance(res)}; runs in `{runs}`. Every number below is read from those runs. Epochs: "
        + ", ".join(f"{k} {v}" for k, v in plan.epochs.items())
        + "".join(f"; {k} also {' '.join(v)}" for k, v in plan.extra.items())
        + ".",
        *(["", *other_reports(out)] if other_reports(out) else []),
        "",
        "| claim | ours | published | verdict |",
        "|---|---|---|---|",
        _accuracy_row(res, "nielsen_ch1", res["nielsen_ch1"], "nielsen_ch1"),
        _accuracy_row(res, "nielsen_ch3", res["nielsen_ch3"], "nielsen_ch3"),
        *(_accuracy_row(res, m["variant"], m, "mse_vs_cross_entropy") for m in res["mse_vs_cross_entropy"]),
        f"| vanishing: ‖delta^4‖ / ‖delta^1‖ at init, 4 sigmoid hidden layers | {r4:.3g} | {book4:.3g} | "
        f"{ratio_verdict(g, (4,))} |",
        f"| exploding: ‖delta^1‖ / ‖delta^4‖ at init, 4x100 ReLU, N(0,1) | {g['explode_ratio']:.3g} | - | "
        f"{g['explode_verdict']} |",
        "",
        "## NNDL ch. 1 and ch. 3 networks",
        "",
        "Published: 95.42% (ch. 1: 784-30-10, quadratic cost, test data, "
        "best of 30 epochs) and 98.04% (ch. 3: 784-100-10, cross-entropy, L2, validation data, 60 epochs), both with "
        "50,000 training images.",
        "",
        "![nielsen.png](nielsen.png)",
        "",
        "```",
        cmd["nielsen_ch1"],
        cmd["nielsen_ch3"],
        "```",
        "",
        *_runs_table([{**res[n], "variant": n} for n in ("nielsen_ch1", "nielsen_ch3")]),
        "",
        "What the hidden units respond to (rows of W^1 as images). With N(0,1) weights (ch. 1) the learned change is "
        "small next to the initial noise; with N(0,1/n_in) weights (ch. 3) stroke- and digit-shaped patterns show:",
        "",
        "![hidden_units.png](hidden_units.png)",
    ]
    for name, title, claim, baseline in SECTIONS:
        lines += ["", f"## {title}", "", claim, "", f"![{name}.png]({name}.png)", "", "```", cmd[name], "```", ""]
        if name == "vanishing_gradients":
            lines += [
                f"Measured on the first {res['n_images']:,} training images; {plan.init_seeds} networks per "
                f"architecture at init (seeds {res['seed']}, {res['seed'] + 1}, ...).",
                "",
                *table_at_init(res["vanishing_gradients"]),
                "",
                "During training (4 hidden layers, hidden-layer norms at init and after the last epoch): "
                + "; ".join(
                    f"`{m['variant']}` {fmt(m['delta_norms'][0][:-1])} -> {fmt(m['delta_norms'][-1][:-1])}"
                    for m in deep
                )
                + ".",
                "",
                "![vanishing_training.png](vanishing_training.png)",
                "",
            ]
        if name == "exploding_gradients":
            lines += [f"‖delta^l‖ at initialisation, hidden layers 1..4: {fmt(g['explode'])}.", ""]
        lines += [*_runs_table(res[name]), "", "Ours: " + leader(res[name], baseline)]
        if name == "mse_vs_cross_entropy":
            lines += ["", "Measured: " + cost_verdict(res[name])]
        if name == "optimizers":
            lines += ["", "Measured: " + momentum_verdict(res[name])]
        if name == "batch_size" and res["batch_size_skipped"]:
            lines += ["", f"Skipped (larger than the training split): {', '.join(res['batch_size_skipped'])}."]
    return "\n".join(lines) + "\n"

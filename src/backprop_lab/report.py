"""The lecture's claims, reproduced: run conf/experiment/*, draw one figure per claim, write results.md.

`build(mode, data, out, runs_dir)` composes each experiment as `python train.py -m experiment=NAME`
would (one config per combination of its `hydra.sweeper.params`), trains every run through
`train(cfg)` into `runs_dir/<experiment>/<overrides>/`, measures what the claim is about and writes
PNGs plus `results.md` into `out`: per claim the figure, the command, our numbers (read from the
runs, never typed in) and the published ones. Modes (`make_plan`): `tiny` for tests, `quick` (a few
minutes on the embedded digits), `full` (as close to the published settings as a CPU allows).
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import hydra.utils
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig, OmegaConf, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from backprop_lab.errors import Diverged
from backprop_lab.paths import PROJECT_ROOT
from backprop_lab.evaluation import load_checkpoint
from backprop_lab.gradients import (PUBLISHED, at_init, first_images, fmt, hidden_mean, plot_at_init, plot_by_epoch,
                                    plot_by_layer, table_at_init)
from backprop_lab.training import train
from backprop_lab.visuals import hidden_unit_tiles, layer_parameters

log = logging.getLogger("backprop_lab")
CONF = PROJECT_ROOT / "conf"
EXPERIMENTS = ("nielsen_ch1", "nielsen_ch3", "mse_vs_cross_entropy", "optimizers", "activations",
               "batch_size", "vanishing_gradients", "exploding_gradients")
BOOK_LAMBDA = 5.0  # NNDL ch. 3's L2 parameter; weight_decay = lambda / n_train (see nielsen_ch3.yaml)
# Published accuracies (NNDL): value, the metric it compares with, the book's epochs (ch. 5's norms: gradients.py).
ANCHORS = {"nielsen_ch1": (0.9542, "test/acc", 30), "nielsen_ch3": (0.9804, "val/acc_best", 60),
           "loss=mse": (0.9542, "test/acc", 30), "loss=cross_entropy": (0.9549, "test/acc", 30)}
TRACKING = "trainer._target_=backprop_lab.gradients.tracking_trainer"  # adds DeltaNormsPerEpoch
QUIET = ("trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "log.pictures_every_n_epochs=0", "log.histogram_every_n_steps=0")


@dataclass(frozen=True)
class Plan:
    """What one report mode runs: overrides for every run, epochs and extra overrides per experiment."""

    mode: str
    data: str
    common: tuple[str, ...]
    epochs: dict[str, int]
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)
    init_seeds: int = 5  # networks per architecture for the delta norms at initialisation


def make_plan(mode: str, data: str = "mnist_subset") -> Plan:
    """`tiny`: 200 images, 1 epoch (tests). `quick`: few epochs. `full`: what a shared 2-core machine
    allows in ~15 min: on the 4,000 embedded digits the book's 30 epochs for ch. 1, fewer elsewhere; on
    Fashion-MNIST (~16 s per epoch of 55,000 images on an idle core) 2 epochs, sweeps on 10,000 or 5,000."""
    names = EXPERIMENTS
    if mode == "tiny":
        return Plan(mode, data, (f"data={data}", "data.train_size=200", "data.val_size=100", "data.test_size=100"),
                    dict.fromkeys(names, 1), init_seeds=2)
    if mode == "quick":
        return Plan(mode, data, (f"data={data}",), dict(zip(names, (5, 5, 5, 3, 3, 2, 3, 3))),
                    {"batch_size": ("data.train_size=2000",)})
    if mode != "full":
        raise ValueError(f"unknown mode {mode!r} (tiny, quick or full)")
    if data == "mnist_subset":
        return Plan(mode, data, (f"data={data}",), dict(zip(names, (30, 30, 15, 10, 10, 2, 5, 5))))
    mid, small = ("data.train_size=10000",), ("data.train_size=5000",)
    return Plan(mode, data, (f"data={data}",), dict.fromkeys(names, 2),
                {"mse_vs_cross_entropy": mid, "optimizers": mid, "activations": mid, "batch_size": small,
                 "vanishing_gradients": small, "exploding_gradients": small})


def compose_cfg(overrides: list[str], out_dir: Path | None = None, hydra_node: bool = False) -> DictConfig:
    """conf/train.yaml with these overrides, writing into out_dir (as the tests compose it)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=hydra_node)
    if out_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(out_dir)
    return cfg


def sweep_variants(name: str) -> list[list[str]]:
    """Every combination of the experiment's swept values as overrides, in Hydra's BasicSweeper order."""
    cfg = compose_cfg([f"experiment={name}"], hydra_node=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    parser = OverridesParser.create()
    axes = [[f"{k}={v}" for v in parser.parse_override(f"{k}={v}").sweep_string_iterator()] for k, v in params.items()]
    return [list(combo) for combo in itertools.product(*axes)]


class Runner:
    """Trains runs into `runs_dir/<experiment>/<variant>` and keeps their metrics; `reuse` skips runs
    whose folder already holds results for the identical config (to redraw without retraining)."""

    def __init__(self, plan: Plan, runs_dir: Path, reuse: bool = False, echo: Callable[[str], None] = log.info) -> None:
        self.plan, self.runs_dir, self.reuse, self.echo = plan, Path(runs_dir), reuse, echo
        self._data: dict[str, Any] = {}
        self.reused, self.train_seconds = 0, 0.0

    def overrides(self, name: str, variant: list[str] = ()) -> list[str]:
        """The experiment's overrides for this mode, without the console settings."""
        ov = [*self.plan.common, *self.plan.extra.get(name, ()), f"trainer.max_epochs={self.plan.epochs[name]}"]
        if name == "nielsen_ch3":  # lambda / n for the training set actually used
            n = self.datamodule(compose_cfg([f"experiment={name}", *ov])).sizes["train"]
            ov.append(f"optimizer.weight_decay={BOOK_LAMBDA / n:.4g}")
        return [*ov, *variant]

    def command(self, name: str, sweep: bool = False) -> str:
        return " ".join(["python train.py", *(["-m"] if sweep else []), f"experiment={name}", *self.overrides(name)])

    def cfg(self, name: str, variant: list[str], run_dir: Path) -> DictConfig:
        return compose_cfg([f"experiment={name}", *QUIET, *self.overrides(name, variant)], run_dir)

    def datamodule(self, cfg: DictConfig):
        """The set-up data module for cfg.data, loaded once per distinct data config."""
        key = OmegaConf.to_yaml(cfg.data, resolve=True)
        if key not in self._data:
            dm = hydra.utils.instantiate(cfg.data)
            dm.prepare_data()
            dm.setup("fit")
            self._data[key] = dm
        return self._data[key]

    def _fresh(self, cfg: DictConfig, run_dir: Path, result: str) -> dict | None:
        """The stored result when reusing and the config is unchanged; else an emptied run folder."""
        saved, out = run_dir / "report_config.yaml", run_dir / result
        if self.reuse and saved.is_file() and out.is_file() and saved.read_text() == OmegaConf.to_yaml(cfg):
            return json.loads(out.read_text())
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        saved.write_text(OmegaConf.to_yaml(cfg))
        return None

    def run(self, name: str, variant: list[str] = ()) -> dict[str, Any]:
        """train(cfg) for one variant; a diverged run returns the metrics.json it left (status, history)."""
        run_dir = self.runs_dir / name / (",".join(v for v in variant if v != TRACKING) or "run")
        cfg = self.cfg(name, list(variant), run_dir)
        if (stored := self._fresh(cfg, run_dir, "metrics.json")) is None:
            t0 = time.perf_counter()
            stored = _train(cfg, run_dir)
            self.echo(f"{run_dir.relative_to(self.runs_dir)}: {_status(stored)}, val/acc_best "
                      f"{stored.get('val/acc_best', float('nan')):.4f} ({time.perf_counter() - t0:.0f} s)")
        else:
            self.reused += 1
        stored["history"] = full_history(run_dir, stored)
        self.train_seconds += stored.get("train_seconds", 0)
        return {**stored, "variant": " ".join(variant), "run_dir": str(run_dir)}

    def tracked(self, name: str, variant: list[str], seeds: int) -> dict[str, Any]:
        """A run whose trainer measures the delta norms of the first 1,000 training images at init and after
        every epoch (`delta_norms`), plus those of `seeds` fresh networks (`at_init`)."""
        m = self.run(name, [TRACKING, *variant])
        m["delta_norms"] = json.loads((Path(m["run_dir"]) / "delta_norms.json").read_text())["delta_norms"]
        cfg = self.cfg(name, list(variant), self.runs_dir / "unused")
        return {**m, "at_init": at_init(cfg, *first_images(self.datamodule(cfg)), seeds), "variant": " ".join(variant)}


def full_history(run_dir: Path, metrics: dict[str, Any]) -> dict[str, list]:
    """metrics.json's per-epoch history, completed from the run's TensorBoard scalars when it is shorter
    than the run: train() tests the best checkpoint, and loading it restores EpochHistory to that epoch."""
    history = metrics.get("history") or {}
    if len(history.get("epoch", [])) >= (metrics.get("epochs") or 0):
        return history
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = {"train/loss": "train/loss_epoch", "train/acc": "train/acc", "val/loss": "val/loss", "val/acc": "val/acc"}
    logged = events.Tags()["scalars"]
    full = {k: [round(e.value, 6) for e in events.Scalars(tag)] for k, tag in tags.items() if tag in logged}
    return {"epoch": list(range(1, len(full.get("val/acc", [])) + 1)), **full}


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    try:
        return train(cfg)
    except Diverged:  # train() wrote the status, the error and the history so far (an interrupt propagates)
        return json.loads((run_dir / "metrics.json").read_text())


def collect(runner: Runner) -> dict[str, Any]:
    """Run every experiment; returns what the figures and the text need."""
    r = runner
    cfg = r.cfg("nielsen_ch1", [], r.runs_dir / "unused")
    dm = r.datamodule(cfg)
    res: dict[str, Any] = {"data": {"source": dm.source, "sizes": dm.sizes, "name": r.plan.data}}
    for name in ("nielsen_ch1", "nielsen_ch3"):
        res[name] = r.run(name)
    for name in ("mse_vs_cross_entropy", "optimizers", "activations", "exploding_gradients"):
        res[name] = [r.run(name, v) for v in sweep_variants(name)]
    n = r.datamodule(r.cfg("batch_size", [], r.runs_dir / "unused")).sizes["train"]
    sizes = [v for v in sweep_variants("batch_size") if int(v[0].split("=")[1]) <= n]  # larger: config error
    res["batch_size"] = [r.run("batch_size", v) for v in sizes]
    res["batch_size_skipped"] = [v[0] for v in sweep_variants("batch_size") if v not in sizes]
    res["vanishing_gradients"] = [r.tracked("vanishing_gradients", v, r.plan.init_seeds)
                                  for v in sweep_variants("vanishing_gradients")]
    explode = r.cfg("exploding_gradients", [], r.runs_dir / "unused")
    res["exploding_at_init"] = at_init(explode, *first_images(r.datamodule(explode)))[0]
    res["commands"] = {name: r.command(name, sweep=sweep_variants(name) != [[]]) for name in EXPERIMENTS}
    res["commands"]["vanishing_gradients"] += " " + TRACKING
    res["seed"], res["n_images"] = cfg.seed, len(first_images(dm)[0])
    res["reused"], res["train_seconds"] = r.reused, r.train_seconds
    return res


def build(mode: str = "quick", data: str = "mnist_subset", out: str | Path = "docs", runs_dir: str | Path | None = None,
          reuse: bool = False, echo: Callable[[str], None] = log.info) -> Path:
    """Run the report's experiments and write `out/results.md` and its figures; returns the markdown path."""
    plan = make_plan(mode, data)
    runs = Path(runs_dir) if runs_dir else PROJECT_ROOT / "outputs" / "report" / f"{mode}-{data}"
    runner = Runner(plan, runs, reuse, echo)
    t0 = time.perf_counter()
    res = collect(runner)
    res["seconds"] = time.perf_counter() - t0
    res["runs_dir"], res["plan"] = str(runs), plan
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = draw(res, out)
    md = out / "results.md"
    md.write_text(markdown(res, out))
    echo(f"wrote {md} and {len(figures)} figures in {res['seconds']:.0f} s")
    return md


# ----------------------------------------------------------------------------- figures


def _axes(n: int, title: str) -> tuple[Figure, list]:
    fig = Figure(figsize=(5.2 * n, 3.8), layout="constrained")
    fig.suptitle(title)
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def _curves(ax, runs: list[dict], key: str = "val/acc", label: Callable = lambda m: m["variant"],
            per_epoch: Callable | None = None) -> None:
    """key per epoch for each run; x = epoch, or epoch * per_epoch(m) (e.g. seconds per epoch)."""
    for m in runs:
        h, scale = m.get("history") or {}, 100 if key.endswith("acc") else 1
        tag = "" if m["status"] == "completed" else f" ({_status(m)})"
        x = [e * (per_epoch(m) if per_epoch else 1) for e in h.get("epoch", [])]
        ax.plot(x, [scale * v for v in h.get(key, [])], marker="o", ms=3, label=label(m) + tag)
    ax.set(xlabel="epoch", ylabel=f"{key} (%)" if key.endswith("acc") else key)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _published(ax, value: float, label: str, color: str = "k") -> None:
    ax.axhline(100 * value, ls="--", lw=1, color=color, label=f"published {label}: {100 * value:.2f}%")
    ax.legend(fontsize=8)


def _hidden(m: dict) -> int:
    return m["variant"].count("30")


def draw(res: dict[str, Any], out: Path) -> list[str]:
    """One PNG per claim into out; returns their names."""
    figs: dict[str, Figure] = {}
    fig, axes = figs["nielsen.png"] = _axes(2, "NNDL ch. 1 and ch. 3 networks")
    for ax, name in zip(axes, ("nielsen_ch1", "nielsen_ch3")):
        _curves(ax, [res[name]], label=lambda m, name=name: name)
        _published(ax, ANCHORS[name][0], ANCHORS[name][1])
    fig, (ax,) = figs["mse_vs_cross_entropy.png"] = _axes(1, "Quadratic cost vs cross-entropy (784-30-10, N(0,1) init)")
    _curves(ax, res["mse_vs_cross_entropy"])
    for color, key in (("C0", "loss=mse"), ("C1", "loss=cross_entropy")):
        _published(ax, ANCHORS[key][0], key, color)
    for name, title in (("optimizers", "Optimizers"), ("activations", "Hidden activations")):
        fig, (a, b) = figs[f"{name}.png"] = _axes(2, f"{title} (784-30-10, softmax + cross-entropy)")
        _curves(a, res[name])
        _curves(b, res[name], "train/loss")
        b.set_yscale("log")
    fig, (ax,) = figs["batch_size.png"] = _axes(1, "Mini-batch size: validation accuracy against training time")
    _curves(ax, res["batch_size"], per_epoch=lambda m: m.get("train_seconds", 0) / max(1, m.get("epochs") or 1))
    ax.set(xscale="log", xlabel="training seconds (train_seconds spread evenly over the epochs)")
    fig, (ax,) = figs["vanishing_gradients.png"] = _axes(1, "‖delta^l‖ at initialisation, first 1,000 training images")
    plot_at_init(ax, res["vanishing_gradients"])
    fig, axes = figs["vanishing_training.png"] = _axes(2, "‖delta^l‖ during training, 4 hidden layers")
    for ax, m in zip(axes, [m for m in res["vanishing_gradients"] if _hidden(m) == 4]):
        plot_by_epoch(ax, m["delta_norms"], m["variant"])
    fig, (a, b) = figs["exploding_gradients.png"] = _axes(2, "Exploding gradients: 4x100 ReLU, N(0,1) init")
    plot_by_layer(a, res["exploding_at_init"], label="at initialisation (last: output layer)")
    a.legend(fontsize=8)
    _curves(b, res["exploding_gradients"])
    fig, axes = figs["hidden_units.png"] = _axes(2, "Hidden units: rows of W^1 as 28x28 images")
    for ax, name, init in zip(axes, ("nielsen_ch1", "nielsen_ch3"), ("N(0,1)", "N(0,1/n_in)")):
        m = res[name]
        W1 = layer_parameters(load_checkpoint(m.get("best_ckpt") or f"{m['run_dir']}/checkpoints/last.ckpt").net)[0][0]
        ax.imshow(hidden_unit_tiles(W1)[0].numpy(), cmap="gray")
        ax.set_title(f"{name}, {init} init", fontsize=9)
        ax.axis("off")
    for name, (fig, _) in figs.items():
        fig.savefig(out / name, dpi=100)
    return list(figs)


# ----------------------------------------------------------------------------- results.md

# (experiment, title, claim, the run the others are compared with)
SECTIONS = (
    ("mse_vs_cross_entropy", "Quadratic cost vs cross-entropy", "NNDL ch. 3: with sigmoid outputs the quadratic "
     "cost's gradient carries sigma'(z^L), so saturated outputs learn slowly; cross-entropy cancels it. Published "
     "after 30 epochs: 95.42% (quadratic, ch. 1) and 95.49% (cross-entropy).", "loss=mse"),
    ("optimizers", "Optimizers", "Momentum and adaptive steps make faster progress than plain SGD. No published "
     "number.", "optimizer=sgd"),
    ("activations", "Hidden activations", "tanh and ReLU hidden units learn faster than sigmoids. No published "
     "number.", "activation=sigmoid"),
    ("batch_size", "Mini-batch size", "A mini-batch is one matrix product, so an epoch takes far less time than "
     "with single examples; very large batches make few updates per epoch. All at lr 0.5 on the mean cost: "
     "batch 1 takes the most (and noisiest) steps, batch 1000 the fewest. No published number.",
     "data.batch_size=10"),
    ("vanishing_gradients", "Vanishing gradients", "NNDL ch. 5: in deep sigmoid nets ‖delta^l‖ = ‖dC/db^l‖ "
     "(mean cost over the first 1,000 training images) shrinks layer by layer towards the input; with 4 hidden "
     "layers the first learns ~100x slower than the last. Our nets use network2.py's init, as the book's ch. 5 "
     "numbers do: weights N(0, 1/n_in), biases N(0, 1) (`model.init=scaled`); sigmoid outputs, cross-entropy.",
     "activation=sigmoid model.hidden=[30]"),
    ("exploding_gradients", "Exploding gradients", "With large weights every layer multiplies delta by more "
     "than 1 going backwards, so the first layers get huge gradients and SGD blows up; clipping the gradient "
     "norm keeps the steps bounded. No published number.", "trainer.gradient_clip_val=null"),
)


def _pct(v: float | None) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "-"


def _epoch1(m: dict) -> float | None:
    return ((m.get("history") or {}).get("val/acc") or [None])[0]


def _status(m: dict) -> str:
    return m["status"] + (f" at step {m['stopped_at_step']}" if m.get("stopped_at_step") is not None else "")


def _accuracy_row(res: dict, key: str, m: dict, name: str) -> str:
    """`| claim | ours | published | verdict |` for a published accuracy, with the reasons for a miss."""
    anchor, metric, book_epochs = ANCHORS[key]
    ours, n, epochs = m.get(metric), (m.get("data_sizes") or res["data"]["sizes"])["train"], res["plan"].epochs[name]
    why = ["Fashion-MNIST (clothes) is a harder task than MNIST digits"] if res["data"]["name"] == "fashion_mnist" else []
    if n < 50_000:
        why.append(f"{n:,} training images instead of the book's 50,000")
    if epochs < book_epochs:
        why.append(f"{epochs} of the book's {book_epochs} epochs")
    gap = 100 * (anchor - ours) if ours is not None else None
    verdict = ("no result: " + _status(m) if gap is None else "reproduced (within 1 point)" if gap <= 1
               else f"misses by {gap:.1f} points: " + ("; ".join(why) or "no known cause"))
    return f"| {key} ({metric}) | {_pct(ours)} | {_pct(anchor)} | {verdict} |"


def _runs_table(runs: list[dict]) -> list[str]:
    rows = ["| run | status | val/acc after epoch 1 | best val/acc | test/acc | epochs | s/epoch |", "|---" * 7 + "|"]
    for m in runs:
        e = len((m.get("history") or {}).get("epoch", []))
        per = f"{m['train_seconds'] / e:.2f}" if e and "train_seconds" in m else "-"
        rows.append(f"| `{m['variant'] or 'run'}` | {_status(m)} | {_pct(_epoch1(m))} | {_pct(m.get('val/acc_best'))} "
                    f"| {_pct(m.get('test/acc'))} | {e} | {per} |")
    return rows


def _leader(runs: list[dict], baseline: str) -> str:
    done = [m for m in runs if _epoch1(m) is not None]
    if not done:
        return "no run finished an epoch."
    first, best = max(done, key=_epoch1), max(done, key=lambda m: m.get("val/acc_best") or 0)
    base = next((m for m in done if m["variant"] == baseline), None)
    vs = f" (`{baseline}`: {_pct(_epoch1(base))})" if base and base is not first else ""
    return (f"after one epoch `{first['variant']}` leads with {_pct(_epoch1(first))}{vs}; best over the run: "
            f"`{best['variant']}` with {_pct(best.get('val/acc_best'))}.")


def _vanishing(res: dict) -> tuple[list[str], float, float]:
    """The at-init table and ‖delta^4‖/‖delta^1‖ of the 4-hidden-layer sigmoid net, ours and published."""
    deep = [m for m in res["vanishing_gradients"] if _hidden(m) == 4]
    mean = hidden_mean(next(m for m in deep if "sigmoid" in m["variant"])["at_init"])
    rows = [*table_at_init(res["vanishing_gradients"]), "", "During training (4 hidden layers, hidden-layer norms at "
            "init and after the last epoch): " + "; ".join(f"`{m['variant']}` {fmt(m['delta_norms'][0][:-1])} -> "
            f"{fmt(m['delta_norms'][-1][:-1])}" for m in deep) + ".", "",
            "![vanishing_training.png](vanishing_training.png)"]
    return rows, mean[-1] / mean[0], PUBLISHED[4][-1] / PUBLISHED[4][0]


def markdown(res: dict[str, Any], out: Path) -> str:
    plan, d, cmd = res["plan"], res["data"], res["commands"]
    vanishing, r4, book4 = _vanishing(res)
    explode = res["exploding_at_init"][:-1]
    flag = {"quick": "--quick ", "tiny": "--tiny "}.get(plan.mode, "")
    reused = f", reusing {res['reused']} finished runs" if res["reused"] else ""
    runs = Path(res["runs_dir"])
    runs = runs.relative_to(PROJECT_ROOT) if runs.is_relative_to(PROJECT_ROOT) else runs
    others = sorted(p.parent.name for p in out.glob("*/results.md"))
    lines = [
        "# The lecture's claims, reproduced", "",
        f"Written by `python scripts/report.py {flag}--data {d['name']}{' --reuse' if reused else ''}` ({plan.mode} mode) "
        f"in {res['seconds'] / 60:.1f} min{reused} (training time of all runs: {res['train_seconds'] / 60:.1f} min) "
        f"on {d['source']} "
        f"(train/val/test {d['sizes']['train']}/{d['sizes']['val']}/{d['sizes']['test']}; runs in `{runs}`). "
        "Every number below is read from those runs. Epochs: " + ", ".join(f"{k} {v}" for k, v in plan.epochs.items())
        + "".join(f"; {k} also {' '.join(v)}" for k, v in plan.extra.items()) + ".",
        *(["", "Other reports: " + ", ".join(f"[{o}]({o}/results.md)" for o in others)] if others else []),
        "", "| claim | ours | published | verdict |", "|---|---|---|---|",
        _accuracy_row(res, "nielsen_ch1", res["nielsen_ch1"], "nielsen_ch1"),
        _accuracy_row(res, "nielsen_ch3", res["nielsen_ch3"], "nielsen_ch3"),
        *(_accuracy_row(res, m["variant"], m, "mse_vs_cross_entropy") for m in res["mse_vs_cross_entropy"]),
        f"| vanishing: ‖delta^4‖ / ‖delta^1‖ at init, 4 sigmoid hidden layers | {r4:.3g} | {book4:.3g} | "
        f"{'reproduced (within 3x)' if book4 / 3 <= r4 <= 3 * book4 else 'differs by more than 3x'} |",
        f"| exploding: ‖delta^1‖ / ‖delta^4‖ at init, 4x100 ReLU, N(0,1) | {explode[0] / explode[-1]:.3g} | - | "
        f"{'grows towards the input' if explode[0] > explode[-1] else 'does not grow'} |",
        "", "## NNDL ch. 1 and ch. 3 networks", "", "Published: 95.42% (ch. 1: 784-30-10, quadratic cost, test data, "
        "best of 30 epochs) and 98.04% (ch. 3: 784-100-10, cross-entropy, L2, validation data, 60 epochs), both with "
        "50,000 training images.", "", "![nielsen.png](nielsen.png)", "", "```",
        cmd["nielsen_ch1"], cmd["nielsen_ch3"], "```", "",
        *_runs_table([{**res[n], "variant": n} for n in ("nielsen_ch1", "nielsen_ch3")]), "",
        "What the hidden units respond to (rows of W^1 as images). With N(0,1) weights (ch. 1) the learned change is "
        "small next to the initial noise; with N(0,1/n_in) weights (ch. 3) stroke- and digit-shaped patterns show:", "",
        "![hidden_units.png](hidden_units.png)",
    ]
    for name, title, claim, baseline in SECTIONS:
        lines += ["", f"## {title}", "", claim, "", f"![{name}.png]({name}.png)", "", "```", cmd[name], "```", ""]
        if name == "vanishing_gradients":
            lines += [f"Measured on the first {res['n_images']:,} training images; {plan.init_seeds} networks per "
                      f"architecture at init (seeds {res['seed']}, {res['seed'] + 1}, ...).", "",
                      *vanishing, ""]
        if name == "exploding_gradients":
            lines += [f"‖delta^l‖ at initialisation, hidden layers 1..4: {fmt(explode)}.", ""]
        lines += [*_runs_table(res[name]), "", "Ours: " + _leader(res[name], baseline)]
        if name == "batch_size" and res["batch_size_skipped"]:
            lines += ["", f"Skipped (larger than the training split): {', '.join(res['batch_size_skipped'])}."]
    return "\n".join(lines) + "\n"

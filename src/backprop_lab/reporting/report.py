"""The lecture's claims, reproduced: run conf/experiment/*, draw one figure per claim, write results.md.

`build(mode, data, out, runs_dir, readme=...)` composes each experiment as `python train.py -m
experiment=NAME` would (one config per combination of its `hydra.sweeper.params`), trains every run
through `train(cfg)` into `runs_dir/<experiment>/<overrides>/`, measures what the claim is about and
writes PNGs (report_figures.py) plus `results.md` into `out`, and, when given a README, its Results
summary (report_markdown.py): per claim the figure, the command, our numbers (read from the runs,
never typed in) and the published ones. Modes (`make_plan`): `tiny` for tests, `quick` (a few minutes
on the embedded digits), `full` (the schedules of conf/experiment/, the book's for ch. 1 and ch. 3).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import multiprocessing
import shutil
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra.utils
import lightning as L
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor

from backprop_lab.errors import Diverged
from backprop_lab.inspection.delta_norms import delta_norms, first_images
from backprop_lab.paths import PROJECT_ROOT
from backprop_lab.reporting.figures import draw
from backprop_lab.reporting.markdown import markdown, status
from backprop_lab.reporting.readme import check_readme, readme_summary, write_readme
from backprop_lab.training.config import compose
from backprop_lab.training.train import build_module, train

log = logging.getLogger("backprop_lab")
EXPERIMENTS = (
    "nielsen_ch1",
    "nielsen_ch3",
    "mse_vs_cross_entropy",
    "optimizers",
    "activations",
    "batch_size",
    "vanishing_gradients",
    "exploding_gradients",
)
BOOK_LAMBDA = 5.0  # NNDL ch. 3's L2 parameter; weight_decay = lambda / n_train (see nielsen_ch3.yaml)
QUIET = (
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "log.pictures_every_n_epochs=0",
    "log.histogram_every_n_steps=0",
)


POPULATION = {"mnist_subset": 10, "fashion_mnist": 5}  # members per run of the full report (seeds seed..)


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
    """Every run is a population (tiny: 2 members, quick: 5, full: POPULATION), so each number comes with its
    95% interval and each comparison with the interval of its paired difference.
    `tiny`: 200 images, 1 epoch (tests). `quick`: few epochs. `full`: every experiment for the epochs its
    config in conf/experiment/ gives (the book's 30 for ch. 1, 60 for ch. 3), all on the full training split.
    On Fashion-MNIST (55,000 images, ~2 s per epoch at batch 10 and ~16 s at batch 1 on one core) the sweeps
    other than the costs' run fewer epochs, to keep that report within ~20 min of training."""
    names = EXPERIMENTS
    if mode == "tiny":
        return Plan(
            mode,
            data,
            (f"data={data}", "population=2", "data.train_size=200", "data.val_size=100", "data.test_size=100"),
            dict.fromkeys(names, 1),
            init_seeds=2,
        )
    if mode == "quick":
        return Plan(
            mode,
            data,
            (f"data={data}", "population=5"),
            dict(zip(names, (5, 5, 5, 3, 3, 2, 3, 3))),
            {"batch_size": ("data.train_size=2000",)},
        )
    if mode != "full":
        raise ValueError(f"unknown mode {mode!r} (tiny, quick or full)")
    epochs = {name: int(compose([f"experiment={name}"]).trainer.max_epochs) for name in names}
    if data == "fashion_mnist":
        epochs.update(optimizers=10, activations=10, batch_size=2, vanishing_gradients=5, exploding_gradients=5)
    return Plan(mode, data, (f"data={data}", f"population={POPULATION[data]}"), epochs)


def at_init(cfg: DictConfig, x: Tensor, y: Tensor, seeds: int = 1) -> list[list[float]]:
    """delta_norms of the networks cfg builds with seeds cfg.seed, cfg.seed+1, ...; seed cfg.seed is
    the very network train(cfg) starts from (it seeds, loads data without torch's RNG, then builds)."""
    out = []
    for k in range(seeds):
        L.seed_everything(cfg.seed + k, verbose=False)
        out.append(delta_norms(build_module(cfg).net, x, y, cfg.loss))
    return out


def sweep_variants(name: str) -> list[list[str]]:
    """Every combination of the experiment's swept values as overrides, in Hydra's BasicSweeper order."""
    cfg = compose([f"experiment={name}"], hydra_node=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    parser = OverridesParser.create()
    axes = [[f"{k}={v}" for v in parser.parse_override(f"{k}={v}").sweep_string_iterator()] for k, v in params.items()]
    return [list(combo) for combo in itertools.product(*axes)]


class Runner:
    """Trains runs into `runs_dir/<experiment>/<variant>` and keeps their metrics; `reuse` skips runs
    whose folder already holds results for the identical config (to redraw without retraining)."""

    def __init__(
        self, plan: Plan, runs_dir: Path, reuse: bool = False, echo: Callable[[str], None] = log.info, workers: int = 1
    ) -> None:
        self.plan, self.runs_dir, self.reuse, self.echo, self.workers = plan, Path(runs_dir), reuse, echo, workers
        self._data: dict[str, Any] = {}
        self.reused, self.runs, self.train_seconds = 0, 0, 0.0

    def overrides(self, name: str, variant: list[str] = ()) -> list[str]:
        """The experiment's overrides for this mode, without the console settings."""
        ov = [*self.plan.common, *self.plan.extra.get(name, ()), f"trainer.max_epochs={self.plan.epochs[name]}"]
        if name == "nielsen_ch3":  # lambda / n for the training set actually used
            n = self.datamodule(compose([f"experiment={name}", *ov])).sizes["train"]
            ov.append(f"optimizer.weight_decay={BOOK_LAMBDA / n:.4g}")
        return [*ov, *variant]

    def command(self, name: str, sweep: bool = False, variant: list[str] = ()) -> str:
        return " ".join(
            ["python train.py", *(["-m"] if sweep else []), f"experiment={name}", *self.overrides(name, variant)]
        )

    def cfg(self, name: str, variant: list[str], run_dir: Path) -> DictConfig:
        return compose([f"experiment={name}", *QUIET, *self.overrides(name, variant)], run_dir)

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

    def run_all(self, planned: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
        """train(cfg) for each (experiment, variant), `workers` runs at a time in processes of their own (one
        torch thread each), each into runs_dir/<experiment>/<variant>; their metrics, in the order given. A
        diverged run gives the metrics.json it left (status, history)."""
        dirs = [self.runs_dir / name / (",".join(variant) or "run") for name, variant in planned]
        cfgs = [self.cfg(name, list(variant), d) for (name, variant), d in zip(planned, dirs)]
        stored = [self._fresh(cfg, d, "metrics.json") for cfg, d in zip(cfgs, dirs)]  # None: to train
        todo = [k for k, m in enumerate(stored) if m is None]
        self.reused += len(planned) - len(todo)
        with contextlib.ExitStack() as stack:
            if self.workers > 1 and len(todo) > 1:
                context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch state
                pool = stack.enter_context(ProcessPoolExecutor(self.workers, context, initializer=quiet_worker))
                futures = {pool.submit(_train, cfgs[k], dirs[k]): k for k in todo}
                finished = ((futures[f], f.result()) for f in as_completed(futures))
            else:
                finished = ((k, _train(cfgs[k], dirs[k])) for k in todo)
            for k, (metrics, seconds) in finished:
                stored[k] = metrics
                self.echo(
                    f"{dirs[k].relative_to(self.runs_dir)}: {status(metrics)}, val/acc_best "
                    f"{metrics.get('val/acc_best', float('nan')):.4f} ({seconds:.0f} s)"
                )
        out = []
        for (_, variant), run_dir, cfg, m in zip(planned, dirs, cfgs, stored):
            m["history"] = full_history(run_dir, m)
            self.train_seconds += m.get("train_seconds", 0)
            lr, momentum = float(cfg.optimizer.lr), float(cfg.optimizer.get("momentum") or 0.0)
            out.append({**m, "variant": " ".join(variant), "run_dir": str(run_dir), "lr": lr, "momentum": momentum})
        self.runs += len(out)
        return out

    def tracked(self, m: dict[str, Any], name: str, seeds: int) -> dict[str, Any]:
        """A finished run of an experiment with callbacks=delta_norms (which measured the delta norms of the
        first 1,000 training images at init and after every epoch: `delta_norms`), plus those of `seeds` fresh
        networks (`at_init`)."""
        m["delta_norms"] = json.loads((Path(m["run_dir"]) / "delta_norms.json").read_text())["delta_norms"]
        cfg = self.cfg(name, m["variant"].split(), self.runs_dir / "unused")
        return {**m, "at_init": at_init(cfg, *first_images(self.datamodule(cfg)), seeds)}


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


def _train(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, Any], float]:
    """train(cfg), and the seconds it took; a diverged run's metrics.json (an interrupt propagates)."""
    t0 = time.perf_counter()
    try:
        metrics = train(cfg)
    except Diverged:  # train() wrote the status, the error and the history so far
        metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics, time.perf_counter() - t0


def quiet_worker() -> None:
    """A report worker process: one torch thread (the runs are too small to share cores), and none of
    Lightning's per-run hints."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message="Encountered `nan`")  # a diverged run's metrics: reported as such
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "tensorboard", "backprop_lab"):
        logging.getLogger(name).setLevel(logging.ERROR)


def collect(runner: Runner) -> dict[str, Any]:
    """Run every experiment; returns what the figures and the text need."""
    r = runner
    cfg = r.cfg("nielsen_ch1", [], r.runs_dir / "unused")
    dm = r.datamodule(cfg)
    res: dict[str, Any] = {"data": {"source": dm.source, "sizes": dm.sizes, "name": r.plan.data}}
    n = r.datamodule(r.cfg("batch_size", [], r.runs_dir / "unused")).sizes["train"]
    sizes = [v for v in sweep_variants("batch_size") if int(v[0].split("=")[1]) <= n]  # larger: config error
    control = equal_step_control(r)
    planned = {  # every run, by result key: trained together, `workers` at a time
        "nielsen_ch1": [("nielsen_ch1", [])],
        "nielsen_ch3": [("nielsen_ch3", [])],
        **{
            name: [(name, v) for v in sweep_variants(name)]
            for name in ("mse_vs_cross_entropy", "exploding_gradients", "vanishing_gradients", "activations")
        },
        "optimizers": [("optimizers", v) for v in [*sweep_variants("optimizers"), control]],
        "batch_size": [("batch_size", v) for v in sizes],
    }
    done = iter(r.run_all([run for runs in planned.values() for run in runs]))
    res.update({key: [next(done) for _ in runs] for key, runs in planned.items()})
    for name in ("nielsen_ch1", "nielsen_ch3"):
        res[name] = res[name][0]
    res["vanishing_gradients"] = [
        r.tracked(m, "vanishing_gradients", r.plan.init_seeds) for m in res["vanishing_gradients"]
    ]
    res["batch_size_skipped"] = [v[0] for v in sweep_variants("batch_size") if v not in sizes]
    explode = r.cfg("exploding_gradients", [], r.runs_dir / "unused")
    res["exploding_at_init"] = at_init(explode, *first_images(r.datamodule(explode)))[0]
    res["commands"] = {name: r.command(name, sweep=sweep_variants(name) != [[]]) for name in EXPERIMENTS}
    res["commands"]["optimizers"] += "\n" + r.command("optimizers", variant=control)
    res["seed"], res["n_images"] = cfg.seed, len(first_images(dm)[0])
    res["reused"], res["n_runs"], res["train_seconds"] = r.reused, r.runs, r.train_seconds
    res["workers"] = r.workers
    return res


def equal_step_control(runner: Runner) -> list[str]:
    """Plain SGD at momentum's effective step lr / (1 - mu) (read from the optimizers experiment): a faster
    start that is only the larger step shows here as well; what momentum adds beyond it shows against it."""
    cfg = runner.cfg("optimizers", ["optimizer=momentum"], runner.runs_dir / "unused")
    return ["optimizer=sgd", f"optimizer.lr={cfg.optimizer.lr / (1 - cfg.optimizer.momentum):.4g}"]


def build(
    mode: str = "quick",
    data: str = "mnist_subset",
    out: str | Path = "docs",
    runs_dir: str | Path | None = None,
    reuse: bool = False,
    echo: Callable[[str], None] = log.info,
    readme: str | Path | None = None,
    workers: int = 1,
) -> Path:
    """Run the report's experiments and write `out/results.md` and its figures, and the summary between the
    results markers of `readme` when given (checked before any training); returns the markdown path."""
    if readme is not None:
        check_readme(readme)
    plan = make_plan(mode, data)
    runs = Path(runs_dir) if runs_dir else PROJECT_ROOT / "outputs" / "report" / f"{mode}-{data}"
    runner = Runner(plan, runs, reuse, echo, workers)
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
    if readme is not None:
        write_readme(readme, readme_summary(res, out, Path(readme).resolve().parent, figures))
        echo(f"wrote the results summary into {readme}")
    return md

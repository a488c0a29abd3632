"""Bad input ends in one line and a non-zero exit with nothing written; divergence and interruption lose nothing."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from backprop_lab.training.checkpoints import load_checkpoint
from conftest import QUIET, ROOT, run_in_process, run_script


def assert_one_line_error(result, *fragments: str, code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


BAD_CONFIG = {
    "unknown optimizer": (["optimizer=sgdd"], ["optimizer=sgdd is not an option", "adam"]),
    "unknown data": (["data=cifar"], ["data=cifar is not an option", "mnist_subset"]),
    "unknown key": (["optimizer.lrr=0.1"], ["optimizer.lrr", "+optimizer.lrr"]),
    "unknown activation": (["activation=swish"], ["activation=swish is not an option", "relu"]),
    "unknown loss": (["loss=hinge"], ["loss=hinge is not an option"]),
    "empty hidden size": (["model.hidden=[15,0]"], ["model.hidden=[15, 0]"]),
    "zero learning rate": (["optimizer.lr=0"], ["optimizer.lr=0 must be positive"]),
    "infinite learning rate": (["optimizer.lr=inf"], ["optimizer.lr=inf must be positive and finite"]),
    "batch size below 1": (["data.batch_size=0"], ["data.batch_size=0 must be a whole number >= 1"]),
    "negative epochs": (["trainer.max_epochs=-1"], ["trainer.max_epochs=-1"]),
    "momentum out of range": (
        ["optimizer=momentum", "optimizer.momentum=1.5"],
        ["optimizer.momentum=1.5 must be in [0, 1)"],
    ),
    "cross-entropy with identity output": (
        ["model.output=identity"],
        ["cross_entropy needs probabilities", "model.output=softmax"],
    ),
    "batch larger than the split": (["data.batch_size=301"], ["larger than the training split (300 examples)"]),
    "bad override syntax": (["model.hidden=[15"], ["model.hidden=[15"]),
    "resume from a missing checkpoint": (["ckpt_path=/nonexistent/last.ckpt"], ["does not exist"]),
    "unknown precision": (["trainer.precision=bf17"], ["Precision 'bf17' is invalid", "trainer.* overrides"]),
    "unknown strategy": (["+trainer.strategy=foo"], ["invalid strategy name", "trainer.* overrides"]),
    "unknown optimizer argument": (["+optimizer.lrr=0.1"], ["optimizer.lrr is not an argument of SGD", "lr, momentum"]),
    "unknown data argument": (["+data.foo=1"], ["data.foo is not an argument of MNISTSubsetDataModule"]),
    "negative seed": (["seed=-1"], ["seed=-1 must be a whole number in 0..4294967295"]),
    "negative split size": (["data.val_size=-1"], ["data.val_size=-1 must be a whole number >= 0"]),
    "empty training split": (["data.train_size=0"], ["the training split is empty", "data.train_size"]),
    "log interval not a number": (["log.grad_every_n_steps=abc"], ["log.grad_every_n_steps=abc must be a whole"]),
    "divergence factor below 1": (["divergence_factor=0.5"], ["divergence_factor=0.5 must be a number > 1"]),
    "no cpu threads": (["cpu_threads=0"], ["cpu_threads=0 must be a whole number >= 1 or null"]),
    "test not a flag": (["test=maybe"], ["test=maybe must be true or false"]),
    "unknown optimized metric": (["optimized_metric=foo"], ["optimized_metric=foo is not a metric", "val/acc_best"]),
    "weight decay not a number": (["optimizer.weight_decay=nan"], ["optimizer.weight_decay=nan must be a number >= 0"]),
}
if not torch.cuda.is_available():  # where there is a GPU, this is a valid choice
    BAD_CONFIG["GPU asked for, none there"] = (["trainer.accelerator=gpu"], ["no CUDA GPU", "trainer=cpu"])


# In a real `python train.py` process: Hydra's own errors (a missing option, bad override syntax), which
# cli.hydra_entry catches before Lightning loads; train()'s errors reach a real process's stderr in the
# interrupted runs below. The others run the same entry, train.py as __main__ with the same arguments,
# in this process (run_in_process): the same one line and exit code, without a ~6 s start each.
REAL_PROCESS = {"unknown optimizer", "bad override syntax"}


@pytest.mark.parametrize("name", list(BAD_CONFIG))
def test_bad_config_gives_one_line_and_writes_nothing(tmp_path, name):
    overrides, fragments = BAD_CONFIG[name]
    run = run_script if name in REAL_PROCESS else run_in_process
    result = run("train.py", *QUIET, *overrides, f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "checkpoints").exists()
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_ctrl_c_while_the_data_loads_is_one_line_and_an_interrupted_status(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("backprop_lab.data.modules.load_subset", interrupted)
    result = run_in_process("train.py", *QUIET, f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "interrupted before training started", "run the command again", code=130)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"].startswith("interrupted: ")


def _write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> None:
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload)


def test_corrupt_data_file_gives_one_line(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte.gz", 2051, (100, 28, 28), bytes(1000))  # truncated
    _write_idx(raw / "train-labels-idx1-ubyte.gz", 2049, (100,), bytes(100))
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", 2051, (10, 28, 28), bytes(7840))
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", 2049, (10,), bytes(10))
    result = run_in_process(
        "train.py",
        "data=mnist",
        f"paths.data_dir={tmp_path / 'data'}",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(result, "train-images-idx3-ubyte.gz", "truncated")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_mnist_in_strict_mode_gives_one_line(tmp_path):
    result = run_in_process(
        "train.py",
        "data=mnist",
        "data.strict=true",
        "data.download=false",
        f"paths.data_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(result, "MNIST", str(tmp_path / "MNIST" / "raw"))


class Forks:
    """Real train.py processes, forked from one warm process (tests/train_forks.py, which says how): each a
    process of its own that signals and SIGKILL reach, without the ~12 s import of torch and Lightning."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.n, self.buffer = folder, 0, b""
        self.server = subprocess.Popen(
            [sys.executable, "tests/train_forks.py"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def _line(self, timeout: float) -> str:
        """The server's next line, or an AssertionError after `timeout` seconds without one."""
        while b"\n" not in self.buffer:
            assert select.select([self.server.stdout], [], [], timeout)[0], "tests/train_forks.py did not answer"
            chunk = os.read(self.server.stdout.fileno(), 4096)
            assert chunk, "tests/train_forks.py ended"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def start(self, *args: str, **scaffolding) -> tuple[int, Path]:
        """Start `python train.py args...` (with train_forks.py's scaffolding): its pid, and the prefix of
        its .stdout and .stderr files."""
        self.n += 1
        out = self.folder / str(self.n)
        self.server.stdin.write(json.dumps({"args": args, "out": str(out), **scaffolding}).encode() + b"\n")
        self.server.stdin.flush()
        line = self._line(120)
        assert line.startswith("started "), line
        return int(line.split()[1]), out

    def wait(self, pid: int, timeout: float = 300) -> int:
        """Its exit code once it is gone (-N: killed by signal N); SIGKILLed after `timeout` seconds."""
        try:
            line = self._line(timeout)
        except AssertionError:
            self.kill(pid)
            self._line(60)
            raise
        assert line.startswith(f"exited {pid} "), line
        return int(line.split()[2])

    def kill(self, pid: int) -> None:
        """SIGKILL: no handler, no cleanup."""
        with contextlib.suppress(ProcessLookupError):  # gone already
            os.kill(pid, signal.SIGKILL)

    def alive(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:  # exited, and reaped by the server
            return False
        return True

    def run(self, *args: str, **scaffolding) -> subprocess.CompletedProcess:
        pid, out = self.start(*args, **scaffolding)
        code = self.wait(pid)
        stdout, stderr = (Path(f"{out}.{name}").read_text() for name in ("stdout", "stderr"))
        return subprocess.CompletedProcess(["train.py", *args], code, stdout, stderr)

    def close(self) -> None:
        self.server.stdin.close()  # the server ends at the end of its input
        try:
            self.server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()


@pytest.fixture(scope="module")
def forks(tmp_path_factory):
    forks = Forks(tmp_path_factory.mktemp("forks"))
    yield forks
    forks.close()


# The run the interrupted runs must reproduce exactly, trained once per module; its last.ckpt (sizes
# [784, 15, 10]) is also the good checkpoint of another architecture below.
SAME_STEPS = [*QUIET, "trainer.max_epochs=2", "trainer.deterministic=true", "data.batches_per_block=5"]


def _final(run: Path) -> tuple[dict, dict]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt["state_dict"], json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> SimpleNamespace:
    run = tmp_path_factory.mktemp("alone")
    result = run_in_process("train.py", *SAME_STEPS, f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    weights, metrics = _final(run)
    return SimpleNamespace(run=run, weights=weights, metrics=metrics)


@pytest.mark.parametrize(
    "case,fragments",
    [
        ("missing", ["does not exist"]),
        ("a folder", ["is a folder, not a checkpoint file", "checkpoints/last.ckpt"]),
        ("not a checkpoint", ["is not a readable checkpoint"]),
        ("other architecture", ["sizes=[784, 15, 10]", "sizes=[784, 30, 10]"]),
    ],
)
def test_bad_checkpoints_give_one_line(tmp_path, uninterrupted, case, fragments):
    if case == "missing":
        ckpt = tmp_path / "nope.ckpt"
    elif case == "a folder":
        ckpt = uninterrupted.run / "checkpoints"
    elif case == "not a checkpoint":
        ckpt = tmp_path / "notes.ckpt"
        ckpt.write_text("these are my notes, not weights\n")
    else:
        ckpt = uninterrupted.run / "checkpoints" / "last.ckpt"
    overrides = ["model.hidden=[30]"] if case == "other architecture" else []
    result = run_in_process("train.py", *QUIET, *overrides, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, *fragments)
    evaluated = run_in_process(
        "scripts/evaluate.py", f"ckpt_path={ckpt}", "data=mnist_subset", f"hydra.run.dir={tmp_path / 'eval'}"
    )
    if case == "other architecture":
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]  # the checkpoint itself is fine
    else:
        assert_one_line_error(evaluated, *fragments)


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    """An exploding schedule (lr x 10,000 after epoch 1): epoch 1's checkpoint survives and loads."""
    result = run_in_process(
        "train.py",
        *QUIET,
        "trainer.max_epochs=3",
        "scheduler=step",
        "scheduler.step_size=1",
        "scheduler.gamma=10000",
        "activation=relu",
        f"hydra.run.dir={tmp_path}",
    )
    line = assert_one_line_error(result, "training diverged", "at step", "lower optimizer.lr")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["stopped_at_step"] >= 30
    assert f"step {metrics['stopped_at_step']}" in line
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and all(torch.isfinite(w).all() for w in last["state_dict"].values())


def test_gradient_clipping_works_with_the_manual_model(tmp_path):
    result = run_in_process(
        "train.py", *QUIET, "model=manual", "trainer.gradient_clip_val=0.5", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("sig,during,step,code", [("SIGTERM", 37, 40, 143), ("SIGINT", 12, 15, 130)])
def test_interrupted_run_resumes_to_exactly_the_same_result(tmp_path, forks, uninterrupted, sig, during, step, code):
    """A signal during step `during` stops the run at the end of its block of 5 steps (`step`), inside an epoch.

    The signal reaches a real process (forked: see `forks`); the resume runs train.py's entry in this one."""
    stopped = forks.run(*SAME_STEPS, f"hydra.run.dir={tmp_path}", signal=[sig, during])
    line = assert_one_line_error(
        stopped, f"interrupted by {sig} at step {step}", "resume with: python train.py", code=code
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["stopped_at_step"] == step
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == step
    assert f"ckpt_path={last}" in line
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")  # in HPARAMS though stopped
    hp_test = events.Scalars("hp/test_acc")[-1]
    assert hp_test.step == step and math.isnan(hp_test.value) and events.Scalars("hp/diverged")[-1].value == 0.0

    resumed = run_in_process("train.py", *SAME_STEPS, f"ckpt_path={last}")  # lands in the same folder
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights, metrics = _final(tmp_path)
    ref_weights, ref_metrics = uninterrupted.weights, uninterrupted.metrics
    for k in ref_weights:
        assert torch.equal(weights[k], ref_weights[k]), k
    for k in ("test/acc", "test/loss", "val/acc_best", "epochs", "history"):
        assert metrics[k] == ref_metrics[k], k


@pytest.mark.slow
def test_sigkill_while_saving_never_leaves_a_corrupt_checkpoint(tmp_path, forks):
    """A process that does nothing but rewrite a 13 MB last.ckpt is killed (SIGKILL) at three moments (most
    land mid-write): each time last.ckpt is a whole checkpoint; the next run clears the partial files left."""
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    for delay in (0.0, 0.07, 0.19):
        run = (*QUIET, "model.hidden=[4000]", "ckpt_path=last", f"hydra.run.dir={tmp_path}")  # from the last kill on
        pid, out = forks.start(*run, save_forever=True)
        log = Path(f"{out}.stdout")  # the run's log lines, then "saved 1", "saved 2", ...
        try:
            while not (log.exists() and "saved" in log.read_text()):
                assert forks.alive(pid), "the writer never saved"
                time.sleep(0.002)
            time.sleep(delay)
        finally:
            forks.kill(pid)
            code = forks.wait(pid)
        assert code == -signal.SIGKILL, code
        module = load_checkpoint(ckpt)  # a truncated file would fail here
        assert module.hparams.sizes == [784, 4000, 10]
    result = run_in_process("train.py", *QUIET, "model.hidden=[4000]", "ckpt_path=last", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not list(ckpt.parent.glob(".*")), "partial files of killed saves were left behind"

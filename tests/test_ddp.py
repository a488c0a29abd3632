"""The hand-written model and a population of them under Lightning's DDP (2 CPU processes, gloo), and mixed
precision on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import QUIET, run_in_process, run_script


@pytest.mark.slow
@pytest.mark.parametrize("population", [1, 2])
def test_ddp_two_processes_match_one_process_with_twice_the_batch(tmp_path, population):
    """Rank r takes perm[r::2] of each epoch's permutation (of each member's own, in a population), so
    per-rank batches of 5 together are exactly the single process's batch of 10, and DDP's gradient
    average is the batch-10 gradient, member by member. The single process is train.py's entry run in
    this one; DDP's two are real processes."""
    common = [*QUIET, "model=manual", f"population={population}"]
    single = run_in_process("train.py", *common, "data.batch_size=10", f"hydra.run.dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_script(
        "train.py",
        *common,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.batch_size=5",
        f"hydra.run.dir={tmp_path / 'ddp'}",
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    w1 = torch.load(tmp_path / "single" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    w2 = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    nets = [k for k in w1 if k.startswith("net.")]
    assert nets and all(w1[k].shape[0] == population for k in nets if population > 1)  # (members, ...)
    for k in nets:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6, msg=k)

    run = tmp_path / "ddp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]  # no stray folders from rank 1
    folders = [".hydra", "checkpoints"] + (["members"] if population > 1 else [])
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == folders
    assert len(list(run.rglob("metrics.json"))) == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 1 and metrics["population"] == population
    assert [m["status"] for m in metrics["members"]] == ["completed"] * population
    single_metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert metrics["val/acc_best"] == pytest.approx(single_metrics["val/acc_best"], abs=0.02)
    assert len(list(run.glob("events.out.tfevents.*"))) >= 1


def test_bf16_mixed_on_cpu_trains_the_manual_model(tmp_path):
    result = run_in_process(
        "train.py", *QUIET, "model=manual", "trainer.precision=bf16-mixed", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["test/acc"] > 0.3

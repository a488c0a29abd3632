"""A population under Lightning's DDP (2 CPU processes, gloo): every member as in one process."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, run_script

QUIET = [o for o in TINY if not o.startswith("trainer.enable")] + ["log.pictures_every_n_epochs=0", "population=2"]


@pytest.mark.slow
def test_a_ddp_population_matches_one_process_with_twice_the_batch(tmp_path):
    """Each member's rank-r batches of 5 together are its single-process batch of 10 (rank r takes
    perm[r::2] of the member's own permutation), and DDP averages each member's gradient."""
    single = run_script("train.py", *QUIET, "data.batch_size=10", f"hydra.run.dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_script(
        "train.py",
        *QUIET,
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
    assert nets and all(w1[k].shape[0] == 2 for k in nets)  # (members, ...)
    for k in nets:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6, msg=k)
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["population"] == 2
    assert [m["status"] for m in metrics["members"]] == ["completed", "completed"]
    assert len(list((tmp_path / "ddp").rglob("metrics.json"))) == 1

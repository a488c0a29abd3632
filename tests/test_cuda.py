"""The training path (Trainer, data module, LitMLP) on a GPU, and mixed precision through it.

The CUDA cases skip without a GPU (CI never has one; `scripts/gpu_check.sh` runs them on one).
The bf16 comparison also runs on the CPU, so the suite checks its tolerance everywhere.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import pytest
import torch

from backprop_lab.training import module
from backprop_lab.training.train import build_module, train
from conftest import compose_cfg

needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _run(tmp_path: Path, accelerator: str, *overrides: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Train on TINY data; the metrics and the network's final weights (on the CPU)."""
    cfg = compose_cfg(tmp_path, f"trainer.accelerator={accelerator}", "log.pictures_every_n_epochs=0", *overrides)
    metrics = train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    return metrics, {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def _init(tmp_path: Path, model: str) -> dict[str, torch.Tensor]:
    """A run's weights before its first step: train()'s seeding, data set-up and module, no training."""
    cfg = compose_cfg(tmp_path, f"model={model}")
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.n_features, datamodule.n_classes)
    return {f"net.{k}": v.detach().clone() for k, v in module.net.state_dict().items()}


@pytest.mark.parametrize("accelerator", [pytest.param("gpu", marks=needs_cuda), "cpu"])
def test_bf16_mixed_manual_matches_reference_within_bf16_tolerance(tmp_path, accelerator):
    """Two epochs of 30 steps each under bf16 autocast: the manual model (which computes in float32,
    as custom_fwd(cast_inputs=float32) would) and the reference (bf16 matmuls) take the same steps
    to within bf16's 8-bit mantissa, measured on each weight's change from its initialisation."""
    runs = {
        m: _run(tmp_path / m, accelerator, f"model={m}", "trainer.precision=bf16-mixed", "trainer.max_epochs=2")
        for m in ("manual", "reference")
    }
    init = _init(tmp_path / "init", "manual")
    (m_metrics, manual), (r_metrics, reference) = runs["manual"], runs["reference"]
    assert m_metrics["status"] == r_metrics["status"] == "completed"
    for k, w0 in init.items():
        assert manual[k].dtype == torch.float32  # the weights stay float32 under mixed precision
        step_m, step_r = manual[k] - w0, reference[k] - w0
        assert step_r.norm() > 0
        assert (step_m - step_r).norm() / step_r.norm() < 2e-2, k  # measured on CPU: 0.2-0.3%
    assert abs(m_metrics["test/acc"] - r_metrics["test/acc"]) <= 0.05
    assert m_metrics["test/acc"] > 0.3


@pytest.mark.parametrize("model", ["manual", "reference"])
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_direct_and_autograd_gradients_agree_on_cuda(tmp_path, monkeypatch, model):
    """Gradients written by net.backprop and through manual_backward give the same weights on the
    GPU, as the CPU test in test_steps.py checks bitwise there."""
    lean_metrics, lean = _run(
        tmp_path / "lean", "gpu", f"model={model}", "trainer.max_epochs=2", "data.batches_per_block=5"
    )
    monkeypatch.setattr(module, "gradients_without_autograd", lambda trainer: False)
    _, standard = _run(
        tmp_path / "standard", "gpu", f"model={model}", "trainer.max_epochs=2", "data.batches_per_block=5"
    )
    for k, w in standard.items():
        torch.testing.assert_close(lean[k], w, rtol=1e-5, atol=1e-6, msg=k)
    assert lean_metrics["status"] == "completed" and lean_metrics["test/acc"] > 0.3


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_16_mixed_with_grad_scaler_trains_the_manual_model_on_cuda(tmp_path):
    """float16 autocast takes Lightning's GradScaler path (gradients through manual_backward) and still learns."""
    metrics, manual = _run(tmp_path, "gpu", "model=manual", "trainer.precision=16-mixed", "trainer.max_epochs=2")
    assert metrics["status"] == "completed" and metrics["test/acc"] > 0.3
    assert all(torch.isfinite(w).all() for w in manual.values())

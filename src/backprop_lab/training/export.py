"""A trained checkpoint as a file other runtimes load: ONNX or TorchScript, taking x (B, n_0) in [0, 1]
(float32, any batch size B) and returning class probabilities (B, n_L).

The hand-written ManualMLP runs through its own autograd Function, which neither exporter can trace,
so the weights are loaded into the `ReferenceMLP` (the same state_dict) and exported from there.
"Probabilities" are what `predict` prints: the network's output activation a^L (`predict_proba`:
softmax, per-class sigmoids, or z^L for an identity output), and for a population's ensemble the
mean of its members' a^L (inspection.predict.classify); the tests check that the two agree.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from backprop_lab.core.models import ReferenceMLP
from backprop_lab.errors import ConfigError, one_line, unwritable
from backprop_lab.paths import atomic_write
from backprop_lab.training.checkpoints import load_checkpoint

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}  # format -> the default file's suffix
ENSEMBLE = "ensemble"
INPUT, OUTPUT = "pixels", "probabilities"  # the ONNX graph's input and output names


class Probabilities(nn.Module):
    """x (B, n_0) -> a^L (B, n_L) of one network, or the mean of several networks' a^L (an ensemble)."""

    def __init__(self, nets: Sequence[ReferenceMLP]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: Tensor) -> Tensor:
        probs = [net.predict_proba(x) for net in self.nets]
        return probs[0] if len(probs) == 1 else torch.stack(probs).mean(0)


def probabilities(ckpt: str | Path, member: int | str | None = None) -> Probabilities:
    """The checkpoint's network as a float32 `Probabilities` in eval mode: a single network's, member k's of a
    population, or (member=None or "ensemble") the ensemble of all its members, as predict classifies."""
    if member is not None and member != ENSEMBLE and (isinstance(member, bool) or not isinstance(member, int)):
        raise ConfigError(f"--member {member} must be a member's index or {ENSEMBLE} (e.g. --member 0)")
    net = load_checkpoint(ckpt, "reference", member=member if isinstance(member, int) else None).net
    if net.members is None:
        if member == ENSEMBLE:
            raise ConfigError(f"--member {ENSEMBLE} needs a population checkpoint ({ckpt} holds a single network)")
        nets = [net]
    else:
        nets = [net.member(k) for k in range(net.members)]
    return Probabilities(nets).float().eval()


def default_out(ckpt: str | Path, fmt: str, member: int | str | None = None) -> Path:
    """Beside the checkpoint: last.ckpt -> last.onnx, last-member3.onnx, last-ensemble.pt."""
    ckpt = Path(ckpt).expanduser()
    tag = "" if member is None else f"-{ENSEMBLE}" if member == ENSEMBLE else f"-member{member}"
    return ckpt.with_name(f"{ckpt.stem}{tag}{FORMATS[fmt]}")


def export(ckpt: str | Path, fmt: str, member: int | str | None = None, out: str | Path | None = None) -> Path:
    """Write the checkpoint's probabilities model as `fmt` (onnx | torchscript) to `out` (default: beside the
    checkpoint); returns the path. Every problem is a ConfigError with a one-line message."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt} is not an option (--format one of: {', '.join(FORMATS)})")
    if fmt == "onnx":
        _require_onnx()
    model = probabilities(ckpt, member)
    out = Path(out).expanduser() if out is not None else default_out(ckpt, fmt, member)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # before the export: a bad path fails at once
        x = torch.full((2, model.nets[0].sizes[0]), 0.5)  # an example batch: the batch dimension stays free
        atomic_write(out, _onnx(model, x) if fmt == "onnx" else _torchscript(model, x))
    except OSError as e:
        raise ConfigError(unwritable(e, "pass --out a writable path") or one_line(e)) from None
    return out


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx's exporter builds the graph with it)
    except ImportError as e:
        raise ConfigError(
            f"--format onnx needs the onnx and onnxscript packages ({e.name} is missing: "
            "pip install 'backprop-lab[export]', or use --format torchscript)"
        ) from None


def _onnx(model: nn.Module, x: Tensor):
    """torch.onnx's exporter (torch.export-based, the default since torch 2.9), one self-contained file."""
    program = torch.onnx.export(
        model,
        (x,),
        dynamo=True,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        external_data=False,
        verbose=False,
    )
    data = program.model_proto.SerializeToString()
    return lambda f: f.write(data)


def _torchscript(model: nn.Module, x: Tensor):
    """torch.jit.trace: the network has no data-dependent control flow, so a trace holds for every batch size."""
    with _without_jit_deprecations():
        traced = torch.jit.trace(model, x)

    def write(f) -> None:
        with _without_jit_deprecations():
            torch.jit.save(traced, f)

    return write


@contextlib.contextmanager
def _without_jit_deprecations() -> Iterator[None]:
    """torch deprecates TorchScript in favour of torch.export; its warnings speak to no one who can act on them
    (docs/export.md says to prefer ONNX)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield

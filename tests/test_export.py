"""scripts/export.py and training/export.py: a checkpoint as ONNX or TorchScript that gives the probabilities
predict.py gives, for a single network, a population's member and its ensemble; bad input is one line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from backprop_lab.inspection.predict import classify
from backprop_lab.training.checkpoints import load_checkpoint
from backprop_lab.training.export import default_out, export, probabilities
from backprop_lab.training.train import train
from conftest import ROOT, compose_cfg

N = 3  # the population's members


def _script():
    """scripts/export.py as a module, so that main(argv) runs in this process."""
    spec = importlib.util.spec_from_file_location("export_script", ROOT / "scripts" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny trained runs' last.ckpt: one network, and a population of N (hand-written backprop)."""
    out = {}
    for name, population in (("single", 1), ("population", N)):
        folder = tmp_path_factory.mktemp(name)
        train(compose_cfg(folder, f"population={population}", "test=false"))
        out[name] = folder / "checkpoints" / "last.ckpt"
    return out


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(37, 784)  # not the export's example batch size


def expected(ckpt: Path, member: int | None, x: torch.Tensor) -> np.ndarray:
    """What predict.py computes: the checkpoint as trained (ManualMLP), a member or the ensemble's mean."""
    return classify(load_checkpoint(ckpt, member=member), x.reshape(-1, 28, 28)).numpy()


CASES = [("single", None), ("population", 1), ("population", "ensemble")]


@pytest.mark.parametrize("run,member", CASES, ids=["single", "member1", "ensemble"])
def test_onnx_gives_the_probabilities_predict_gives(runs, x, tmp_path, run, member):
    out = export(runs[run], "onnx", member, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert isinstance(inp.shape[0], str) and inp.shape[1] == 784 and outp.shape[1] == 10  # a free batch dimension
    want = expected(runs[run], member if isinstance(member, int) else None, x)
    for batch in (x, x[:1]):
        got = session.run(None, {inp.name: batch.numpy()})[0]
        np.testing.assert_allclose(got, want[: len(batch)], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)  # softmax outputs: probabilities


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # TorchScript's, in torch 2.14
@pytest.mark.parametrize("run,member", CASES, ids=["single", "member1", "ensemble"])
def test_torchscript_gives_the_probabilities_predict_gives(runs, x, tmp_path, run, member):
    out = export(runs[run], "torchscript", member, tmp_path / "model.pt")
    model = torch.jit.load(str(out))
    want = expected(runs[run], member if isinstance(member, int) else None, x)
    for batch in (x, x[:1]):
        np.testing.assert_allclose(model(batch).detach().numpy(), want[: len(batch)], rtol=0, atol=1e-5)


def test_the_ensemble_is_the_mean_of_the_members(runs, x):
    """And differs from each member, so the test above can tell them apart."""
    ensemble = probabilities(runs["population"])(x).detach()
    members = [probabilities(runs["population"], k)(x).detach() for k in range(N)]
    torch.testing.assert_close(ensemble, torch.stack(members).mean(0))
    assert all((m - ensemble).abs().max() > 1e-3 for m in members)


def test_cli_writes_beside_the_checkpoint_by_default(runs, tmp_path, capsys):
    ckpt = tmp_path / "run" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(runs["population"].read_bytes())
    assert _script().main(["--ckpt", str(ckpt), "--format", "torchscript", "--member", "2"]) == 0
    written = ckpt.parent / "last-member2.pt"
    assert capsys.readouterr().out == f"wrote {written}\n" and written.is_file()
    assert default_out(ckpt, "onnx", "ensemble") == ckpt.parent / "last-ensemble.onnx"
    assert default_out(ckpt, "onnx") == ckpt.parent / "last.onnx"


def _corrupt(path: Path) -> Path:
    path.write_text("not a checkpoint\n")
    return path


def _foreign(path: Path) -> Path:
    torch.save({"weights": torch.zeros(3)}, path)
    return path


BAD = {
    "missing": (lambda r, t: ["--ckpt", str(t / "nope.ckpt")], "does not exist"),
    "corrupt": (lambda r, t: ["--ckpt", str(_corrupt(t / "x.ckpt"))], "is not a readable checkpoint"),
    "foreign": (lambda r, t: ["--ckpt", str(_foreign(t / "x.ckpt"))], "is not a backprop_lab checkpoint"),
    "member_out_of_range": (
        lambda r, t: ["--ckpt", str(r["population"]), "--member", str(N)],
        f"member={N} is not a member of the population of {N}",
    ),
    "member_of_a_single_network": (lambda r, t: ["--ckpt", str(r["single"]), "--member", "0"], "needs a population"),
    "ensemble_of_a_single_network": (
        lambda r, t: ["--ckpt", str(r["single"]), "--member", "ensemble"],
        "--member ensemble needs a population checkpoint",
    ),
    "member_not_a_number": (lambda r, t: ["--ckpt", str(r["population"]), "--member", "first"], "--member first"),
    "unknown_format": (lambda r, t: ["--ckpt", str(r["single"]), "--format", "tflite"], "--format tflite is not"),
    "unwritable_out": (
        lambda r, t: ["--ckpt", str(r["single"]), "--out", str(_corrupt(t / "file") / "model.onnx")],
        "cannot write",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_line_and_exit_1(runs, tmp_path, capsys, case):
    make, message = BAD[case]
    argv = make(runs, tmp_path)
    argv += [] if "--format" in argv else ["--format", "onnx"]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert _script().main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert message in captured.err, captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_onnx_without_its_packages_says_how_to_install_them(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if it were not installed: importing it fails
    out = tmp_path / "model.onnx"
    assert _script().main(["--ckpt", str(runs["single"]), "--format", "onnx", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --format onnx needs the onnx and onnxscript packages") and err.count("\n") == 1
    assert "pip install 'backprop-lab[export]'" in err and not out.exists()

"""population=N through train(cfg): each member trains as its own run would, failures stay its own,
and metrics.json carries the means, their intervals and every member."""

from __future__ import annotations

import importlib.util
import json

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from backprop_lab.errors import ConfigError, Diverged
from backprop_lab.stats import summary
from backprop_lab.training import train as training
from backprop_lab.training.evaluate import evaluate
from backprop_lab.training.train import train
from conftest import ROOT, compose_cfg

QUIET = ("log.pictures_every_n_epochs=0", "log.histogram_every_n_steps=0", "data.train_size=200")
SEED = 7
DATA = ("data=mnist_subset", "data.train_size=200", "data.val_size=100", "data.test_size=100")  # as TINY + QUIET


def _net_weights(path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, weights_only=False)
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


@pytest.fixture(scope="module")
def population_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("population")
    metrics = train(compose_cfg(out, *QUIET, "population=3", f"seed={SEED}", "trainer.max_epochs=2"))
    return out, metrics


@pytest.mark.parametrize("k", [0, 2])
def test_member_k_ends_as_the_run_with_seed_plus_k(population_run, tmp_path, k):
    out, metrics = population_run
    alone = train(compose_cfg(tmp_path, *QUIET, f"seed={SEED + k}", "trainer.max_epochs=2"))
    population, single = (
        _net_weights(out / "checkpoints" / "last.ckpt"),
        _net_weights(tmp_path / "checkpoints" / "last.ckpt"),
    )
    for name, w in single.items():
        torch.testing.assert_close(population[name][k], w, rtol=1e-5, atol=1e-6, msg=name)
    member = metrics["members"][k]
    assert member["seed"] == SEED + k and member["status"] == "completed"
    # evaluate.py member=k takes the member out: the same test result as the run of it alone
    ev = [
        evaluate(compose_cfg(tmp_path, f"ckpt_path={ckpt}", *DATA, *extra, config_name="evaluate"))
        for ckpt, extra in (
            (out / "checkpoints" / "last.ckpt", [f"member={k}"]),
            (tmp_path / "checkpoints" / "last.ckpt", []),
        )
    ]
    assert ev[0]["test/acc"] == ev[1]["test/acc"] and ev[0]["test/loss"] == pytest.approx(ev[1]["test/loss"], rel=1e-5)
    for key in ("test/acc", "val/acc_best"):
        assert member[key] == pytest.approx(alone[key], abs=1e-6), key
    assert member["test/loss"] == pytest.approx(alone["test/loss"], rel=1e-4)


def test_metrics_json_has_means_intervals_members_and_the_ensemble(population_run):
    out, metrics = population_run
    written = json.loads((out / "metrics.json").read_text())
    assert written["population"] == 3 and len(written["members"]) == 3
    for key in ("test/acc", "test/loss", "val/acc_best"):
        s = summary([m[key] for m in written["members"]])
        assert written[key] == pytest.approx(s["mean"], abs=1e-6)
        assert written[f"{key}_std"] == pytest.approx(s["std"], abs=1e-6) and written[f"{key}_std"] > 0
        assert written[f"{key}_ci95"] == pytest.approx(4.302653 * s["std"] / 3**0.5, rel=1e-5)  # t(0.975, 2)
    assert 0 < written["ensemble/test_acc"] <= 1
    runs = sorted(p.name for p in (out / "members").iterdir())
    assert runs == [f"seed={SEED + k}" for k in range(3)]
    assert all(list((out / "members" / r).glob("events.out.tfevents.*")) for r in runs)


def test_a_single_network_is_a_population_of_one(make_cfg):
    metrics = train(make_cfg("log.pictures_every_n_epochs=0"))
    assert metrics["population"] == 1 and len(metrics["members"]) == 1
    assert metrics["test/acc_std"] is None and metrics["test/acc_ci95"] is None
    assert "ensemble/test_acc" not in metrics


class NaNGradient(L.Callback):
    """From `step` on, member `member`'s gradient (every member's if None) is NaN."""

    def __init__(self, step: int, member: int | None) -> None:
        self.step, self.member = step, member

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step >= self.step and pl_module.alive.any():
            grad = pl_module.net.b[0].grad
            if self.member is None:
                grad[:, 0] = float("nan")
            elif pl_module.alive[self.member]:
                grad[self.member, 0] = float("nan")


def _with(callback, monkeypatch):
    build = training.build_trainer

    def build_with(cfg, out):
        trainer, *rest = build(cfg, out)
        trainer.callbacks.insert(0, callback)
        return (trainer, *rest)

    monkeypatch.setattr(training, "build_trainer", build_with)


def test_a_diverging_member_is_retired_and_the_others_go_on(tmp_path, monkeypatch):
    _with(NaNGradient(7, member=1), monkeypatch)
    metrics = train(compose_cfg(tmp_path, *QUIET, "population=3", "trainer.max_epochs=2"))
    statuses = [m["status"] for m in metrics["members"]]
    assert statuses == ["completed", "diverged at step 7", "completed"]
    assert metrics["status"] == "completed"
    assert metrics["test/acc"] == pytest.approx(
        (metrics["members"][0]["test/acc"] + metrics["members"][2]["test/acc"]) / 2
    )
    weights = _net_weights(tmp_path / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(w[[0, 2]]).all() for w in weights.values())


def test_the_run_fails_only_when_every_member_diverges(tmp_path, monkeypatch):
    _with(NaNGradient(4, member=None), monkeypatch)
    with pytest.raises(Diverged, match="the last of 2 members: a gradient became NaN or infinite at step 4"):
        train(compose_cfg(tmp_path, *QUIET, "population=2"))
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["status"] == "diverged"
    assert [m["status"] for m in written["members"]] == ["diverged at step 4"] * 2


def test_a_population_resumes_exactly(tmp_path):
    straight = train(compose_cfg(tmp_path / "straight", *QUIET, "population=2", "trainer.max_epochs=2"))
    train(compose_cfg(tmp_path / "resumed", *QUIET, "population=2", "trainer.max_epochs=1"))
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    resumed = train(
        compose_cfg(tmp_path / "resumed", *QUIET, "population=2", "trainer.max_epochs=2", f"ckpt_path={last}")
    )
    a, b = _net_weights(tmp_path / "straight" / "checkpoints" / "last.ckpt"), _net_weights(last)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed["members"] == straight["members"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["population=0"], "population=0 must be a whole number >= 1"),
        (["population=2", "scheduler=plateau"], "would tie the members' learning rates together"),
    ],
)
def test_bad_population_settings_are_refused(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(*overrides))


def test_evaluate_reports_a_population_and_its_ensemble(population_run, tmp_path):
    out, _ = population_run
    last = out / "checkpoints" / "last.ckpt"
    whole = evaluate(compose_cfg(tmp_path, f"ckpt_path={last}", *DATA, config_name="evaluate"))
    assert whole["population"] == 3 and len(whole["members"]) == 3 and whole["test/acc_ci95"] > 0
    ensemble = evaluate(compose_cfg(tmp_path, f"ckpt_path={last}", *DATA, "member=ensemble", config_name="evaluate"))
    assert ensemble["test/acc"] == whole["ensemble/test_acc"]
    with pytest.raises(ConfigError, match="member=5 is not a member of the population of 3"):
        evaluate(compose_cfg(tmp_path, f"ckpt_path={last}", *DATA, "member=5", config_name="evaluate"))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_predict_and_visualize_take_a_member_or_the_ensemble(population_run, tmp_path, capsys):
    out, _ = population_run
    last = str(out / "checkpoints" / "last.ckpt")
    digit = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save(digit)
    for extra in ([], ["--member", "2"]):  # the ensemble, then member 2 alone
        assert _script("predict").main(["--ckpt", last, *extra, "--json", str(digit)]) == 0
        assert json.loads(capsys.readouterr().out)[0]["digit"] in range(10)
    assert _script("predict").main(["--ckpt", last, "--member", "3", str(digit)]) == 1
    assert "member=3 is not a member of the population of 3" in capsys.readouterr().err
    assert _script("visualize").main(["--ckpt", last, "--member", "1", "--out", str(tmp_path / "figs")]) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["hidden_units.png", "top_activations.png"]

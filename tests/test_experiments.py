"""conf/experiment/*: each composes and trains; the report writes every figure and table; NNDL ch. 5's claim.

Sweep experiments are run with the first value of each swept parameter, as the first job of
`python train.py -m experiment=NAME` would be.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import hydra.utils
import pytest

from backprop_lab.core.models import ReferenceMLP
from backprop_lab.errors import ConfigError, Diverged
from backprop_lab.inspection.delta_norms import delta_norms, first_images
from backprop_lab.reporting.readme import BEGIN, END, write_readme
from backprop_lab.reporting.report import EXPERIMENTS, at_init, build, full_history, sweep_variants
from backprop_lab.training.config import compose as compose_plain
from backprop_lab.training.train import build_module, train
from conftest import CONF, ROOT, compose_cfg, run_in_process

NAMES = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_every_report_experiment_has_a_config():
    assert set(EXPERIMENTS) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_experiment_composes_and_trains_one_epoch(tmp_path, name):
    first = sweep_variants(name)[0]
    cfg = compose_cfg(tmp_path, f"experiment={name}", *first)
    if name == "exploding_gradients":  # the first variant is the unclipped one: the claim is that it blows up
        assert cfg.trainer.gradient_clip_val is None
        with pytest.raises(Diverged):
            train(cfg)
        return
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["epochs"] == 1
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_sweeps_cover_the_claims():
    assert sweep_variants("mse_vs_cross_entropy") == [["loss=mse"], ["loss=cross_entropy"]]
    optimizers = [f"optimizer={o}" for o in ("sgd", "momentum", "nesterov", "adam")]
    assert [v[0] for v in sweep_variants("optimizers")] == optimizers
    assert [v[0] for v in sweep_variants("batch_size")] == [f"data.batch_size={b}" for b in (1, 10, 100, 1000)]
    vanishing = sweep_variants("vanishing_gradients")
    assert len(vanishing) == 8 and ["activation=sigmoid", "model.hidden=[30,30,30,30]"] in vanishing
    assert sweep_variants("exploding_gradients") == [
        ["trainer.gradient_clip_val=null"],
        ["trainer.gradient_clip_val=1.0"],
    ]
    assert sweep_variants("nielsen_ch1") == [[]]


def test_book_settings_are_translated(tmp_path):
    """Our mse is twice the book's 1/2-scaled quadratic cost: lr 3.0 -> 1.5; L2 lambda=5 -> weight_decay = 5/n."""
    ch1 = compose_plain(["experiment=nielsen_ch1"])  # without conftest's tiny overrides
    assert (ch1.loss, ch1.model.output, ch1.model.init, ch1.model.hidden) == ("mse", "sigmoid", "normal", [30])
    assert ch1.optimizer.lr == 1.5 and ch1.data.batch_size == 10 and ch1.trainer.max_epochs == 30
    ch3 = compose_cfg(tmp_path, "experiment=nielsen_ch3")
    assert ch3.optimizer.weight_decay == pytest.approx(5.0 / 55_000, rel=1e-4)
    lrs = {
        loss: compose_cfg(tmp_path, "experiment=mse_vs_cross_entropy", f"loss={loss}").optimizer.lr
        for loss in ("mse", "cross_entropy")
    }
    assert lrs == {"mse": 1.5, "cross_entropy": 0.5}


def test_optimizers_compare_at_one_step_size():
    """Momentum's claim is tested fairly: the SGD family at one lr, momentum 0.9 (10x the effective step),
    Adam at 1e-3."""
    opt = {
        o: compose_plain(["experiment=optimizers", f"optimizer={o}"]).optimizer
        for o in ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
    }
    assert opt["sgd"].lr == opt["momentum"].lr == opt["nesterov"].lr == 0.05
    assert opt["momentum"].momentum == opt["nesterov"].momentum == 0.9 and opt["nesterov"].nesterov
    assert opt["adam"].lr == 0.001 and all(o.lr > 0 for o in opt.values())
    assert compose_plain(["experiment=optimizers", "optimizer=sgd", "optimizer.lr=0.5"]).optimizer.lr == 0.5


def test_delta_norms_are_the_true_bias_gradients(tmp_path):
    """The hand-written backward and autograd agree on ||dC/db^l||, and .grad is left alone."""
    cfg = compose_cfg(tmp_path, "experiment=vanishing_gradients", "model.hidden=[30,30]")
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    x, y = first_images(dm, 100)
    manual = build_module(cfg).net
    reference = ReferenceMLP(manual.sizes, "sigmoid", "sigmoid", "scaled")
    reference.load_state_dict(manual.state_dict())
    norms = delta_norms(manual, x, y, "cross_entropy")
    assert len(norms) == 3 and min(norms) > 0
    assert norms == pytest.approx(delta_norms(reference, x, y, "cross_entropy"), rel=1e-4)
    assert all(p.grad is None for p in manual.parameters())


def test_vanishing_gradients_at_init_on_the_embedded_digits(tmp_path):
    """NNDL ch. 5: with 4 sigmoid hidden layers the first learns at least 10x slower than the last."""
    cfg = compose_cfg(tmp_path, "experiment=vanishing_gradients", "model.hidden=[30,30,30,30]", "data.train_size=null")
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    x, y = first_images(dm)
    assert len(x) == 1000
    norms = at_init(cfg, x, y)[0][:-1]  # hidden layers 1..4
    assert norms[0] * 10 <= norms[-1], norms
    assert norms == sorted(norms)  # shrinking layer by layer towards the input


def test_full_history_recovers_epochs_lost_to_the_best_checkpoint(tmp_path):
    """train() tests the best checkpoint, which restores EpochHistory to that epoch; TensorBoard keeps them all."""
    metrics = train(compose_cfg(tmp_path, "trainer.max_epochs=2"))
    truncated = {**metrics, "history": {k: v[:1] for k, v in metrics["history"].items()}}
    recovered = full_history(tmp_path, truncated)
    assert recovered.keys() == metrics["history"].keys()
    for key, values in metrics["history"].items():
        assert recovered[key] == pytest.approx(values, abs=1e-5), key
    assert full_history(tmp_path, metrics) is metrics["history"]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """One --tiny report for the tests below, writing its summary into a copy of the project's README.
    (25 training runs: conftest's SHARED_FIXTURES keeps the tests using it in one pytest-xdist worker.)"""
    root = tmp_path_factory.mktemp("report")
    before = (ROOT / "README.md").read_bytes()
    (root / "README.md").write_bytes(before)
    md = build(
        "tiny", "mnist_subset", root / "docs", root / "runs", echo=lambda s: None, readme=root / "README.md", workers=2
    )
    return SimpleNamespace(root=root, md=md, readme=root / "README.md", before=before)


def test_report_writes_every_figure_and_table(tiny_report):
    tmp_path, text = tiny_report.root, tiny_report.md.read_text()
    pictures = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", text)
    assert len(set(pictures)) == 9
    for name in pictures:
        assert (tmp_path / "docs" / name).stat().st_size > 5_000, name
    for heading in (
        "NNDL ch. 1 and ch. 3",
        "Quadratic cost vs cross-entropy",
        "Optimizers",
        "Hidden activations",
        "Mini-batch size",
        "Vanishing gradients",
        "Exploding gradients",
    ):
        assert f"## {heading}" in text
    assert "| nielsen_ch1 (test/acc) |" in text and "95.42%" in text and "0.00298" in text
    assert "python train.py -m experiment=optimizers data=mnist_subset" in text
    # plain SGD at momentum's effective step 0.05 / (1 - 0.9) runs as a control, and the verdict is measured
    assert "| `optimizer=sgd optimizer.lr=0.5` |" in text
    assert re.search(
        r"`optimizer=momentum` against plain SGD at the same lr 0\.05: val/acc after epoch 1 "
        r"[\d.]+% ± [\d.]+ vs [\d.]+% ± [\d.]+, paired difference [+-][\d.]+ ± [\d.]+ points over 2 seeds "
        r"\((beat|lost|level)",
        text,
    )
    tracked = tmp_path / "runs" / "vanishing_gradients" / "activation=sigmoid,model.hidden=[30,30,30,30]"
    norms = json.loads((tracked / "delta_norms.json").read_text())["delta_norms"]
    assert len(norms) == 2 and all(len(n) == 5 for n in norms)  # at init and after the one epoch; 4 hidden + output
    assert not list(tmp_path.glob("*.png"))  # nothing outside --out


def test_report_replaces_only_the_readme_results_region(tiny_report):
    before, after = tiny_report.before, tiny_report.readme.read_bytes()
    start, end = before.index(BEGIN.encode()) + len(BEGIN), before.index(END.encode())
    assert after[:start] == before[:start]  # byte for byte up to and including the begin marker
    assert after.endswith(before[end:])  # and from the end marker on
    region = after[start : len(after) - len(before) + end].decode()
    assert region != before[start:end].decode() and region.startswith("\n") and region.endswith("\n")
    assert "| Claim | Ours | Published | Command | Verdict |" in region and re.search(
        r"\(tiny mode, \d+ runs, 2 at a time\)", region
    )
    assert "| 95.42% | `python train.py experiment=nielsen_ch1 data=mnist_subset" in region
    assert "momentum speeds up learning" in region and "plain SGD at the same lr 0.05" in region
    figures = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", region)
    assert len(figures) == 9 and all((tiny_report.root / f).is_file() for f in figures)  # relative to the README
    write_readme(tiny_report.readme, region)  # the same summary again: the same file
    assert tiny_report.readme.read_bytes() == after


@pytest.mark.parametrize(
    "text",
    [
        "# project\n\n## Results\n\nhand-typed numbers\n",
        f"## Results\n{END}\nold\n{BEGIN}\n",
        f"{BEGIN}\nno end marker\n",
    ],
)
def test_readme_without_markers_is_an_error_not_an_edit(tmp_path, text):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    with pytest.raises(ConfigError, match="markers") as e:
        write_readme(readme, "new results")
    assert "\n" not in str(e.value) and readme.read_text() == text


def test_report_script_checks_the_readme_before_training(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# project\n")
    result = run_in_process(
        "scripts/report.py",
        "--tiny",
        "--readme",
        str(readme),
        "--out",
        str(tmp_path / "docs"),
        "--runs",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "(add them, or pass --no-readme)" in result.stderr
    assert readme.read_text() == "# project\n" and not (tmp_path / "runs").exists() and not (tmp_path / "docs").exists()

"""TensorBoard inspection: the pure picture functions, and what the callbacks write during a tiny fit."""

import copy
import csv
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from backprop_lab.inspection import figures
from backprop_lab.inspection.tensorboard import LayerGradients, Pictures
from backprop_lab.training.module import LitMLP

SGD = {"_target_": "torch.optim.SGD", "lr": 0.5}
N_TRAIN, BATCH, EPOCHS = 200, 10, 2
STEPS = N_TRAIN // BATCH * EPOCHS  # 40 optimizer steps: global_step 0..39 in the hook


class TinyData(L.LightningDataModule):
    """Stand-in for the project's datamodule: random 784-pixel digits, in-memory, unshuffled."""

    def __init__(self, n_train: int = N_TRAIN, n_test: int = 50, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.train_x, self.train_y = torch.rand(n_train, 784, generator=g), torch.randint(10, (n_train,), generator=g)
        self.test_x, self.test_y = torch.rand(n_test, 784, generator=g), torch.randint(10, (n_test,), generator=g)
        self.classes = [str(d) for d in range(10)]

    def _loader(self, x, y):
        return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False)

    def train_dataloader(self):
        return self._loader(self.train_x, self.train_y)

    def val_dataloader(self):
        return self._loader(self.test_x[:20], self.test_y[:20])

    def test_dataloader(self):
        return self._loader(self.test_x, self.test_y)


def _fit(save_dir, callbacks, logger="tb", epochs=EPOCHS, seed=0, **trainer_kwargs):
    """Fit then test a [784, 8, 10] manual MLP; returns the module's initial copy and the module."""
    L.seed_everything(seed, verbose=False)
    module = LitMLP(sizes=[784, 8, 10], model="manual", optimizer=SGD)
    initial = copy.deepcopy(module)
    if logger == "tb":
        logger = TensorBoardLogger(save_dir, name="", version="", default_hp_metric=False)
    elif logger == "csv":
        logger = CSVLogger(save_dir, name="", version="")
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **{"log_every_n_steps": 5, **trainer_kwargs},
    )
    dm = TinyData()
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    return initial, module, dm


def _events(path) -> EventAccumulator:
    return EventAccumulator(str(path), size_guidance={"images": 0, "histograms": 0, "scalars": 0}).Reload()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One fit + test with both callbacks as configured in the project; shared by the tests below."""
    path = tmp_path_factory.mktemp("tb")
    initial, module, dm = _fit(path, [LayerGradients(every_n_steps=5, histogram_every_n_steps=10), Pictures()])
    return SimpleNamespace(ea=_events(path), initial=initial, module=module, dm=dm)


# ----------------------------------------------------------------------------- pure functions


def test_confusion_matrix_counts_hand_made_example():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 1, 2, 0, 2])
    expected = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 2]])  # row = true, column = predicted
    assert torch.equal(figures.confusion_matrix(pred, y, 3), expected)
    assert figures.confusion_matrix(pred, y, 4).shape == (4, 4)


@pytest.mark.parametrize("units, rows, cols", [(15, 4, 4), (8, 3, 3), (1, 1, 1), (300, 10, 10)])
def test_hidden_unit_tiles_grid_shape_and_each_tile_spans_0_1(units, rows, cols):
    W = torch.randn(units, 784) * 5 + 3
    img = figures.hidden_unit_tiles(W, max_units=100, pad=1)
    assert img.shape == (1, rows * 29 + 1, cols * 29 + 1)
    for i in range(min(units, 100)):
        r, c = divmod(i, cols)
        tile = img[0, 1 + 29 * r : 29 * (r + 1), 1 + 29 * c : 29 * (c + 1)]
        assert tile.shape == (28, 28)
        assert tile.min().item() == 0.0 and tile.max().item() == pytest.approx(1.0)
        w = W[i]  # the tile is its own row, rescaled to [0, 1]
        torch.testing.assert_close(tile.flatten(), (w - w.min()) / (w.max() - w.min()))
    if units < rows * cols:  # unused cells are blank (the border value)
        assert (img[0, -29:, -29:] == 1.0).all()


def test_hidden_unit_tiles_rejects_non_square_rows():
    with pytest.raises(ValueError, match="square"):
        figures.hidden_unit_tiles(torch.randn(3, 100 + 1))


def test_misclassified_figure_titles_only_the_mistakes():
    x = torch.rand(6, 784)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    pred = torch.tensor([0, 7, 2, 9, 4, 1])
    fig = figures.misclassified_figure(x, pred, y, [str(d) for d in range(10)])
    assert [t.get_text() for t in fig.axes[0].texts] == ["pred 7 / true 1", "pred 9 / true 3", "pred 1 / true 5"]
    mosaic = fig.axes[0].images[0].get_array()
    assert mosaic.shape == (28 + 9, 3 * (28 + 2))  # one row of three digits with title bands
    assert mosaic.min() == 0 and mosaic.max() == pytest.approx(1.0)
    long_names = [f"class number {d}" for d in range(10)]  # too long for a tile: indices instead
    fig = figures.misclassified_figure(x, pred, y, long_names, max_images=2)
    assert [t.get_text() for t in fig.axes[0].texts] == ["pred 7 / true 1", "pred 9 / true 3"]
    short_names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    fig = figures.misclassified_figure(x, pred, y, short_names, max_images=1)
    assert [t.get_text() for t in fig.axes[0].texts] == ["pred seven / true one"]
    assert isinstance(figures.misclassified_figure(x, y, y), Figure)  # none wrong: a note, no crash


def test_confusion_figure_shows_counts_and_class_names():
    cm = torch.tensor([[5, 1], [0, 3]])
    fig = figures.confusion_figure(cm, ["cat", "dog"])
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0", "1", "3", "5"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog"]
    assert "0.8889" in ax.get_title()


@pytest.mark.parametrize("model", ["manual", "reference"])
def test_layer_parameters_are_W_and_b_per_lecture_layer(model):
    net = LitMLP(sizes=[784, 15, 12, 10], model=model, optimizer=SGD).net
    shapes = [(tuple(W.shape), tuple(b.shape)) for W, b in figures.layer_parameters(net)]
    assert shapes == [((15, 784), (15,)), ((12, 15), (12,)), ((10, 12), (10,))]


def test_predictions_batches_and_restores_train_mode():
    module = LitMLP(sizes=[784, 8, 10], optimizer=SGD).train()
    x = torch.rand(25, 784)
    pred = figures.predictions(module, x, batch_size=10)
    assert module.training
    assert torch.equal(pred, module(x).argmax(1))


def test_layer_gradients_does_nothing_between_logging_steps():
    """Off-schedule steps return before touching the module (no norms, no host sync)."""
    cb = LayerGradients(every_n_steps=5, histogram_every_n_steps=10)
    trainer = SimpleNamespace(global_step=3, is_global_zero=True, loggers=[object()])
    cb.on_before_optimizer_step(trainer, object(), None)  # an object() module would raise if used
    with pytest.raises(AttributeError):
        cb.on_before_optimizer_step(SimpleNamespace(**{**vars(trainer), "global_step": 5}), object(), None)


# ----------------------------------------------------------------------------- end to end


def test_fit_writes_every_tag(run):
    tags = run.ea.Tags()
    for l in (1, 2):
        for name in ("delta_norm", "dW_norm"):
            assert f"{name}/layer{l}" in tags["scalars"]
            assert len(run.ea.Scalars(f"{name}/layer{l}")) >= 3
        for kind in ("weights", "grads"):
            for p in ("W", "b"):
                assert f"{kind}/{p}{l}" in tags["histograms"]
    assert {"features/hidden_units", "test/misclassified", "test/confusion_matrix"} <= set(tags["images"])


def test_scalars_and_histograms_only_at_configured_steps(run):
    for tag in ("delta_norm/layer1", "dW_norm/layer2"):
        assert [e.step for e in run.ea.Scalars(tag)] == list(range(0, STEPS, 5))
    assert [e.step for e in run.ea.Histograms("grads/W1")] == list(range(0, STEPS, 10))


def test_pictures_after_each_validation_epoch_and_test_not_sanity_check(run):
    per_epoch = N_TRAIN // BATCH
    for tag in ("features/hidden_units", "test/misclassified", "test/confusion_matrix"):
        assert [e.step for e in run.ea.Images(tag)] == [per_epoch, 2 * per_epoch, 2 * per_epoch], tag
    tiles = run.ea.Images("features/hidden_units")[0]
    assert (tiles.height, tiles.width) == (3 * 29 + 1, 3 * 29 + 1)  # 8 units: a 3x3 grid


def test_logged_delta_norm_is_the_bias_gradient_of_the_first_batch(run):
    """Step 0: recompute with autograd (ReferenceMLP) from the initial weights and the first batch."""
    reference = LitMLP(sizes=[784, 8, 10], model="reference", optimizer=SGD)
    reference.load_state_dict(run.initial.state_dict())
    x, y = run.dm.train_x[:BATCH], run.dm.train_y[:BATCH]
    reference.net.loss(reference(x), y, "cross_entropy").backward()
    for l, (W, b) in enumerate(figures.layer_parameters(reference.net), start=1):
        delta_norm = run.ea.Scalars(f"delta_norm/layer{l}")[0]
        dW_norm = run.ea.Scalars(f"dW_norm/layer{l}")[0]
        assert delta_norm.step == dW_norm.step == 0
        assert delta_norm.value == pytest.approx(b.grad.norm().item(), rel=1e-5)
        assert dW_norm.value == pytest.approx(W.grad.norm().item(), rel=1e-5)
    values = [e.value for l in (1, 2) for e in run.ea.Scalars(f"delta_norm/layer{l}")]
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert run.ea.Scalars("delta_norm/layer1")[0].value != run.ea.Scalars("delta_norm/layer2")[0].value


def test_weight_histogram_matches_the_weights(run):
    h0 = run.ea.Histograms("weights/W1")[0].histogram_value
    W1 = figures.layer_parameters(run.initial.net)[0][0]
    assert h0.num == W1.numel()
    assert h0.min == pytest.approx(W1.min().item()) and h0.max == pytest.approx(W1.max().item())


def test_disabled_and_every_other_epoch(tmp_path):
    callbacks = [LayerGradients(every_n_steps=0, histogram_every_n_steps=0), Pictures(2, n_misclassified=4)]
    _fit(tmp_path, callbacks, epochs=2, limit_train_batches=3, log_every_n_steps=1)
    ea = _events(tmp_path)
    assert not any(t.startswith(("delta_norm", "dW_norm")) for t in ea.Tags()["scalars"])
    assert ea.Tags()["histograms"] == []
    assert [e.step for e in ea.Images("features/hidden_units")] == [6, 6]  # epoch 2 and test; not epoch 1
    _fit(tmp_path / "off", [Pictures(0)], epochs=1, limit_train_batches=2)
    assert _events(tmp_path / "off").Tags()["images"] == []  # 0: not after testing either


def test_other_logger_gets_scalars_and_no_pictures(tmp_path):
    """A CSVLogger receives the norms; histograms and pictures are skipped without error."""
    callbacks = [LayerGradients(every_n_steps=3, histogram_every_n_steps=2), Pictures()]
    _fit(tmp_path, callbacks, logger="csv", epochs=1, limit_train_batches=8)
    with open(tmp_path / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("delta_norm/layer1")]
    assert [int(r["step"]) for r in rows] == [0, 3, 6]
    assert all(float(r["dW_norm/layer2"]) > 0 for r in rows)
    _fit(tmp_path / "none", [LayerGradients(1, 1), Pictures()], logger=False, epochs=1, limit_train_batches=2)

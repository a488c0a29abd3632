"""The report's figures: one PNG per claim, drawn from the results `report.collect` returns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from backprop_lab.inspection.delta_norms import hidden_mean
from backprop_lab.inspection.figures import hidden_unit_tiles, layer_parameters
from backprop_lab.reporting.markdown import ANCHORS, PUBLISHED, hidden_layers, status
from backprop_lab.training.checkpoints import load_checkpoint


def plot_at_init(ax, runs: list[dict[str, Any]]) -> None:
    """Mean hidden-layer norms against l per run (relu dashed), published values as crosses."""
    for m in runs:
        mean, relu = hidden_mean(m["at_init"]), "relu" in m["variant"]
        k = len(mean)
        plot_by_layer(
            ax,
            mean,
            None if relu else PUBLISHED.get(k),
            f"C{k - 1}",
            f"{'relu' if relu else 'sigmoid'}, {k} hidden",
            ls="--" if relu else "-",
            alpha=0.5 if relu else 1,
        )
    ax.legend(fontsize=7, ncol=2)


def plot_by_layer(
    ax,
    norms: list[float],
    published: list[float] | None = None,
    color: str | None = None,
    label: str = "",
    **style: Any,
) -> None:
    """One net's norms against the layer number l = 1.., published values as crosses, log scale."""
    ax.plot(range(1, len(norms) + 1), norms, marker="o", color=color, label=label, **style)
    if published:
        ax.plot(range(1, len(published) + 1), published, "x", ms=9, mew=2, color=color, label=f"published, {label}")
    ax.set(yscale="log", xlabel="layer l", ylabel="‖delta^l‖ = ‖dC/db^l‖", xticks=range(1, len(norms) + 1))


def plot_by_epoch(ax, norms: list[list[float]], title: str) -> None:
    """Each hidden layer's norm against the epoch (0: initialisation), log scale."""
    for l, series in enumerate(zip(*(n[:-1] for n in norms)), start=1):
        ax.plot(range(len(series)), series, marker="o", ms=3, label=f"layer {l}")
    ax.set(yscale="log", xlabel="epoch (0: initialisation)", ylabel="‖delta^l‖", title=title)
    ax.legend(fontsize=8)


def _axes(n: int, title: str) -> tuple[Figure, list]:
    fig = Figure(figsize=(5.2 * n, 3.8), layout="constrained")
    fig.suptitle(title)
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def _curves(
    ax,
    runs: list[dict],
    key: str = "val/acc",
    label: Callable = lambda m: m["variant"],
    per_epoch: Callable | None = None,
) -> None:
    """key per epoch for each run; x = epoch, or epoch * per_epoch(m) (e.g. seconds per epoch)."""
    for m in runs:
        h, scale = m.get("history") or {}, 100 if key.endswith("acc") else 1
        tag = "" if m["status"] == "completed" else f" ({status(m)})"
        x = [e * (per_epoch(m) if per_epoch else 1) for e in h.get("epoch", [])]
        ax.plot(x, [scale * v for v in h.get(key, [])], marker="o", ms=3, label=label(m) + tag)
    ax.set(xlabel="epoch", ylabel=f"{key} (%)" if key.endswith("acc") else key)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _published(ax, value: float, label: str, color: str = "k") -> None:
    ax.axhline(100 * value, ls="--", lw=1, color=color, label=f"published {label}: {100 * value:.2f}%")
    ax.legend(fontsize=8)


def draw(res: dict[str, Any], out: Path) -> list[str]:
    """One PNG per claim into out; returns their names."""
    figs: dict[str, Figure] = {}
    fig, axes = figs["nielsen.png"] = _axes(2, "NNDL ch. 1 and ch. 3 networks")
    for ax, name in zip(axes, ("nielsen_ch1", "nielsen_ch3")):
        _curves(ax, [res[name]], label=lambda m, name=name: name)
        _published(ax, ANCHORS[name][0], ANCHORS[name][1])
    fig, (ax,) = figs["mse_vs_cross_entropy.png"] = _axes(1, "Quadratic cost vs cross-entropy (784-30-10, N(0,1) init)")
    _curves(ax, res["mse_vs_cross_entropy"])
    for color, key in (("C0", "loss=mse"), ("C1", "loss=cross_entropy")):
        _published(ax, ANCHORS[key][0], key, color)
    for name, title in (("optimizers", "Optimizers"), ("activations", "Hidden activations")):
        fig, (a, b) = figs[f"{name}.png"] = _axes(2, f"{title} (784-30-10, softmax + cross-entropy)")
        _curves(a, res[name])
        _curves(b, res[name], "train/loss")
        b.set_yscale("log")
    fig, (ax,) = figs["batch_size.png"] = _axes(1, "Mini-batch size: validation accuracy against training time")
    _curves(ax, res["batch_size"], per_epoch=lambda m: m.get("train_seconds", 0) / max(1, m.get("epochs") or 1))
    ax.set(xscale="log", xlabel="training seconds (train_seconds spread evenly over the epochs)")
    fig, (ax,) = figs["vanishing_gradients.png"] = _axes(1, "‖delta^l‖ at initialisation, first 1,000 training images")
    plot_at_init(ax, res["vanishing_gradients"])
    fig, axes = figs["vanishing_training.png"] = _axes(2, "‖delta^l‖ during training, 4 hidden layers")
    for ax, m in zip(axes, [m for m in res["vanishing_gradients"] if hidden_layers(m) == 4]):
        plot_by_epoch(ax, m["delta_norms"], m["variant"])
    fig, (a, b) = figs["exploding_gradients.png"] = _axes(2, "Exploding gradients: 4x100 ReLU, N(0,1) init")
    plot_by_layer(a, res["exploding_at_init"], label="at initialisation (last: output layer)")
    a.legend(fontsize=8)
    _curves(b, res["exploding_gradients"])
    fig, axes = figs["hidden_units.png"] = _axes(2, "Hidden units: rows of W^1 as 28x28 images")
    for ax, name, init in zip(axes, ("nielsen_ch1", "nielsen_ch3"), ("N(0,1)", "N(0,1/n_in)")):
        m = res[name]
        ckpt = m.get("best_ckpt") or f"{m['run_dir']}/checkpoints/last.ckpt"
        member = 0 if (m.get("population") or 1) > 1 else None  # a population: its first member's units
        W1 = layer_parameters(load_checkpoint(ckpt, member=member).net)[0][0]
        ax.imshow(hidden_unit_tiles(W1)[0].numpy(), cmap="gray")
        ax.set_title(f"{name}, {init} init", fontsize=9)
        ax.axis("off")
    for name, (fig, _) in figs.items():
        fig.savefig(out / name, dpi=100)
    return list(figs)

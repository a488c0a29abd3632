"""What the benchmark compares and how much work it does: the configurations, the models, the
project's cost and learning rate, and the `Budget` of repeats (`Budget.tiny_budget()` for tests)."""

from __future__ import annotations

from dataclasses import dataclass

from backprop_lab.core.models import ManualMLP, ReferenceMLP

COST = "cross_entropy"
LR = 0.5  # conf/optimizer/sgd.yaml's lr, so both sides of every comparison take the project's step

# name -> (sizes, batch size): the configurations of the step and saved-bytes comparisons
STEP_CONFIGS: dict[str, tuple[list[int], int]] = {
    "784-30-10/b10": ([784, 30, 10], 10),
    "784-30-10/b100": ([784, 30, 10], 100),
    "784-30-10/b1000": ([784, 30, 10], 1000),
    "784-100-10/b10": ([784, 100, 10], 10),
    "784-100-100-100-100-10/b10": ([784, 100, 100, 100, 100, 10], 10),
}
# name -> (sizes, batch size, members): a population's step against one network's
POPULATION_CONFIGS: dict[str, dict[str, tuple[list[int], int, int]]] = {
    "cpu": {"784-30-10/b10/N10": ([784, 30, 10], 10, 10)},
    "cuda": {"784-30-10/b10/N10": ([784, 30, 10], 10, 10), "784-30-10/b10/N100": ([784, 30, 10], 10, 100)},
}
CUDA_CONFIGS: dict[str, tuple[list[int], int]] = {
    "784-100-10/b1000": ([784, 100, 10], 1000),
    "784-1000-1000-10/b1000": ([784, 1000, 1000, 10], 1000),
}
MODELS = {"manual": ManualMLP, "reference": ReferenceMLP}


@dataclass
class Budget:
    """How much work each measurement does. `tiny()` is for tests: every key, almost no work."""

    repeats: int = 15  # timed repeats per side (medians over these)
    warmup: int = 2  # untimed repeats per side first
    step_repeat_s: float = 0.1  # target seconds per timed repeat of the step comparison
    max_steps: int = 100_000  # cap on steps per repeat
    min_steps: int = 20  # floor on steps per repeat (a stall during calibration must not leave 1)
    epoch_train_size: int | None = None  # None: the whole training set
    epoch_batch_sizes: tuple[int, ...] = (10, 100)
    epoch_repeats: int = 5  # timed Lightning/bare epoch pairs per batch size
    epoch_warmup: int = 1  # untimed pairs first
    pool: int = 8  # distinct batches cycled through by the step comparison
    textbook_batches: int = 1000  # mini-batches of 10 per timed textbook repeat (scaled up to an epoch)
    cuda_repeat_steps: int = 50
    tiny: bool = False

    @classmethod
    def tiny_budget(cls) -> Budget:
        return cls(
            repeats=3,
            warmup=1,
            step_repeat_s=0.0,
            max_steps=2,
            min_steps=1,
            epoch_train_size=200,
            textbook_batches=5,
            cuda_repeat_steps=2,
            epoch_repeats=1,
            epoch_warmup=0,
            pool=1,
            tiny=True,
        )

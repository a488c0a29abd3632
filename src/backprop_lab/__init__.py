"""backprop_lab: the lecture's backpropagation, hand-written, checked against autograd, trained with Lightning.

Layers, each importing only those before it: `core` (the math, torch only), `data`, `inspection`
(TensorBoard pictures, delta norms, users' digits), `training` (the LightningModule, train(cfg),
checkpoints, config checks), `reporting` (sweep summaries, the results report).
"""

from backprop_lab.core import Backprop, ManualCost, ManualMLP, ReferenceMLP, manual_cost, reference_cost

__all__ = ["Backprop", "ManualCost", "ManualMLP", "ReferenceMLP", "manual_cost", "reference_cost"]

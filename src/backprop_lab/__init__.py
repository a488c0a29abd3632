"""backprop_lab: the lecture's backpropagation, hand-written, checked against autograd, trained with Lightning."""

from backprop_lab.backprop import Backprop
from backprop_lab.costs import ManualCost, manual_cost, reference_cost
from backprop_lab.models import ManualMLP, ReferenceMLP

__all__ = ["Backprop", "ManualCost", "ManualMLP", "ReferenceMLP", "manual_cost", "reference_cost"]

"""The lecture, framework-free: activations, costs, the two passes of backpropagation, the two MLPs.

Imports torch only (a test asserts that importing it loads neither Lightning nor Hydra).
"""

from backprop_lab.core.backprop import Backprop
from backprop_lab.core.costs import ManualCost, manual_cost, reference_cost
from backprop_lab.core.models import ManualMLP, ReferenceMLP

__all__ = ["Backprop", "ManualCost", "ManualMLP", "ReferenceMLP", "manual_cost", "reference_cost"]

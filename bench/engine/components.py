"""The component registries in one import: activations, initialisations, optimizers, learning-rate schedules
(each defined in its own module)."""

from .activations import ACTIVATIONS, Activation
from .inits import INITS, apply_init, fans
from .optim import OPTIMIZERS, SCHEDULES

__all__ = ["ACTIVATIONS", "Activation", "INITS", "apply_init", "fans", "OPTIMIZERS", "SCHEDULES"]

"""ganforge: train generative adversarial networks with PyTorch."""

from ganforge.export import SampleableGenerator, load_generator
from ganforge.losses import LOSSES, get_loss
from ganforge.noise import NoiseSampler
from ganforge.steps import discriminator_step, frozen, generator_step

__version__ = "0.1.0"

__all__ = [
    "LOSSES",
    "NoiseSampler",
    "SampleableGenerator",
    "__version__",
    "discriminator_step",
    "frozen",
    "generator_step",
    "get_loss",
    "load_generator",
]

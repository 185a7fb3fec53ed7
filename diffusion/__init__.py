"""Class-conditional diffusion on MNIST and Fashion-MNIST: Lightning + Hydra experiment framework."""

from diffusion.runtime import register_resolvers

register_resolvers()
__version__ = "0.1.0"

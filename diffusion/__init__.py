"""Class-conditional diffusion on MNIST and Fashion-MNIST: Lightning + Hydra experiment framework."""

from diffusion import runs, runtime

runtime.register_resolvers()
runs.register_resolvers()
__version__ = "0.1.0"

"""Hydra plugins of diffusion-mnist (Hydra loads sweepers only from the `hydra_plugins` namespace)."""

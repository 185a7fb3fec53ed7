"""Train a class-conditional diffusion model: `python train.py schedule=cosine guidance=0.2`."""

import hydra
from omegaconf import DictConfig

import diffusion  # noqa: F401  (registers the config resolvers)
from diffusion.cli import run_cli
from diffusion.train import objective, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the `objective` metric for sweepers."""
    result = run_cli(train, cfg, cfg.run_dir)
    return objective(result, cfg.objective) if isinstance(result, dict) else result


if __name__ == "__main__":
    main()

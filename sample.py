"""Sample from a trained checkpoint: `python sample.py ckpt_path=... mode=grid guidance=0.2`."""

import hydra
from omegaconf import DictConfig

import diffusion  # noqa: F401  (registers the config resolvers)
from diffusion.cli import run_cli
from diffusion.sample import run


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_cli(run, cfg, cfg.out_dir)


if __name__ == "__main__":
    main()

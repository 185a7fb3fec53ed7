"""LightningModules for the multi-process tests (`module._target_=ddp_probes.<name>` with tests/ on PYTHONPATH)."""

import hashlib
import os
from pathlib import Path

import torch

from diffusion.module import DiffusionModule


class NoiseProbe(DiffusionModule):
    """Writes a digest of the first training step's random draws per rank to <run dir>/noise_rank<r>.txt."""

    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            draws = torch.randn(64, device=self.device)  # from the same generator as t, ε and label dropout
            digest = hashlib.sha256(draws.cpu().numpy().tobytes()).hexdigest()
            Path(self.trainer.default_root_dir, f"noise_rank{self.global_rank}.txt").write_text(digest)
        return super().training_step(batch, batch_idx)


class NaNOnRankOne(DiffusionModule):
    """The loss turns NaN on rank 1 only, from step 3 on."""

    def diffusion_loss(self, x0, y, generator=None):
        loss = super().diffusion_loss(x0, y, generator)
        return loss * float("nan") if self.global_rank == 1 and self.global_step >= 3 else loss


class CrashOnRankZero(DiffusionModule):
    """Rank 0 crashes at step 3 while rank 1 waits for it in the gradient all-reduce."""

    def training_step(self, batch, batch_idx):
        if self.global_rank == 0 and self.global_step == 3:
            raise RuntimeError("planted crash on rank 0")
        return super().training_step(batch, batch_idx)


class NaNOnRankOneOfOneSchedule(NaNOnRankOne):
    """NaNOnRankOne for the schedule named by $PROBE_NAN_SCHEDULE only: one sweep point fails, the others train."""

    def diffusion_loss(self, x0, y, generator=None):
        if self.hparams.schedule["kind"] != os.environ.get("PROBE_NAN_SCHEDULE"):
            return DiffusionModule.diffusion_loss(self, x0, y, generator)
        return super().diffusion_loss(x0, y, generator)

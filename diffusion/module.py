"""LightningModule: thin glue around the U-Net, the noise schedule, the loss and the samplers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from diffusion.checks import ConfigError, check_choice, check_positive, is_number
from diffusion.samplers import Job, sample_generators
from diffusion.schedule import LOSS_WEIGHTS, PREDICTIONS, NoiseSchedule

LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def plain(cfg: Any) -> Any:
    """DictConfig -> plain containers (checkpoints then load without Hydra objects)."""
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 200,
                  min_lr_ratio: float = 0.1, decay: bool = True) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to min_lr_ratio·lr at total_steps (Loshchilov & Hutter 2017), or constant."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not decay or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile's modes; reduce-overhead: CUDA graphs


def compile_mode(setting: bool | str | None) -> str | None:
    """The torch.compile mode of a `compile` setting: false/null -> None (eager), true -> "default", or a mode."""
    if setting is None or setting is False:
        return None
    if setting is True:
        return "default"
    if setting in COMPILE_MODES:
        return str(setting)
    raise ValueError(f"compile must be true, false or one of {', '.join(COMPILE_MODES)}; got {setting!r}")


class DiffusionModule(L.LightningModule):
    """DDPM with classifier-free guidance training (Ho et al. 2020; Ho & Salimans 2022); the network predicts ε, v or
    x_0, and `forward` always returns ε̂ so that the samplers need not know which."""

    def __init__(self, net: dict, schedule: dict, optimizer: dict, lr_scheduler: dict | None = None,
                 loss: str = "mse", p_uncond: float = 0.1, guidance: float = 0.0, sampler: dict | None = None,
                 class_names: Sequence[str] = tuple("0123456789"), data_name: str = "mnist",
                 channels_last: bool | None = None, data: dict | None = None, prediction: str = "eps",
                 loss_weight: str = "none", snr_gamma: float = 5.0, compile: bool | str = False) -> None:
        super().__init__()
        net, schedule, optimizer, lr_scheduler, sampler, data = map(
            plain, (net, schedule, optimizer, lr_scheduler, sampler, data))
        class_names = list(plain(class_names))
        check_choice(loss, LOSSES, "loss")
        check_choice(prediction, PREDICTIONS, "prediction")
        check_choice(loss_weight, LOSS_WEIGHTS, "loss_weight")
        check_positive(snr_gamma, "snr_gamma")
        if not is_number(p_uncond) or not 0 <= p_uncond <= 1:
            raise ConfigError(f"p_uncond must be in [0, 1], got {p_uncond!r}")
        if is_number(guidance) and guidance > 0 and p_uncond == 0:
            raise ConfigError("guidance > 0 needs p_uncond > 0 "
                              "(the unconditional model ε(x,t,∅) is learnt from dropped labels)")
        self.save_hyperparameters()
        # The data set's spec (diffusion.datasets.DataSpec) sets the image shape; checkpoints keep a copy.
        shape = {"in_channels": data["channels"], "image_size": data["size"] + 2 * data["pad"]} if data else {}
        self.net = instantiate(net, num_classes=len(class_names), null_class=p_uncond > 0, **shape)
        self.schedule: NoiseSchedule = instantiate(schedule)
        self.image_shape: tuple[int, int, int] = tuple(self.net.image_shape)  # (C, H, W): what sampling draws
        self.null_label = len(class_names) if p_uncond > 0 else -1
        self.channels_last = channels_last  # None: per device type (diffusion.runtime.CHANNELS_LAST)
        self.nonfinite_at: Tensor | None = None  # first step with a NaN/inf loss, kept on the device (no host sync)
        compile_mode(compile)  # a bad setting fails here, in one line
        self.__dict__["_compiled"] = None  # the network compiled for training (on_fit_start); not a submodule
        self.apply_layout()

    @property
    def data_spec(self) -> Any:
        """The training data set's spec: the checkpoint's copy, or (older checkpoints) the registry's entry."""
        from diffusion.datasets import DataSpec

        return DataSpec.of(self.hparams.data or self.hparams.data_name)

    def uses_channels_last(self) -> bool:
        """The configured layout, or (channels_last=None) the rule for the device the module is on."""
        from diffusion.runtime import use_channels_last

        return use_channels_last(self.device) if self.channels_last is None else self.channels_last

    def apply_layout(self) -> None:
        """Put the convolution weights in the layout the inputs will have on the current device."""
        layout = torch.channels_last if self.uses_channels_last() else torch.contiguous_format
        self.net.to(memory_format=layout)

    def on_fit_start(self) -> None:
        self.apply_layout()  # now on the training device
        mode = compile_mode(self.hparams.compile)
        if mode is not None:  # training only: sampling keeps the eager network (other shapes, no recompiles)
            self.__dict__["_compiled"] = torch.compile(self.net, mode=mode)  # shares the weights: one state_dict
        if self.trainer.world_size > 1:  # each rank its own t, ε and label dropout (else the global batch repeats)
            torch.manual_seed((torch.initial_seed() + 7919 * self.trainer.global_rank) % 2**63)

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.uses_channels_last() else x

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """ε̂_θ(x_t, t, y), converted from the network's v or x_0 prediction when it predicts those."""
        out = self.net(self._layout(x), t, y)
        prediction = self.hparams.prediction
        return out if prediction == "eps" else self.schedule.eps_from(prediction, x.float(), t, out.float())

    def diffusion_loss(self, x0: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """E_{t,ε} w_t·‖target − net(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t, y)‖ (Ho et al. 2020, eq. 14 for target ε, w=1; L1
        optional; targets and weights in diffusion.schedule)."""
        b, hp = x0.shape[0], self.hparams
        t = torch.randint(0, self.schedule.timesteps, (b,), device=self.device, generator=generator)
        noise = torch.randn(x0.shape, device=self.device, generator=generator)
        net = self.net if self._compiled is None else self._compiled
        pred = net(self._layout(self.schedule.q_sample(x0, t, noise)), t, y).float()
        prediction = hp.prediction
        per_sample = LOSSES[hp.loss](pred, self.schedule.target(prediction, x0, t, noise), reduction="none")
        weight = self.schedule.loss_weight(hp.loss_weight, prediction, t, hp.snr_gamma)
        return (weight * per_sample.flatten(1).mean(1)).mean()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x0, y = batch
        if self.hparams.p_uncond > 0:  # label dropout to ∅ (Ho & Salimans 2022, Alg. 1)
            drop = torch.rand(y.shape, device=y.device) < self.hparams.p_uncond
            y = torch.where(drop, torch.full_like(y, self.null_label), y)
        loss = self.diffusion_loss(x0, y)
        self._note_nonfinite(loss)
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.check_finite()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x0.shape[0])
        return loss

    def _note_nonfinite(self, loss: Tensor) -> None:
        """Remember the first step whose loss is not finite, on the device: no host sync per step."""
        step = torch.full((), self.global_step, device=loss.device)
        bad = torch.where(torch.isfinite(loss.detach()), torch.full_like(step, -1), step)
        self.nonfinite_at = bad if self.nonfinite_at is None else torch.where(self.nonfinite_at >= 0,
                                                                              self.nonfinite_at, bad)

    def check_finite(self, agree: bool = True) -> None:
        """Raise NonFiniteLossError if a NaN/inf loss was seen; with `agree`, on every rank at once if any rank saw
        one (so no rank is left waiting in a collective). Runs every `log_every_n_steps` steps, before every
        checkpoint and at the end of training, so no checkpoint or exported weights hold diverged weights.
        """
        if self.nonfinite_at is None or self._trainer is None:
            return
        never = torch.full_like(self.nonfinite_at, 2**62)
        first = torch.where(self.nonfinite_at >= 0, self.nonfinite_at, never)
        if agree:  # one collective says whether and where: the earliest bad step on any rank
            first = self.trainer.strategy.reduce(first, reduce_op="min")
        step = int(first.item())
        if step < 2**62:
            raise NonFiniteLossError(f"the loss became NaN or infinite at step {step}; training stopped, the last "
                                     "checkpoint (saved before it) is kept")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is not None and self.trainer.state.fn == "fit":
            # after an exception the other ranks may not be listening: check this rank alone
            self.check_finite(agree=self.trainer.state.status != "interrupted")

    def on_train_end(self) -> None:
        self.check_finite()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x0, y = batch
        gen = torch.Generator(self.device).manual_seed(batch_idx)  # same t and ε every epoch: comparable losses
        self.log("val/loss", self.diffusion_loss(x0, y, gen), prog_bar=True, sync_dist=True, batch_size=x0.shape[0])

    def configure_optimizers(self) -> Any:
        opt = instantiate(self.hparams.optimizer)(params=self.parameters())  # optimizer configs are `_partial_: true`
        if not self.hparams.lr_scheduler:
            return opt
        settings = dict(self.hparams.lr_scheduler)  # {scheduler: <partial>, interval, monitor, ..., total_steps}
        factory = instantiate(settings.pop("scheduler"))
        extra = {"total_steps": int(self.trainer.estimated_stepping_batches)} if settings.pop("total_steps", 0) else {}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": factory(opt, **extra), **settings}}

    def autocast(self) -> torch.autocast:
        """Autocast on the module's device with training's precision rule (diffusion.runtime.autocast_dtype)."""
        from diffusion.runtime import autocast_dtype

        dtype = autocast_dtype(self.device)
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    @torch.no_grad()
    def sample(self, labels: Tensor, sampler: Any = None, seed: int = 0, indices: Sequence[int] | None = None,
               guidance: float | None = None, **kwargs: Any) -> Tensor:
        """Images in [-1, 1] for `labels`; sample i uses its own generator from (seed, indices[i])."""
        sampler = sampler or instantiate(self.hparams.sampler)
        guidance = self.hparams.guidance if guidance is None else guidance
        if guidance != 0 and self.null_label < 0:
            raise ValueError("guidance ≠ 0 needs a model trained with p_uncond > 0 (it has no null class)")
        indices = range(len(labels)) if indices is None else indices
        was_training = self.training
        self.eval()
        try:
            kwargs.setdefault("shape", self.image_shape)
            with self.autocast():
                job = Job(self, self.schedule, labels.to(self.device), sample_generators(seed, indices),
                          guidance=guidance, null_label=self.null_label, **kwargs)
                return sampler(job).float().clamp(-1, 1)
        finally:
            self.train(was_training)

"""Weights & Biases, the way the ablation tables read: one W&B run per run directory across resumes (or the run a
`wandb agent` started), named after its sweep point, grouped by its sweep and tagged with its swept values, the
resolved config nested as W&B's Hydra integration logs it with each config group's choice on top, every key
sortable in W&B's tables, the evaluation as tables and plots, the model as an artifact (docs/sweeps.md, "Weights &
Biases"). Never prompts or hangs without an account: offline unless logged in, and it says which.
"""

from __future__ import annotations

import json
import netrc
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from diffusion.files import UnreadableFile, atomic_write, read_json_object
from diffusion.records import headline_keys, key_segment, result_rows, value
from diffusion.runs import CONFIG, METRICS, WANDB_IDENTITY, WEIGHTS

DEFAULT_HOST = "https://api.wandb.ai"
AGENT_RUN_ENV = "WANDB_RUN_ID"  # set by `wandb agent` for the run it starts: that run is used, not wandb.json's


def wandb_base_url() -> str:
    """The W&B server: WANDB_BASE_URL (a self-hosted one) or the public one."""
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST


def wandb_logged_in() -> bool:
    """An API key in the environment, or in ~/.netrc for the server's host (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(urlparse(wandb_base_url()).hostname or "") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """WANDB_MODE if set, else online when logged in and offline otherwise ("dryrun", W&B's old word, is offline)."""
    mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    return "offline" if mode == "dryrun" else mode


def wandb_key(key: str) -> str:
    """A logged key that W&B's tables can sort and filter by: each /-separated segment letters, digits and _
    ("lr-AdamW" -> "lr_AdamW"); keys W&B keeps for itself (`_step`, `_runtime`) pass unchanged."""
    return key if key.startswith("_") else "/".join(key_segment(part) for part in key.split("/"))


def hydra_choices() -> dict[str, str]:
    """The option chosen in each config group of this Hydra job (`schedule: linear`), Hydra's own groups left out."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items()
            if v is not None and not k.startswith("hydra")}


def swept_keys(sweep: str | Path) -> set[str]:
    """The keys a sweep varies: its sweeper's params (an experiment's `hydra.sweeper.params`, an Optuna search space)
    and the command line's sweep overrides (`seed=0,1,2`), read from the multirun.yaml Hydra writes in the sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    keys = set()
    if HydraConfig.initialized():
        keys |= set((HydraConfig.get().sweeper.get("params") or {}).keys())
    multirun = Path(sweep) / "multirun.yaml"
    if multirun.is_file():
        task = OmegaConf.load(multirun).hydra.overrides.task
        keys |= {o.get_key_element().lstrip("~+") for o in OverridesParser.create().parse_overrides(list(task))
                 if o.is_sweep_override()}
    return keys


def sweep_identity(default_name: str | None = None) -> dict[str, Any]:
    """Name, group and tags of this run. In a sweep: group `<experiment or data>/<sweep dir>`, name and tags the
    point's own values of the swept keys (`schedule=linear,timesteps=1000`); else `default_name`, no tags."""
    from hydra.core.hydra_config import HydraConfig

    from diffusion.sweeps import sweep_dir

    sweep = sweep_dir()
    if sweep is None or not HydraConfig.initialized():
        return {"name": default_name, "tags": []}
    choices = hydra_choices()
    swept = swept_keys(sweep)
    own = [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0].lstrip("~+") in swept]
    return {"group": f"{choices.get('experiment') or choices.get('data') or 'sweep'}/{Path(sweep).name}",
            "name": ",".join(own) or default_name, "tags": own}


def wandb_config(params: Mapping[str, Any], choices: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A resolved config as W&B shows it: nested as the YAML is (`optim.lr`, `schedule.kind`), as W&B's Hydra
    integration logs it, with each config group's chosen option on top (`choices.schedule: linear`)."""
    return {"choices": dict(choices or {}), **{k: v for k, v in params.items() if k != "hydra"}}


RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a W&B run id as this project writes it (also part of file names)
IDENTITY_TYPES = {"id": str, "name": str, "group": str, "job_type": str, "project": str, "artifact": str,
                  "last_step": int}


def checked_identity(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """wandb.json's values, each of the type this project writes (an id that is a name, not a path)."""
    for key, kind in IDENTITY_TYPES.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise UnreadableFile(path, f"its {key} has type {type(value).__name__}, not {kind.__name__}")
    if "id" in data and not RUN_ID.fullmatch(data["id"]):
        raise UnreadableFile(path, f"its id {data['id'][:40]!r} is not a W&B run id (letters, digits, _ and -)")
    return data


class WandbIdentity:
    """The W&B run of a run directory, kept in its wandb.json: the id every resume logs into again, the name and
    group it was given, its model artifact and the last step it logged (where a resumed attempt carries on)."""

    def __init__(self, run_dir: str | Path, quiet: bool = False) -> None:
        """Read the run directory's wandb.json; one that is unreadable counts as none (said unless `quiet`), one
        that is a directory is UnreadableFile."""
        self.path = Path(run_dir) / WANDB_IDENTITY
        try:
            self.data: dict[str, Any] = checked_identity(self.path, read_json_object(self.path))
        except FileNotFoundError:
            self.data = {}
        except UnreadableFile as err:
            if err.path.is_dir():
                raise UnreadableFile(err.path, "a directory, not the run's W&B identity; move it away and run "
                                               "again") from None
            if not quiet:
                print(f"W&B: {err}; this run directory starts a new W&B run")
            self.data = {}

    @classmethod
    def read_only(cls, run_dir: str | Path) -> WandbIdentity:
        """Another run's identity, for its group, project and artifact: empty where it cannot be read."""
        try:
            return cls(run_dir, quiet=True)
        except UnreadableFile:  # a directory in its place
            empty = cls.__new__(cls)
            empty.path, empty.data = Path(run_dir) / WANDB_IDENTITY, {}
            return empty

    @property
    def exists(self) -> bool:
        return "id" in self.data

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def update(self, **values: Any) -> None:
        """Record values (rank 0)."""
        self.data.update(values)
        text = json.dumps(self.data, indent=1).encode()
        atomic_write(self.path, lambda f: f.write(text))


class WandbRunLogger(WandbLogger):
    """Lightning's WandbLogger, one W&B run per run directory: history steps are optimizer steps, so a resumed run
    continues the curves from its checkpoint; steps W&B already holds for the run (online: its resumed step;
    offline: what earlier attempts wrote) are not logged again, as W&B itself refuses them. Plus the evaluation as
    data and the model as an artifact."""

    def __init__(self, *, identity: WandbIdentity, **kwargs: Any) -> None:
        super().__init__(id=identity.get("id"), **kwargs)
        self.identity = identity
        self._floor: int | None = None
        self._told = False
        self._defined = False

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        run = super().experiment
        if not self._defined:  # the run summary keeps the best validation loss, not the last
            run.define_metric("val/loss", summary="min")
            self._defined = True
        return run

    @property
    def floor(self) -> int:
        """The first step this attempt logs: after every step the run already has in W&B (online: W&B's resumed step;
        either way: the last step recorded in wandb.json)."""
        if self._floor is None:
            run, written = self.experiment, self.identity.get("last_step")
            self._floor = max(0 if run.offline else run.step, written + 1 if isinstance(written, int) else 0)
        return self._floor

    @rank_zero_only
    def log_config(self, config: Mapping[str, Any]) -> None:
        """The run's resolved config, as W&B shows it (wandb_config)."""
        self.experiment.config.update(wandb_config(dict(config), hydra_choices()), allow_val_change=True)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """Lightning's own call with the module's and data module's hyper-parameters: they are in the run's config
        already (`module`, `data`), so nothing is logged over it."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        metrics = {wandb_key(k): v for k, v in metrics.items()}
        if step is None:
            self.experiment.log(metrics)
            return
        if step < self.floor:  # re-done steps of a resumed run
            if not self._told:
                print(f"W&B: steps before {self.floor} are in the run already (an interrupted attempt logged them); "
                      "this attempt logs the steps after them")
                self._told = True
            return
        self._log({**metrics, "trainer/global_step": step}, step)

    def _log(self, data: Mapping[str, Any], step: int) -> None:
        """Log at `step` and record it as the run's last step in wandb.json."""
        self.experiment.log(dict(data), step=step)
        if step != self.identity.get("last_step"):
            self.identity.update(last_step=step)

    def final_step(self, step: int) -> int:
        """The step the end-of-run records go to: the run's last, or the first this attempt may log."""
        return max(step, self.floor)

    @rank_zero_only
    def log_evaluation(self, results: Mapping[str | None, Mapping[float, dict[str, Any]]],
                       class_names: Sequence[str], guidance: float | None, step: int) -> None:
        """The evaluation as data: a table of every (evaluation, ω), FID against ω, the confusion matrix and the
        headline numbers in the run summary (those of the first evaluation at the run's ω)."""
        import wandb

        columns, rows = result_rows(results)
        data: dict[str, Any] = {"eval/results": wandb.Table(columns=columns, data=rows)}
        omegas = sorted({w for by_w in results.values() for w in by_w})
        if len(omegas) > 1:
            data["eval/fid_vs_guidance"] = wandb.plot.line_series(
                xs=omegas, ys=[[value(by_w[w], "fid") if w in by_w else None for w in omegas]
                               for by_w in results.values()],
                keys=[name or "eval" for name in results], title="FID (classifier features) against guidance ω",
                xname="ω")
        primary_name, primary = next(iter(results.items()))
        w = guidance if guidance in primary else next(iter(primary))
        for name, by_w in results.items():
            confusion = by_w.get(w, {}).get("confusion")
            if confusion is not None:
                pairs = [(c, p) for c, row in enumerate(confusion) for p, n in enumerate(row) for _ in range(n)]
                truth, preds = (list(v) for v in zip(*pairs))
                key = "eval/confusion" if name is None else f"eval/{key_segment(name)}/confusion"
                data[key] = wandb.plot.confusion_matrix(y_true=truth, preds=preds, class_names=list(class_names),
                                                        title=f"classifier on samples at ω = {w}"
                                                              + (f" ({name})" if name else ""))
        self._log(data, self.final_step(step))
        m = primary[w]
        self.experiment.summary.update({**{k: v for k in headline_keys() if (v := value(m, k)) is not None},
                                        "evaluation": primary_name or "", "eval_guidance": w,
                                        "eval_samples": m.get("num_samples")})

    @rank_zero_only
    def log_model_artifact(self, run_dir: str | Path, files: Sequence[Path], metadata: Mapping[str, Any],
                  best: bool) -> None:
        """`files` of the run directory (model.safetensors, its config and metrics; never a pickled checkpoint) as
        the model artifact `model-<run id>`, the metrics as metadata; aliases latest and, when these weights are
        the run's best-validation ones, best."""
        import wandb

        name = f"model-{self.experiment.id}"
        artifact = wandb.Artifact(name, type="model", metadata=dict(metadata))
        for path in files:
            artifact.add_file(str(path), name=str(Path(path).relative_to(run_dir)))
        self.experiment.log_artifact(artifact, aliases=["latest", *(["best"] if best else [])])
        self.identity.update(artifact=name)


def wandb_logger(project: str, save_dir: str, name: str | None = None, default_name: str | None = None,
                 group: str | None = None, job_type: str = "train", tags: Sequence[str] = (),
                 entity: str | None = None, save_code: bool = True, log_model: bool = False,
                 **kwargs: Any) -> WandbRunLogger:
    """The run directory's W&B run (`wandb_mode()`), named, grouped and tagged after its sweep point unless `name` /
    `group` are set; the run a `wandb agent` started (WANDB_RUN_ID) where there is one; prints where it goes.
    Offline runs are uploaded later with `wandb sync`."""
    from diffusion.distributed import is_rank_zero

    identity = WandbIdentity(save_dir)
    found = sweep_identity(default_name)
    name, group = name or found.get("name"), group or found.get("group")
    tags = list(dict.fromkeys([*tags, *found["tags"]]))
    mode = wandb_mode()
    os.environ["WANDB_MODE"] = mode  # also governs runs started by child processes (DDP ranks)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if is_rank_zero():
        agent = os.environ.get(AGENT_RUN_ENV)
        again = " (continues its W&B run)" if identity.exists and agent in (None, identity.get("id")) else ""
        if agent and agent != identity.get("id"):  # W&B's sweep agent chose the run: this directory logs into it
            identity.update(id=agent, name=name, group=group, job_type=job_type, project=project, last_step=None)
        elif not identity.exists:  # W&B run ids: letters and digits
            identity.update(id=uuid.uuid4().hex[:12], name=name, group=group, job_type=job_type,
                            project=project)
        where = (f"offline, files in {Path(save_dir) / 'wandb'}; upload with `wandb sync "
                 f"{Path(save_dir) / 'wandb'}/offline-run-*`" if mode == "offline" else
                 f"{mode} at {wandb_base_url()}")
        print(f"W&B: run {name} ({identity.get('id')}){again}, {where}")
    return WandbRunLogger(identity=identity, project=project, save_dir=save_dir, name=name, group=group,
                     job_type=job_type, tags=[t[:64] for t in tags],  # W&B refuses longer tags
                     entity=entity, save_code=save_code, log_model=log_model, offline=mode == "offline", **kwargs)


def record_to_wandb(trainer: Any, run_dir: Path, metrics: dict[str, Any], best: bool) -> None:
    """W&B (rank 0): the fit's time, images/s and step in the run summary, and the model artifact: the exported
    weights with their config and metrics.json files, the run's scalars as its metadata (alias best: `best`)."""
    for logger in trainer.loggers:
        if not isinstance(logger, WandbRunLogger):
            continue
        logger.experiment.summary.update({k: v for k, v in metrics.items() if k in FIT_SUMMARY})
        files = [run_dir / WEIGHTS, run_dir / CONFIG, *sorted(run_dir.glob(f"**/{METRICS}"))]
        logger.log_model_artifact(run_dir, [f for f in files if f.is_file()],
                                  {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, best)


FIT_SUMMARY = ("fit_images_per_s", "steady_images_per_s", "fit_seconds", "validation_seconds", "grid_seconds",
               "eval_seconds", "global_step", "world_size")


def finish_wandb(loggers: list) -> None:
    """Close W&B runs: the next job of a multirun (same process) must start its own run, not reuse this one."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()

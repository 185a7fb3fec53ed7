"""Every config group composes and instantiates; the primary configs resolve."""

import re
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF, compose_cfg, run_main
from diffusion.module import DiffusionModule
from diffusion.runtime import sampler_options

GROUPS = sorted(p.name for p in Path(CONF).iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_resolves(group, option, tmp_path):
    cfg = compose_cfg("train", [f"run_dir={tmp_path}", f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("option", options("model"))
def test_models_instantiate(option):
    net = instantiate(compose_cfg("train", ["run_dir=x", f"model={option}"]).model)
    assert net(torch.randn(1, 1, 32, 32), torch.tensor([3]), torch.tensor([1])).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("option", options("schedule"))
def test_schedules_instantiate_with_any_T(option):
    for T in (100, 1000, 4000):
        s = instantiate(compose_cfg("train", ["run_dir=x", f"schedule={option}", f"timesteps={T}"]).schedule)
        assert s.timesteps == T and s.alpha_bar.shape == (T,)


@pytest.mark.parametrize("option", options("data"))
def test_data_instantiates(option, data_root):
    dm = instantiate(compose_cfg("train", ["run_dir=x", f"data={option}", f"data.root={data_root}"]).data)
    assert dm.name == {"mnist": "mnist", "fashion": "fashion"}[option] and len(dm.class_names) == 10


@pytest.mark.parametrize("optim", options("optim"))
@pytest.mark.parametrize("sched", options("lr_scheduler"))
def test_optimizers_and_schedulers_configure(optim, sched):
    cfg = compose_cfg("train", ["run_dir=x", "model=tiny", f"optim={optim}", f"lr_scheduler={sched}"])
    module = instantiate(cfg.module)
    module.trainer = L.Trainer(max_steps=100, logger=False, enable_checkpointing=False)
    out = module.configure_optimizers()
    opt = out["optimizer"] if isinstance(out, dict) else out
    assert isinstance(opt, torch.optim.Optimizer)


@pytest.mark.parametrize("option", sampler_options())  # `own` is sample.py's stand-in, not a sampler
def test_samplers_instantiate_and_run(option):
    cfg = compose_cfg("train", ["run_dir=x", "model=tiny", "timesteps=20", f"sampler={option}", "sampler.steps=5"])
    module: DiffusionModule = instantiate(cfg.module)
    images = module.sample(torch.tensor([0, 1]))
    assert images.shape == (2, 1, 32, 32) and images.abs().max() <= 1


@pytest.mark.parametrize("option", options("trainer"))
def test_trainers_instantiate_on_cpu(option, tmp_path):
    cfg = compose_cfg("train", [f"run_dir={tmp_path}", f"trainer={option}"])
    if option != "cpu":  # GPU/DDP configs are checked for shape here; DDP itself runs in the sweep tests
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.precision = "32-true"
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer, L.Trainer)


@pytest.mark.parametrize("option", options("callbacks"))
def test_callbacks_instantiate(option, tmp_path):
    cfg = compose_cfg("train", [f"run_dir={tmp_path}", f"callbacks={option}"])
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    assert all(isinstance(c, L.Callback) for c in callbacks)


@pytest.mark.parametrize("option", options("logger"))
def test_loggers_instantiate_without_prompting(option, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    cfg = compose_cfg("train", [f"run_dir={tmp_path}", f"logger={option}"])
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
    if option == "wandb":
        import os

        assert os.environ["WANDB_MODE"] == "offline"
        assert loggers[0]._offline


def test_wandb_is_online_only_when_logged_in_to_its_server(tmp_path, monkeypatch):
    from diffusion.loggers import wandb_mode

    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text("machine wandb.example.org\n  login user\n  password secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_mode() == "offline"  # logged in to another server than the public one
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_the_wandb_config_is_the_nested_config_with_each_groups_choice_on_top(tmp_path):
    from omegaconf import OmegaConf

    from diffusion.loggers import wandb_config

    cfg = compose_cfg("train", [f"run_dir={tmp_path}", "experiment=ablation_schedule", "schedule=cosine"])
    config = wandb_config(OmegaConf.to_container(cfg, resolve=True), {"schedule": "cosine", "model": "seed003"})
    assert config["choices"] == {"schedule": "cosine", "model": "seed003"}
    assert config["schedule"]["kind"] == "cosine" and config["optim"]["lr"] == 1.0e-3  # as W&B's Hydra integration
    assert (config["timesteps"], config["guidance"], config["loss"], config["data"]["batch_size"]) == (1000, 0.2, "l1",
                                                                                                        32)
    assert "hydra" not in config


def docs_section(page: str, title: str) -> str:
    text = (Path(CONF).parent / "docs" / page).read_text() + "\n## "
    start = text.index(f"## {title}")
    return text[start : text.index("\n## ", start + 1)]


DDPM_ALL_T = {"sampler._target_": "diffusion.samplers.ddpm_sample", "sampler.steps": None, "sampler.clip": "none"}
NO_CFG = {"p_uncond": 0.0, "guidance": 0.0}
PLAIN = {"callbacks.ema": None, "trainer.gradient_clip_val": None}  # no EMA, no clipping: none stated
EPS_MSE = {"prediction": "eps", "loss": "mse", "loss_weight": "none"}


@pytest.mark.parametrize("seed,expected", [
    ("seed000", {"model.channels": [32, 64, 128], "model.downsample_last": True, "data.pad": 2, **EPS_MSE,
                 "schedule.kind": "linear", "schedule.beta_start": 1e-4, "schedule.beta_end": 0.02, "timesteps": 1000,
                 "optim._target_": "torch.optim.AdamW", "optim.lr": 5e-5, "optim.weight_decay": 0.01,
                 "lr_scheduler.scheduler": None, "data.batch_size": 64, **DDPM_ALL_T, "sampler.sigma": "posterior",
                 **NO_CFG, **PLAIN}),
    ("seed001", {"model.conditional": False, "model.emb_dim": 128, "model.dropout": 0.0, "data.pad": 0, **EPS_MSE,
                 "schedule.kind": "cosine", "timesteps": 1000, "optim._target_": "torch.optim.Adam", "optim.lr": 1e-4,
                 "optim.weight_decay": 0.0, "lr_scheduler.scheduler": None, **DDPM_ALL_T, **NO_CFG, **PLAIN,
                 "callbacks.early_stopping": None, "trainer.max_epochs": -1}),
    ("seed002", {"model.time_dim": 128, "model.emb_dim": 256, "data.pad": 0, "data.val_size": 0,
                 "data.drop_last": False, "schedule.kind": "linear", "schedule.beta_start": 1e-4,
                 "schedule.beta_end": 0.02, "timesteps": 1000, **EPS_MSE, "optim._target_": "torch.optim.Adam",
                 "optim.lr": 1e-3, "lr_scheduler.scheduler": None, "data.batch_size": 128, "trainer.max_epochs": 10,
                 "trainer.max_steps": -1, **DDPM_ALL_T, **NO_CFG, **PLAIN}),
    ("seed003", {"model.channels": [64, 128], "model.activation": "relu", "model.upsample": "transposed",
                 "model.out_kernel": 1, "loss": "l1", "prediction": "eps", "data.batch_size": 32, "data.pad": 0,
                 "trainer.gradient_clip_val": 1.0,
                 "trainer.max_steps": 100_000, "schedule.kind": "linear", "timesteps": 1000, "guidance": 0.2,
                 **DDPM_ALL_T, "sampler.sigma": "posterior", "eval.num_samples": 10_000, "eval.inception": True}),
    ("seed004", {"model.channels": [16, 32, 64, 128], "model.activation": "gelu", "model.emb_dim": 128,
                 "model.condition": "bottleneck_input", "model.null_label": "zero", "data.pad": 0, "data.val_size": 0,
                 "data.batch_size": 128, "schedule.kind": "linear", "schedule.beta_start": 1e-4,
                 "schedule.beta_end": 0.02, "timesteps": 100, **EPS_MSE, "optim._target_": "torch.optim.Adam",
                 "optim.lr": 5e-4, "optim.weight_decay": 1e-5, "lr_scheduler.scheduler.patience": 3,
                 "lr_scheduler.monitor": "val/loss", "trainer.max_epochs": 50, "trainer.max_steps": -1,
                 "callbacks.early_stopping.monitor": "val/loss", "callbacks.best_checkpoint.monitor": "val/loss",
                 "p_uncond": 0.1, "guidance": 2.0, **DDPM_ALL_T, "eval.guidance": [-1, 0, 2, 4, 6],
                 "eval.weights": "best", "eval.clip": "openai/clip-vit-base-patch32", "model.downsample_last": True,
                 "callbacks.ema": None, "trainer.gradient_clip_val": None}),
])
def test_seed_experiments_set_what_their_texts_state(seed, expected):
    """Each value the seed's write-up states (conf/experiment/<seed>.yaml lists them with the text's words)."""
    cfg = compose_cfg("train", [f"experiment={seed}", "run_dir=/tmp/x"])
    assert {key: OmegaConf.select(cfg, key) for key in expected} == expected


PAPER_RECIPE = {"model.channels": [64, 128], "model.activation": "relu", "model.downsample": "maxpool",
                "model.upsample": "transposed", "model.out_kernel": 1, "loss": "l1", "prediction": "eps",
                "data.batch_size": 32, "trainer.max_steps": 100_000, "sampler._target_": "diffusion.samplers.ddpm_sample",
                "sampler.steps": None, "sampler.sigma": "posterior", "eval.num_samples": 10_000, "eval.inception": True}


@pytest.mark.parametrize("preset,grid,guidances", [
    ("ablation_schedule", {"schedule": "linear,cosine", "timesteps": "1000,4000"}, [0.2, 0, 0.5]),  # Tables 2, 3
    ("ablation_guidance", None, [0, 0.2, 0.5]),
])
def test_the_ablation_presets_are_the_seed_papers_recipe(preset, grid, guidances):
    """Section 3.2.1's two-block U-Net, Algorithm 1 (L1 on ε, batch 32, 100k iterations), Algorithm 2 (DDPM over all
    T with σ² = β̃) and its evaluation (Inception FID and IS of 10,000 samples)."""
    cfg = compose_cfg("train", [f"experiment={preset}", "run_dir=/tmp/x"], hydra=True)
    assert {key: OmegaConf.select(cfg, key) for key in PAPER_RECIPE} == PAPER_RECIPE
    assert cfg.guidance == 0.2 and cfg.schedule.kind == "linear" and cfg.timesteps == 1000
    params = cfg.hydra.sweeper.get("params")
    assert (OmegaConf.to_container(params) if params else None) == grid
    assert (list(cfg.eval.guidance) if cfg.eval.guidance is not None else None) == guidances


@pytest.mark.parametrize("preset", ["ablation_schedule", "ablation_guidance", "ablation_schedule_small"])
def test_the_ablation_presets_build_seed003s_model_data_and_loss(preset):
    """One paper recipe: the sweeps resolve to experiment=seed003's network, data (28×28), loss and training options;
    the reduced size changes only iterations, samples scored and samplers."""
    same = ["model", "data", "schedule", "optim", "lr_scheduler", "loss", "prediction", "loss_weight", "p_uncond",
            "guidance", "timesteps", "callbacks.ema", "trainer.gradient_clip_val", "trainer.precision"]
    paper, sweep = (OmegaConf.to_container(compose_cfg("train", [f"experiment={e}", "run_dir=/tmp/x"]), resolve=True)
                    for e in ("seed003", preset))
    for key in same:
        assert OmegaConf.select(OmegaConf.create(sweep), key) == OmegaConf.select(OmegaConf.create(paper), key), key
    assert sweep["data"]["pad"] == 0 and sweep["data"]["batch_size"] == 32


def test_the_reduced_ablation_shortens_iterations_samples_and_sampler_only():
    cfg = compose_cfg("train", ["experiment=ablation_schedule_small", "run_dir=/tmp/x"], hydra=True)
    assert cfg.trainer.max_steps == 5000 and cfg.eval.num_samples == 2000 and cfg.eval.inception == "published"
    from diffusion.scoring import named_evaluations

    assert list(named_evaluations(cfg)) == ["fast"] and cfg.eval.samplers.fast.steps == 20  # no DDPM over all T
    assert cfg.sampler._target_ == "diffusion.samplers.dpm_solver_sample" and list(cfg.eval.guidance) == [0.2, 0, 0.5]
    assert OmegaConf.to_container(cfg.hydra.sweeper.params) == {"schedule": "linear,cosine", "timesteps": "1000,4000"}


def test_the_paper_presets_job_config_shows_28x28_and_the_paper_network():
    """The acceptance command: `python train.py experiment=ablation_schedule --cfg job`."""
    r = run_main("train.py", "experiment=ablation_schedule", "--cfg", "job")
    assert r.returncode == 0, r.stderr[-2000:]
    job = OmegaConf.create(r.stdout)
    assert job.data.pad == 0 and job.model.channels == [64, 128] and job.model.activation == "relu"


@pytest.mark.parametrize("preset", ["mnist_best", "fashion_best"])
def test_long_presets_keep_a_checkpoint_per_training_unit(preset, tmp_path):
    cfg = compose_cfg("train", [f"experiment={preset}", f"run_dir={tmp_path}"])
    milestones = instantiate(cfg.callbacks.milestones)
    assert cfg.trainer.max_steps == 16_000 and milestones._every_n_train_steps == 2000
    assert milestones.save_top_k == -1 and Path(milestones.dirpath) == tmp_path / "checkpoints"
    name = milestones.format_checkpoint_name({"step": torch.tensor(4000)})
    assert Path(name) == tmp_path / "checkpoints" / "step004000.ckpt"


def test_the_docs_config_tree_lists_every_group_and_option():
    tree = docs_section("training.md", "Configuration")
    listed = {m[1]: sorted(o.strip() for o in m[2].split(","))
              for m in re.finditer(r"^[├└]── (\w+)/\s+# ([\w, ]+?)(?:\s+->.*)?$", tree, re.M)}
    assert listed == {g: options(g) for g in GROUPS}
    for primary in Path(CONF).glob("*.yaml"):
        assert f"── {primary.name}" in tree


def test_the_docs_package_layout_names_every_module():
    layout = (Path(CONF).parent / "docs" / "architecture.md").read_text()
    modules = {p.name for p in (Path(CONF).parent / "diffusion").glob("*.py")} - {"__init__.py"}
    assert modules <= set(re.findall(r"`(\w+\.py)`", layout))


def test_the_ablation_presets_name_two_evaluations_that_instantiate(tmp_path):
    from diffusion.samplers import sampler_name
    from diffusion.scoring import named_evaluations

    cfg = compose_cfg("train", [f"run_dir={tmp_path}", "experiment=ablation_schedule"])
    named = named_evaluations(cfg)
    assert list(named) == ["paper", "fast"] and list(cfg.eval.guidance) == [0.2, 0, 0.5]
    assert {k: (sampler_name(v._target_), v.steps) for k, v in named.items()} == {"paper": ("ddpm", None),
                                                                                  "fast": ("dpm_solver", 20)}
    assert named["paper"].sigma == "posterior" and named["fast"].order == 2  # σ² = β̃ (Algorithm 2); 2M
    assert all(callable(instantiate(v)) for v in named.values())
    assert named_evaluations(compose_cfg("train", [f"run_dir={tmp_path}"])) == {}  # the run's own sampler


def test_eval_max_sampler_steps_caps_every_evaluation_and_the_debug_presets_compose_alone(tmp_path):
    from diffusion.scoring import evaluation_samplers

    cfg = compose_cfg("train", [f"run_dir={tmp_path}", "experiment=ablation_schedule", "eval.max_sampler_steps=15"])
    assert {k: v.steps for k, v in evaluation_samplers(cfg).items()} == {"paper": 15, "fast": 15}
    assert cfg.eval.samplers.paper.steps is None  # the config itself is left as it is
    for debug, cap in (("ablation", 10), ("ablation_cpu", 20)):
        cfg = compose_cfg("train", [f"run_dir={tmp_path}", f"debug={debug}"])  # no ablation experiment needed
        assert {k: v.steps for k, v in evaluation_samplers(cfg).items()} == {None: min(cfg.sampler.steps, cap)}


def test_a_named_evaluation_needs_a_usable_name_and_a_sampler():
    from diffusion.checks import ConfigError
    from diffusion.scoring import check_evaluation

    ddim = OmegaConf.create({"_target_": "diffusion.samplers.ddim_sample", "steps": 5})
    check_evaluation("ddim-5", ddim, 100)
    with pytest.raises(ConfigError, match=r"eval.samplers: 'a/b' is not a usable name"):
        check_evaluation("a/b", ddim, 100)
    with pytest.raises(ConfigError, match=r"eval.samplers: '..' is not a usable name"):
        check_evaluation("..", ddim, 100)  # would write its metrics outside eval/
    with pytest.raises(ConfigError, match=r"eval.samplers.x names no sampler"):
        check_evaluation("x", OmegaConf.create({"steps": 5}), 100)
    with pytest.raises(ConfigError, match=r"eval.samplers.x.steps must be an integer between 1 and timesteps \(4\)"):
        check_evaluation("x", ddim, 4)


@pytest.mark.parametrize("overrides,steps,epochs", [
    ([], 2000, -1),                                            # the default: 2,000 optimizer steps
    (["trainer.max_epochs=20"], -1, 20),                       # epochs asked for, no steps: 20 epochs
    (["trainer.max_epochs=20", "trainer.max_steps=500"], 500, 20),  # both: whichever comes first (Lightning's rule)
    (["experiment=mnist_best"], 16_000, -1),
    (["experiment=seed002"], -1, 10),                          # the notebook's 10 epochs
])
def test_trainer_max_epochs_alone_means_epochs(overrides, steps, epochs):
    cfg = compose_cfg("train", ["run_dir=/tmp/x", *overrides])
    assert (cfg.trainer.max_steps, cfg.trainer.max_epochs) == (steps, epochs)

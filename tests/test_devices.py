"""Device-correct code without a GPU: the model on a fake CUDA device (tests/fake_cuda.py), the device, precision and
layout rules, collectives on the root device, the foreach EMA, one GPU per parallel sweep job."""

import threading
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn, get_ema_multi_avg_fn

from conftest import compose_cfg
from diffusion import runtime
from diffusion.callbacks import SampleGrid
from diffusion.datasets import DataSpec
from diffusion.distributed import claim_device, gather_shares
from diffusion.sweeps import sweep_launch_error
from diffusion.runtime import precision, resolve_device
from fake_cuda import CUDA, FakeCuda, fake_cuda

SAMPLERS = {"ddpm": ["sampler.steps=4"], "ddim": ["sampler.steps=4", "sampler.eta=1.0"],
            "dpm_solver": ["sampler.steps=4"]}


def tiny_module(*overrides: str):
    cfg = compose_cfg("train", ["run_dir=/tmp/unused", "debug=fast", "timesteps=50", *overrides])
    return instantiate(cfg.module, class_names=list("0123456789"), data=DataSpec.of("mnist").as_dict()), cfg


def test_fake_cuda_catches_a_cpu_tensor_meeting_a_cuda_one():
    with fake_cuda():
        x = torch.ones(3, device="cuda")
        assert isinstance(x, FakeCuda) and x.device.type == "cuda" and (x * 2).device.type == "cuda"
        assert (x + torch.tensor(1.0)).sum().item() == 6  # 0-d CPU scalars mix, as on a GPU
        with pytest.raises(RuntimeError, match="same device"):
            x + torch.ones(3)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("guidance", [0.0, 0.5])
def test_every_sampler_runs_with_the_model_on_cuda(sampler, guidance):
    module, cfg = tiny_module(f"sampler={sampler}", *SAMPLERS[sampler])
    with fake_cuda():
        module.to(CUDA)
        assert module.device.type == "cuda" and isinstance(module.schedule.alpha_bar, FakeCuda)
        images = module.sample(torch.arange(4), instantiate(cfg.sampler), guidance=guidance)
        assert images.device.type == "cuda" and images.shape == (4, 1, 32, 32)
        assert torch.isfinite(images).all()


@pytest.mark.parametrize("cpu_bf16", ["0", "1"])
def test_cuda_samples_equal_cpu_samples_image_for_image(monkeypatch, cpu_bf16):
    """Noise comes from per-sample CPU generators, so a GPU makes the same images (up to arithmetic)."""
    monkeypatch.setenv(runtime.CPU_BF16_ENV, cpu_bf16)  # each CPU rule, whatever this CPU has
    module, cfg = tiny_module("sampler=ddpm", "sampler.steps=4")
    on_cpu = module.sample(torch.arange(3), instantiate(cfg.sampler), seed=5)
    with fake_cuda():
        module.to(CUDA)
        on_cuda = module.sample(torch.arange(3), instantiate(cfg.sampler), seed=5).cpu()
    if cpu_bf16 == "0":  # both sides in fp32: equal up to fp32 arithmetic
        torch.testing.assert_close(on_cuda, on_cpu)
    else:  # the CPU side under bf16 autocast, the fake CUDA side in fp32 (it computes on the CPU without autocast):
        # bf16 keeps 8 significant bits, a relative rounding of 2^-8 = 0.4% per operation, compounded over the
        # network's layers and the 4 steps; the same noise must still make the same images to a few percent.
        torch.testing.assert_close(on_cuda, on_cpu, atol=0.05, rtol=0)
        assert (on_cuda - on_cpu).abs().mean() < 0.01


def test_a_training_step_with_optimizer_and_ema_runs_on_cuda():
    module, _ = tiny_module()
    with fake_cuda():
        module.to(CUDA)
        ema = AveragedModel(module.net, multi_avg_fn=get_ema_multi_avg_fn(0.99), use_buffers=False)
        opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
        x0, y = torch.rand(4, 1, 32, 32, device=CUDA) * 2 - 1, torch.randint(0, 10, (4,), device=CUDA)
        loss = module.diffusion_loss(x0, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        ema.update_parameters(module.net)
        module._note_nonfinite(loss)
        assert loss.device.type == "cuda" and int(module.nonfinite_at.item()) == -1
        assert all(isinstance(p, FakeCuda) for p in ema.parameters())


def test_the_sample_grid_callback_runs_on_cuda(tmp_path):
    module, cfg = tiny_module("sampler=dpm_solver", "sampler.steps=3")
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), loggers=[], global_step=0)
    with fake_cuda():
        module.to(CUDA)
        path = SampleGrid(n_per_class=1, sampler=instantiate(cfg.sampler)).make_grid(trainer, module, "final")
    assert path.is_file()


def test_the_evaluation_runs_on_cuda(data_root):
    from diffusion.evaluation import evaluate

    images = torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8)
    labels = torch.arange(40) % 10
    on_cpu = evaluate(images, labels, "mnist", data_root, batch_size=20)
    with fake_cuda():
        on_cuda = evaluate(images, labels, "mnist", data_root, batch_size=20, device=CUDA)
    assert on_cuda["num_samples"] == 40
    for key in ("fid", "is", "class_accuracy"):
        assert on_cuda[key] == pytest.approx(on_cpu[key], rel=1e-6)


def test_gathering_the_evaluation_images_sends_only_root_device_tensors(monkeypatch):
    """NCCL carries CUDA tensors only: every tensor handed to a collective must be on the root device."""
    import torch.distributed as dist

    seen = []

    def all_gather(outputs, tensor, group=None, async_op=False):
        seen.append(tensor.device)
        for out in outputs:
            out.copy_(tensor)

    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(dist, "barrier", lambda group=None: None)
    monkeypatch.setattr(dist, "all_gather", all_gather)
    share = torch.arange(3 * 4, dtype=torch.uint8).view(3, 1, 2, 2)
    with fake_cuda():
        full = gather_shares(share, 6, 2, CUDA)
    assert seen and all(d.type == "cuda" for d in seen)
    assert full.device.type == "cpu" and torch.equal(full[0::2], share) and torch.equal(full[1::2], share)


def test_foreach_ema_equals_the_per_tensor_ema():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Linear(2, 2))
    per_tensor = AveragedModel(net, avg_fn=get_ema_avg_fn(0.995), use_buffers=False)
    foreach = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.995), use_buffers=False)
    for _ in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        per_tensor.update_parameters(net)
        foreach.update_parameters(net)
    for a, b in zip(per_tensor.parameters(), foreach.parameters()):
        torch.testing.assert_close(a, b)


def test_the_training_config_uses_the_foreach_ema():
    cb = instantiate(compose_cfg("train", ["run_dir=/tmp/unused"]).callbacks.ema)
    assert cb._kwargs.get("multi_avg_fn") is not None and "avg_fn" not in cb._kwargs


def test_precision_rule_per_accelerator(monkeypatch):
    monkeypatch.delenv(runtime.CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision("cpu") == precision("auto") == "32-true"
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    assert precision("cpu") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision("gpu") == precision("cuda") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    assert precision("gpu") == "16-mixed"  # pre-Ampere GPUs: fp16 whatever the host CPU has
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert precision("auto") == "16-mixed"  # trainer=ddp's accelerator=auto on a GPU node follows the GPU


@pytest.mark.parametrize("forced,expected", [("1", "bf16-mixed"), ("0", "32-true")])
def test_the_cpu_rule_can_be_forced_either_way(monkeypatch, forced, expected):
    monkeypatch.setenv(runtime.CPU_BF16_ENV, forced)
    assert compose_cfg("train", ["run_dir=/tmp/unused"]).trainer.precision == expected
    assert (runtime.autocast_dtype(torch.device("cpu")) == torch.bfloat16) == (forced == "1")
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match="DIFFUSION_CPU_BF16 must be 1"):
        runtime.cpu_precision()


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp"])
def test_every_trainer_option_takes_the_one_precision_rule(trainer):
    cfg = compose_cfg("train", ["run_dir=/tmp/unused", f"trainer={trainer}"])
    assert cfg.trainer.precision == precision(cfg.trainer.accelerator)


def test_autocast_and_layout_follow_the_device(monkeypatch):
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "0")
    assert runtime.autocast_dtype(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtime.autocast_dtype(CUDA) == torch.bfloat16
    module, _ = tiny_module()
    assert module.channels_last is None and module.uses_channels_last() == runtime.CHANNELS_LAST["cpu"]
    convs = [m for m in module.net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1]
    conv = convs[0].weight  # (with one input channel both layouts have the same strides)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    with fake_cuda():
        module.to(CUDA).apply_layout()  # what load_module and on_fit_start do on the new device
        assert module.uses_channels_last() == runtime.CHANNELS_LAST["cuda"]
        conv = convs[0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == runtime.CHANNELS_LAST["cuda"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for machines without a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_asking_for_cuda_without_a_gpu_is_a_value_error(name):
    with pytest.raises(ValueError, match="no CUDA GPU is visible here; use device=cpu or device=auto"):
        resolve_device(name)


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be cpu, cuda, cuda:N or auto; got 'gpu0'"):
        resolve_device("gpu0")


def test_launchers_that_cannot_run_the_trainer_are_named_before_the_sweep(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: f"/usr/bin/{tool}")  # as on a SLURM login node
    ddp = compose_cfg("train", ["run_dir=/tmp/unused", "trainer=ddp"]).trainer
    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"})
    basic = OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", "nodes": 1}
    assert "cannot give each point 2 DDP ranks" in sweep_launch_error(ddp, joblib)
    assert sweep_launch_error(ddp, basic) is None  # each point runs as its own DDP command (diffusion.sweeps)
    assert sweep_launch_error(ddp, OmegaConf.create({**slurm, "tasks_per_node": 2})) is None
    assert "tasks_per_node (1) must equal trainer.devices (2)" in sweep_launch_error(
        ddp, OmegaConf.create({**slurm, "tasks_per_node": 1}))
    one = compose_cfg("train", ["run_dir=/tmp/unused", "trainer=ddp", "trainer.devices=1"]).trainer
    assert sweep_launch_error(one, joblib) is None  # a single process re-launches nothing
    assert sweep_launch_error(compose_cfg("train", ["run_dir=/tmp/unused", "trainer=gpu"]).trainer, joblib) is None


def test_parallel_jobs_claim_different_devices_and_wait_when_all_are_busy(tmp_path):
    got = []
    with claim_device(tmp_path, 2, preferred=0) as a, claim_device(tmp_path, 2, preferred=0) as b:
        assert {a, b} == {0, 1}

        def third() -> None:
            with claim_device(tmp_path, 2, preferred=1) as c:
                got.append(c)

        waiter = threading.Thread(target=third)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive() and not got  # both busy: it waits for its preferred device
    waiter.join(timeout=30)
    assert got == [1]


def test_the_default_trainer_takes_a_visible_gpu_else_the_cpu_and_one_line_says_which(monkeypatch):
    """Issue 49: no trainer= at all trains on the GPU of a GPU box (Lightning's accelerator=auto); trainer=cpu
    forces the CPU."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    from diffusion.runtime import cpu_kind, device_line

    def trainer(*overrides: str):
        cfg = compose_cfg("train", ["run_dir=/tmp/unused", *overrides])
        return instantiate(cfg.trainer, logger=False, enable_progress_bar=False)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = trainer()
    assert cpu.strategy.root_device.type == "cpu"
    line = device_line(cpu.strategy.root_device, cpu.world_size, str(cpu.precision))
    assert line.startswith("CPU (") and f", {cpu_kind()}), precision {cpu.precision}" in line

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU box, as Lightning and torch see it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    monkeypatch.setattr("lightning.fabric.accelerators.cuda.num_cuda_devices", lambda: 1)
    with fake_cuda():
        gpu = trainer()
        assert gpu.strategy.root_device == CUDA and str(gpu.precision) == "bf16-mixed"
        assert device_line(gpu.strategy.root_device, gpu.world_size, str(gpu.precision)) == \
            "1 × NVIDIA H100 80GB HBM3 (CUDA), precision bf16-mixed"
        assert trainer("trainer=cpu").strategy.root_device.type == "cpu"

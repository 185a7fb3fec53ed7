"""`python -m diffusion.demo [ckpt_path=PATH]`: a local Gradio app for the trained models.

Gradio is the usual library for ML demos: components, a request queue and a browser UI with no front-end code.
Generation runs one request at a time through Gradio's queue (`default_concurrency_limit=1`, at most `queue_size`
waiting) and each request is capped at `max_images` images and the model's T steps, so no visitor holds the CPU
for long.

What a visitor can reach: a choice among the model files the server lists (`list_models`; there is no free-text
path, and an uploaded file is never one of them), the form's values, and the images, which are sent inline and
never written to disk. Files are read with `diffusion.checkpoint`, which runs no code from them. The page binds to
127.0.0.1 unless `allow_remote=true` says otherwise.
"""

from __future__ import annotations

import base64
import functools
import io
import ipaddress
import socket
import sys
import time
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
import torch
from omegaconf import DictConfig
from PIL import Image

from diffusion.checkpoint import RUN_ROOTS, load_module, own_sampler, run_models, shipped_models, shown
from diffusion.images import grid_image
from diffusion.module import DiffusionModule
from diffusion.checks import check_guidance, check_seed, check_steps
from diffusion.generate import generate as generate_images
from diffusion.prompts import parse_prompt
from diffusion.records import headline_line, read_metrics
from diffusion.runs import METRICS, run_dir_of
from diffusion.runtime import config_option, resolve_device, sampler_options
from diffusion.samplers import sampler_name

OWN_SAMPLER = "model's own"  # preselected: the model's own sampler (checkpoint.own_sampler), as sample.py
SCALE = 4  # 32×32 samples shown at 128×128


def list_models(pinned: str | None = None, roots: tuple[str, ...] = RUN_ROOTS) -> list[str]:
    """The model files the demo offers, and the only ones it loads: `pinned` (the server's ckpt_path), every run's
    model file newest first (checkpoint.run_models, the rule sample.py follows), then the shipped
    pretrained/<name>/model.safetensors (so with no run of one's own, the page starts on the shipped MNIST model)."""
    return list(dict.fromkeys([*([str(pinned)] if pinned else []), *map(str, run_models(roots)), *shipped_entries()]))


def shipped_entries() -> list[str]:
    """The shipped models as the page lists them."""
    return [shown(p) for p in shipped_models().values()]


DEVICE = "auto"  # the server's `device` option


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> DiffusionModule:
    return load_module(path, device=resolve_device(DEVICE))


def load(path: str, allowed: list[str]) -> DiffusionModule:
    """The model in `path` (EMA weights), which must be one of `allowed`; cached while the file is unchanged."""
    if not path or path not in allowed:
        raise FileNotFoundError(f"'{path}' is not one of the models this page lists; press Refresh to list them")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path} is gone; press Refresh to list the models")
    return _load(str(p), p.stat().st_mtime)


def describe(path: str, allowed: list[str]) -> str:
    """Markdown: which model is loaded, and its run's metrics if it has them."""
    if not allowed:
        return "**No model found:** train one with `make train`, then press Refresh."
    try:
        m = load(path, allowed)
    except (FileNotFoundError, ValueError) as err:  # CheckpointError is a ValueError: one line, nothing ran
        return f"**No model loaded:** {err}"
    h = m.hparams
    text = (f"**Loaded** `{path}`: {h.data_name}, {m.schedule.kind} schedule, T={m.schedule.timesteps}, "
            f"step {m.checkpoint_step}, trained with ω={h.guidance}.")
    run_dir = run_dir_of(path)
    metrics = run_dir / METRICS
    if metrics.is_file():
        try:
            r = read_metrics(metrics)
            seeds = f" × {r['num_seeds']} seeds" if "num_seeds" in r else ""
            text += f" Run metrics ({r['num_samples']} samples{seeds}): {headline_line(r)}."
        except (ValueError, KeyError, TypeError):
            pass
    return text


def upscale(image: torch.Tensor) -> Image.Image:
    """uint8 (C, H, W) -> PIL image (grey or RGB), SCALE× with nearest neighbours."""
    pil = Image.fromarray(image.permute(1, 2, 0).squeeze(-1).contiguous().numpy())
    return pil.resize((pil.width * SCALE, pil.height * SCALE), Image.NEAREST)


def inline_image(pic: Image.Image, fmt: str = "PNG", **save: Any) -> str:
    """A data: URI of the image (sent inside the page; nothing is written to disk)."""
    buf = io.BytesIO()
    pic.save(buf, format=fmt, **save)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def gallery_html(images: list[Image.Image], caption: str) -> str:
    """The samples as an HTML grid of inline images."""
    figures = "".join(f'<figure style="margin:4px;text-align:center"><img src="{inline_image(pic)}" '
                      f'alt="{escape(caption)}" width="{pic.width}" height="{pic.height}">'
                      f'<figcaption>{escape(caption)}</figcaption></figure>' for pic in images)
    return f'<div style="display:flex;flex-wrap:wrap">{figures}</div>'


def progression_html(frames: list[torch.Tensor]) -> str:
    """An animated GIF of the first image's denoising (about 20 frames, the last held), inline."""
    pics = [grid_image(f, 1, scale=SCALE) for f in frames[:: max(1, len(frames) // 20)] + frames[-1:]]
    gif = inline_image(pics[0], "GIF", save_all=True, append_images=pics[1:] + pics[-1:] * 8, duration=120, loop=0)
    return f'<img src="{gif}" alt="denoising of the first image">'


def generate(path: str, class_name: str, prompt: str, guidance: float, sampler: str, steps: float, seed: float,
             n: float, allowed: Callable[[], list[str]], max_images: int = 16) -> tuple[str, str, str]:
    """(gallery HTML, progression HTML, status); every problem becomes a status message, never an exception."""
    try:
        module = load(path, allowed())
        names = list(module.hparams.class_names)
        c = parse_prompt(prompt, names) if prompt and prompt.strip() else names.index(class_name)
        n = int(n or 0)
        steps = check_steps(int(steps), module.schedule.timesteps, key="steps") if steps else None
        if not 1 <= n <= max_images:
            raise ValueError(f"number of images must be between 1 and {max_images}, got {n}")
        guidance = check_guidance(guidance, "guidance", minimum=-1)
        seed = check_seed(int(seed or 0), "sample")
        # the model's own, or conf/sampler/<name>.yaml as the CLIs; an empty Steps box keeps its steps
        option = own_sampler(module) if sampler == OWN_SAMPLER else config_option("sampler", sampler)
        steps = option.get("steps") if steps is None else steps
        solver = instantiate(option, **({"steps": steps} if "steps" in option else {}))
        frames: list[torch.Tensor] = []
        start = time.perf_counter()
        images = generate_images(module, torch.full((n,), c), range(n), n, solver, guidance, seed,
                                 callback=lambda i, t, x, eps, x_t: frames.append(x[:1].float().cpu()))
        seconds = time.perf_counter() - start
    except (ValueError, FileNotFoundError, FloatingPointError, KeyError, OverflowError) as err:
        return "", "", f"**Error:** {err}"  # Markdown: Gradio sanitises it
    used = sampler_name(option._target_) + (" (the model's own)" if sampler == OWN_SAMPLER else "")
    status = (f"Generated {n} × **{names[c]}** in {seconds:.2f} s ({used}, "
              f"{'all T' if steps is None else steps} steps, ω={guidance:g}, seed {seed}).")
    return gallery_html([upscale(img) for img in images], names[c]), progression_html(frames), status


def build_app(pinned: str | None = None, max_images: int = 16) -> Any:
    """The Gradio Blocks page; `pinned` (the server's ckpt_path) is listed first."""
    import gradio as gr

    def allowed() -> list[str]:
        return list_models(pinned)

    def class_choices(path: str) -> tuple[list[str], float]:
        try:
            module = load(path, allowed())
            return list(module.hparams.class_names), float(module.hparams.guidance)
        except (FileNotFoundError, ValueError):
            return [str(i) for i in range(10)], 0.0

    models = allowed()
    first = models[0] if models else None
    names, w = class_choices(first or "")
    with gr.Blocks(title="Class-conditional diffusion") as app:
        gr.Markdown("# Class-conditional diffusion on MNIST / Fashion-MNIST\nGuidance ω: "
                    "ε̃ = (1+ω)·ε(x,t,c) − ω·ε(x,t,∅); ω = 0 is plain conditional sampling, ω = −1 unconditional "
                    "(in the form ε_u + w·(ε_c − ε_u), w = 1+ω).")
        info = gr.Markdown(describe(first or "", models), elem_id="ckpt-info")
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    ckpt = gr.Dropdown(models, value=first, label="Model", elem_id="ckpt", scale=4)
                    refresh = gr.Button("Refresh", elem_id="refresh", scale=1)
                cls = gr.Dropdown(names, value=names[0], label="Class", elem_id="class")
                prompt = gr.Textbox(label="…or type a class", placeholder="seven, 7, sneaker", elem_id="prompt")
                guidance = gr.Slider(-1, 8, value=w, step=0.1, label="Guidance ω", elem_id="guidance")
                sampler = gr.Radio([OWN_SAMPLER, *sampler_options()], value=OWN_SAMPLER, label="Sampler",
                                   elem_id="sampler")
                steps = gr.Number(None, precision=0, label="Steps (empty: the sampler's own)", elem_id="steps")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
                n = gr.Number(4, precision=0, label=f"Number of images (max {max_images})", elem_id="n")
                go = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                gallery = gr.HTML(label="Samples", elem_id="gallery")
                progression = gr.HTML(label="Denoising of the first image", elem_id="progression")

        def on_select(path: str) -> tuple[str, Any]:
            new, _ = class_choices(path)
            return describe(path, allowed()), gr.Dropdown(choices=new, value=new[0])

        def on_refresh(path: str) -> tuple[Any, str, Any]:
            found = allowed()
            keep = path if path in found else (found[0] if found else None)
            new, _ = class_choices(keep or "")
            return (gr.Dropdown(choices=found, value=keep), describe(keep or "", found),
                    gr.Dropdown(choices=new, value=new[0]))

        ckpt.input(on_select, ckpt, [info, cls], api_name="select")
        refresh.click(on_refresh, ckpt, [ckpt, info, cls], api_name="refresh")
        inputs = [ckpt, cls, prompt, guidance, sampler, steps, seed, n]
        go.click(functools.partial(generate, allowed=allowed, max_images=max_images), inputs,
                 [gallery, progression, status], api_name="generate")
    return app


def is_loopback(host: str) -> bool:
    """True when `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


@hydra.main(version_base="1.3", config_path="../conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    """Start the app on cfg.host:cfg.port (loopback unless allow_remote=true)."""
    if not is_loopback(cfg.host):
        if not cfg.allow_remote:
            print(f"error: host={cfg.host} would expose the demo beyond this machine, without a login; "
                  "add allow_remote=true to do that on purpose", file=sys.stderr)
            raise SystemExit(1)
        print(f"warning: the demo is reachable from other machines on {cfg.host}:{cfg.port}, without a login",
              file=sys.stderr)
    global DEVICE
    try:
        print(f"device: {resolve_device(cfg.device)}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    DEVICE = cfg.device
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        print(f"error: ckpt_path {cfg.ckpt_path} is not a file", file=sys.stderr)
        raise SystemExit(1)
    models = list_models(cfg.ckpt_path)
    if not models:
        print("warning: no model found under pretrained/, outputs/ or multirun/; the page will say so")
    elif not cfg.ckpt_path and models[0] in shipped_entries():
        print(f"no run under outputs/ or multirun/: the page starts on the shipped pretrained model {models[0]}")
    app = build_app(cfg.ckpt_path, cfg.max_images)
    app.queue(default_concurrency_limit=1, max_size=cfg.queue_size)
    app.launch(server_name=cfg.host, server_port=cfg.port, show_error=True)


if __name__ == "__main__":
    main()

"""`python -m diffusion.demo [ckpt_path=PATH]`: a local Gradio app for a trained checkpoint.

Gradio is the usual library for ML demos: components for images/galleries, a request queue and a
browser UI with no front-end code. Generation runs one request at a time through Gradio's queue
(`default_concurrency_limit=1`, at most `queue_size` waiting) and each request is capped at
`max_images` images and the model's T steps, so no visitor holds the CPU for long.
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image

from diffusion.images import grid_image, to_uint8
from diffusion.module import DiffusionModule
from diffusion.prompts import parse_prompt
from diffusion.sample import load_module, newest_checkpoint
from diffusion.samplers import SAMPLERS

SCALE = 4  # 32×32 samples shown at 128×128


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> DiffusionModule:
    return load_module(path)


def load(path: str) -> DiffusionModule:
    """The checkpoint's model (EMA weights), cached while the file is unchanged."""
    p = Path(path or "")
    if not path or not p.is_file():
        raise FileNotFoundError(f"no checkpoint at '{path}'; train one with `make train` and give its last.ckpt")
    return _load(str(p), p.stat().st_mtime)


def describe(path: str) -> str:
    """Markdown: which checkpoint is loaded, and its run's metrics if it has them."""
    try:
        m = load(path)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        return f"**No model loaded:** {err}"
    h = m.hparams
    text = (f"**Loaded** `{path}`: {h.data_name}, {m.schedule.kind} schedule, T={m.schedule.timesteps}, "
            f"step {m.checkpoint_step}, trained with ω={h.guidance}.")
    metrics = Path(path).parent.parent / "metrics.json"
    if metrics.is_file():
        r = json.loads(metrics.read_text())
        text += (f" Run metrics ({r['num_samples']} samples): FID {r['fid']:.2f} (classifier features), "
                 f"IS {r['is']:.2f}, class accuracy {r['class_accuracy']:.3f}.")
    return text


def upscale(image: torch.Tensor) -> Image.Image:
    """(1, H, W) in [-1, 1] -> greyscale PIL image, SCALE× with nearest neighbours."""
    pil = Image.fromarray(to_uint8(image)[0].cpu().numpy())
    return pil.resize((pil.width * SCALE, pil.height * SCALE), Image.NEAREST)


def generate(path: str, class_name: str, prompt: str, guidance: float, sampler: str, steps: float, seed: float,
             n: float, max_images: int = 16) -> tuple[list, str | None, str]:
    """(gallery, progression GIF, status); every problem becomes a status message, never an exception."""
    try:
        module = load(path)
        names = list(module.hparams.class_names)
        c = parse_prompt(prompt, names) if prompt and prompt.strip() else names.index(class_name)
        n, steps, T = int(n or 0), int(steps or 0), module.schedule.timesteps
        if not 1 <= n <= max_images:
            raise ValueError(f"number of images must be between 1 and {max_images}, got {n}")
        if not 1 <= steps <= T:
            raise ValueError(f"steps must be between 1 and this model's T = {T}, got {steps}")
        if guidance < -1:
            raise ValueError("guidance ω must be ≥ -1 (-1 is unconditional sampling)")
        frames: list[torch.Tensor] = []
        start = time.perf_counter()
        images = module.sample(torch.full((n,), c), functools.partial(SAMPLERS[sampler], steps=steps),
                               seed=int(seed), guidance=float(guidance),
                               callback=lambda i, t, x, eps: frames.append(x[:1].float().cpu()))
        seconds = time.perf_counter() - start
    except (ValueError, FileNotFoundError, FloatingPointError, KeyError) as err:
        return [], None, f"**Error:** {err}"
    gif = Path(tempfile.mkdtemp()) / "progression.gif"
    pics = [grid_image(f, 1, scale=SCALE) for f in frames[:: max(1, len(frames) // 20)] + frames[-1:]]
    pics[0].save(gif, save_all=True, append_images=pics[1:] + pics[-1:] * 8, duration=120, loop=0)
    status = (f"Generated {n} × **{names[c]}** in {seconds:.2f} s ({sampler}, {steps} steps, ω={guidance:g}, "
              f"seed {int(seed)}).")
    return [(upscale(img), names[c]) for img in images], str(gif), status


def build_app(default_ckpt: str, max_images: int = 16) -> Any:
    """The Gradio Blocks page."""
    import gradio as gr

    try:
        names, w = list(load(default_ckpt).hparams.class_names), float(load(default_ckpt).hparams.guidance)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError):
        names, w = [str(i) for i in range(10)], 0.0
    with gr.Blocks(title="Class-conditional diffusion") as app:
        gr.Markdown("# Class-conditional diffusion on MNIST / Fashion-MNIST\nGuidance ω: "
                    "ε̃ = (1+ω)·ε(x,t,c) − ω·ε(x,t,∅); ω = 0 is plain conditional sampling, ω = −1 unconditional "
                    "(in the form ε_u + w·(ε_c − ε_u), w = 1+ω).")
        info = gr.Markdown(describe(default_ckpt), elem_id="ckpt-info")
        with gr.Row():
            with gr.Column():
                ckpt = gr.Textbox(default_ckpt, label="Checkpoint", elem_id="ckpt")
                load_btn = gr.Button("Load checkpoint")
                cls = gr.Dropdown(names, value=names[0], label="Class", elem_id="class")
                prompt = gr.Textbox(label="…or type a class", placeholder="seven, 7, sneaker", elem_id="prompt")
                guidance = gr.Slider(-1, 8, value=w, step=0.1, label="Guidance ω", elem_id="guidance")
                sampler = gr.Radio(list(SAMPLERS), value="dpm_solver", label="Sampler", elem_id="sampler")
                steps = gr.Number(20, precision=0, label="Steps", elem_id="steps")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
                n = gr.Number(4, precision=0, label=f"Number of images (max {max_images})", elem_id="n")
                go = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(label="Samples", columns=4, elem_id="gallery")
                progression = gr.Image(label="Denoising of the first image", type="filepath", elem_id="progression")

        def on_load(path: str) -> tuple[str, Any]:
            text = describe(path)
            if text.startswith("**Loaded"):
                new = list(load(path).hparams.class_names)
                return text, gr.Dropdown(choices=new, value=new[0])
            return text, gr.Dropdown()

        load_btn.click(on_load, ckpt, [info, cls])
        inputs = [ckpt, cls, prompt, guidance, sampler, steps, seed, n]
        go.click(functools.partial(generate, max_images=max_images), inputs, [gallery, progression, status])
    return app


@hydra.main(version_base="1.3", config_path="../conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    """Start the app on cfg.host:cfg.port."""
    try:
        path = str(cfg.ckpt_path or newest_checkpoint())
    except FileNotFoundError as err:
        path = ""
        print(f"warning: {err}; the page will say so")
    app = build_app(path, cfg.max_images)
    app.queue(default_concurrency_limit=1, max_size=cfg.queue_size)
    app.launch(server_name=cfg.host, server_port=cfg.port, show_error=True)


if __name__ == "__main__":
    main()

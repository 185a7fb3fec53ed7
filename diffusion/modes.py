"""What each `sample.py` mode writes: a loaded model with the call's options (`Sampling`), one short function per
mode (grids, strips, GIFs, bulk samples.npz, the recognition analysis), the stdin loop and the step tracer."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor

from diffusion.files import atomic_write
from diffusion.generate import balanced_labels, generate
from diffusion.images import grid_image, save_grid
from diffusion.module import DiffusionModule
from diffusion.prompts import parse_prompt
from diffusion.runtime import data_root
from diffusion.samplers import per_sample_randn, sample_generators, sampler_name

MODES: dict[str, Callable[[Sampling, Path], list[Path]]] = {}  # name -> mode function: the registry, in `mode=` order


def register_mode(name: str) -> Callable[[Callable[..., list[Path]]], Callable[..., list[Path]]]:
    """Register a sample.py mode as `mode=<name>`: a function of (Sampling, out folder) returning the files written."""

    def register(fn: Callable[..., list[Path]]) -> Callable[..., list[Path]]:
        MODES[name] = fn
        return fn

    return register


class Tracer:
    """Sampler callback collecting per-step statistics (mean, std, min, max) of x after the step, the model's DDPM
    mean μ_θ(x_t, t) = (x_t − β_t/√(1−ᾱ_t)·ε̃)/√α_t (Ho et al. 2020, eq. 11) and ε̃: the seed report's trace."""

    def __init__(self, schedule: Any) -> None:
        self.schedule, self.rows = schedule, []  # one dict per step

    def __call__(self, step: int, t: int, x: Tensor, eps: Tensor, x_t: Tensor) -> None:
        row: dict[str, Any] = {"step": step, "t": t}
        beta, alpha, alpha_bar = (float(v[t]) for v in (self.schedule.betas, self.schedule.alphas,
                                                        self.schedule.alpha_bar))
        mu = (x_t.float() - beta / (1 - alpha_bar) ** 0.5 * eps.float()) / alpha ** 0.5
        for name, v in (("x", x.float()), ("mu", mu), ("eps", eps.float())):
            row.update({f"{name}_mean": v.mean().item(), f"{name}_std": v.std().item(),
                        f"{name}_min": v.min().item(), f"{name}_max": v.max().item()})
        self.rows.append(row)

    def write(self, path: Path) -> Path:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        return path


class Sampling:
    """A loaded model plus the sampling options of one sample.py call."""

    def __init__(self, module: DiffusionModule, cfg: DictConfig, model_id: str = "") -> None:
        self.module, self.cfg, self.model_id = module, cfg, model_id
        self.names = list(module.hparams.class_names)
        self.sampler = instantiate(cfg.sampler)
        self.guidance = module.hparams.guidance if cfg.guidance is None else float(cfg.guidance)
        self.tracer = Tracer(module.schedule) if cfg.trace else None
        self.shape = module.image_shape

    def hook(self, callback: Any = None) -> Any:
        """The sampler callback: `callback` and the tracer, whichever are set."""
        hooks = [h for h in (callback, self.tracer) if h]
        return (lambda *a: [h(*a) for h in hooks]) if hooks else None

    def generate(self, labels: Tensor, indices: list[int], callback: Any = None, x_T: Tensor | None = None) -> Tensor:
        """Images in [-1, 1] for labels, in one batch; sample i seeded by (seed, indices[i])."""
        return self.module.sample(labels, self.sampler, seed=self.cfg.seed, indices=indices, guidance=self.guidance,
                                  callback=self.hook(callback), x_T=x_T)

    def made_by(self) -> dict[str, Any]:
        """Everything bulk image i depends on besides i: shards agreeing on it merge into one run's samples."""
        from omegaconf import OmegaConf

        return {"model": self.model_id, "weights": self.cfg.weights, "seed": self.cfg.seed, "guidance": self.guidance,
                "sampler": OmegaConf.to_container(self.cfg.sampler, resolve=True),
                "num_samples": self.cfg.num_samples, "classes": self.classes()}

    def classes(self) -> list[int]:
        """The prompted class, or all classes."""
        if self.cfg.prompt is not None:
            return [parse_prompt(self.cfg.prompt, self.names)]
        return list(range(len(self.names)))


@register_mode("grid")
def mode_grid(s: Sampling, out: Path) -> list[Path]:
    """Rows = classes, n_per_class columns, labelled with class names."""
    classes, n = s.classes(), s.cfg.n_per_class
    labels = torch.tensor(classes).repeat_interleave(n)
    images = s.generate(labels, [c * n + j for c in classes for j in range(n)])
    return [save_grid(images, out / "grid.png", n, [s.names[c] for c in classes])]


@register_mode("random")
def mode_random(s: Sampling, out: Path) -> list[Path]:
    """A 4×4 grid of random classes (or of the prompted class)."""
    classes = torch.tensor(s.classes())
    labels = classes[torch.randint(len(classes), (16,), generator=torch.Generator().manual_seed(s.cfg.seed))]
    images = s.generate(labels, list(range(16)))
    rows = [", ".join(s.names[int(c)] for c in labels[r * 4:(r + 1) * 4]) for r in range(4)]
    return [save_grid(images, out / "random.png", 4, rows)]


@register_mode("fixed_noise")
def mode_fixed_noise(s: Sampling, out: Path) -> list[Path]:
    """One starting noise x_T, every label: what the label alone changes; x_T shown first."""
    k = len(s.names)
    x_T = per_sample_randn(sample_generators(s.cfg.seed, [0]), s.shape, s.module.device).repeat(k, 1, 1, 1)
    images = s.generate(torch.arange(k), [0] * k, x_T=x_T)
    strip = torch.cat([(x_T[:1] / 3).clamp(-1, 1).cpu(), images.cpu()])
    return [save_grid(strip, out / "fixed_noise.png", k + 1, col_labels=["x_T", *[str(i) for i in range(k)]])]


@register_mode("noise_pairs")
def mode_noise_pairs(s: Sampling, out: Path) -> list[Path]:
    """The seed blog's figure: n_progression starting noises x_T (top row) above the images they become (one class
    each, cycling; the prompted class if set)."""
    classes, n = s.classes(), s.cfg.n_progression
    labels = torch.tensor([classes[i % len(classes)] for i in range(n)])
    x_T = per_sample_randn(sample_generators(s.cfg.seed, range(n)), s.shape, s.module.device)
    images = s.generate(labels, list(range(n)), x_T=x_T)
    pairs = torch.cat([(x_T / 3).clamp(-1, 1).cpu(), images.cpu()])  # noise shown at 1/3 scale, as fixed_noise does
    names = [s.names[int(c)].split("/")[0][:10] for c in labels]
    return [save_grid(pairs, out / "noise_pairs.png", n, ["x_T", "x_0"], names)]


@register_mode("progression")
def mode_progression(s: Sampling, out: Path) -> list[Path]:
    """Denoising paths x_t every `every` steps, as a PNG strip (rows = samples) and an animated GIF."""
    n, path = s.cfg.n_progression, []
    labels = torch.arange(n) % len(s.names)
    s.generate(labels, list(range(n)),
               callback=lambda i, t, x, eps, x_t: path.append((t, x.float().cpu().clamp(-1, 1))))
    every = s.cfg.every or max(1, len(path) // 10)
    kept = path[::every] if (len(path) - 1) % every == 0 else path[::every] + path[-1:]
    frames = [x for _, x in kept]
    times = [f"t={t}" for t, _ in kept[:-1]] + ["x0"]
    strip = torch.stack(frames, dim=1).flatten(0, 1)  # (n·F, C, H, W), row-major per sample
    png = save_grid(strip, out / "progression.png", len(frames), [s.names[int(c)] for c in labels], times)
    pics = [grid_image(f, min(n, 5), scale=3) for f in frames]
    gif = out / "progression.gif"
    pics[0].save(gif, save_all=True, append_images=pics[1:] + [pics[-1]] * 5, duration=150, loop=0)
    return [png, gif]


def first_test_images(spec: Any, classes: list[int], per_class: int) -> tuple[Tensor, Tensor]:
    """The first `per_class` test images of each class, in the model's range and frame, with their labels."""
    from diffusion.data import load_split, to_model_range

    images, labels = load_split(data_root(), spec, train=False)
    pick = torch.cat([(labels == c).nonzero()[:per_class, 0] for c in classes])
    return to_model_range(images[pick], spec.pad), labels[pick]


@register_mode("forward")
def mode_forward(s: Sampling, out: Path) -> list[Path]:
    """Real test images noised at increasing t: the forward process q(x_t | x_0)."""
    spec = s.module.data_spec
    classes = s.classes()[: s.cfg.n_progression]
    x0, _ = first_test_images(spec, classes, 1)
    T = s.module.schedule.timesteps
    ts = torch.linspace(0, T - 1, 10).round().long()
    noise = per_sample_randn(sample_generators(s.cfg.seed, range(len(classes))), s.shape, torch.device("cpu"))
    sched = s.module.schedule.cpu()
    rows = [sched.q_sample(x0[i : i + 1].expand(10, -1, -1, -1), ts, noise[i : i + 1].expand(10, -1, -1, -1))
            for i in range(len(classes))]
    return [save_grid(torch.cat(rows), out / "forward.png", 10, [s.names[c] for c in classes],
                      [f"t={int(t)}" for t in ts])]


@register_mode("recognition")
def mode_recognition(s: Sampling, out: Path) -> list[Path]:
    """When noise hides the class and when sampling reveals it (the seed report's analysis): the evaluator's accuracy
    on `num_samples` test images noised to each of 41 timesteps, and on n_per_class samples per class after every
    sampler step; the t from which each class is recognised and stays so. CSVs and a plot."""
    from diffusion import analysis
    from diffusion.classifier import load_classifier

    spec, module, names = s.module.data_spec, s.module, s.names
    net = load_classifier(data_root(), spec.name)[0]
    classes = s.classes()
    x0, y0 = first_test_images(spec, classes, -(-s.cfg.num_samples // len(classes)))
    x0 = x0.to(module.device)
    T = module.schedule.timesteps
    ts = torch.linspace(0, T - 1, 41).round().long().tolist()
    forward = analysis.forward_recognition(module.schedule, net, x0, y0, spec, ts, s.cfg.seed)
    n = s.cfg.n_per_class
    y = torch.tensor(classes).repeat_interleave(n)
    preds, times = [], []
    s.generate(y, [c * n + j for c in classes for j in range(n)],
               callback=lambda i, t, x, eps, x_t: (preds.append(analysis.predict(net, x, spec)), times.append(int(t))))
    unmeasurable = analysis.noise_classes(forward)
    reverse = analysis.reverse_recognition(torch.stack(preds), y, times, len(names), unmeasurable)
    fwd_t = [analysis.last_t_above(ts, forward[:, 1 + c].tolist()) for c in range(len(names))]
    written = analysis.write_csvs(out, names, ts, forward, times, reverse, fwd_t)
    chance = analysis.chance_t(ts, forward[:, 0].tolist(), len(names))
    print(f"forward: accuracy {forward[0, 0]:.3f} at t=0, within 5 points of chance from t={chance} of T={T}")
    for c in classes:
        r = reverse["per_class"][c]
        print(f"reverse: {names[c]:<12} " + (f"not measurable: the evaluator classifies pure noise as {names[c]}"
                                              if c in unmeasurable else f"recognised in {r['recognised']:.0%} of "
                                              f"paths, median t={r['median_t']:.0f}"))
    sampler = f"{sampler_name(s.cfg.sampler._target_)}, {len(times)} steps"
    return [*written, analysis.plot(out / "recognition.png", names, ts, forward, times, reverse, T, sampler)]


def save_npz(path: Path, images: np.ndarray, labels: np.ndarray, indices: np.ndarray | None = None,
             made_by: dict[str, Any] | None = None) -> None:
    """Write the npz atomically (compressed), never a partial file. `indices` (default 0…N−1) and `made_by` (JSON)
    let shards of one run be merged."""
    indices = np.arange(len(images)) if indices is None else indices
    extra = {"made_by": np.array(json.dumps(made_by, sort_keys=True))} if made_by is not None else {}
    atomic_write(path, lambda f: np.savez_compressed(f, images=images, labels=labels, indices=indices, **extra))


def read_npz(path: Path) -> dict[str, Any]:
    """A samples.npz as arrays (never unpickling) and its `made_by` record."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data["made_by"] = json.loads(str(data["made_by"])) if "made_by" in data else None
    return data


def pixels(images: Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) -> samples.npz's layout: (N, H, W), or (N, H, W, 3) in colour."""
    out = images.permute(0, 2, 3, 1).numpy()
    return out[..., 0] if out.shape[-1] == 1 else out


def from_pixels(images: np.ndarray) -> Tensor:
    """samples.npz's layout back to uint8 (N, C, H, W): the inverse of `pixels`."""
    tensor = torch.from_numpy(images)
    return tensor.unsqueeze(1) if images.ndim == 3 else tensor.permute(0, 3, 1, 2)


def save_pngs(folder: Path, images: np.ndarray, labels: Tensor, indices: list[int]) -> None:
    """One PNG per image, <index>_<label>.png (for pytorch-fid and other external tools)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in zip(indices, images):
        Image.fromarray(img).save(folder / f"{i:05d}_{int(labels[i])}.png")


def shard_range(cfg: DictConfig) -> range:
    """The bulk images this call makes: all num_samples, or the shard [start, stop) of them."""
    return range(cfg.num_samples) if cfg.shard is None else range(*cfg.shard)


@register_mode("bulk")
def mode_bulk(s: Sampling, out: Path) -> list[Path]:
    """num_samples images (or the shard [start, stop) of them) to samples.npz (uint8 (N, H, W), or (N, H, W, 3) in
    colour, labels, indices and what made them), optionally PNGs; Ctrl-C keeps what is done."""
    indices = shard_range(s.cfg)
    labels = balanced_labels(s.cfg.num_samples, s.classes())
    npz, png_dir = out / "samples.npz", out / "png"
    done: list[np.ndarray] = []

    def save(images: Tensor, idx: list[int]) -> None:  # after every batch: a complete, valid file so far
        done.append(pixels(images))
        made = np.arange(indices.start, idx[-1] + 1)
        save_npz(npz, np.concatenate(done), labels[made].numpy(), made, s.made_by())
        if s.cfg.png_dir:
            save_pngs(png_dir, done[-1], labels, idx)

    try:
        generate(s.module, labels[indices.start : indices.stop], indices, s.cfg.batch_size, s.sampler, s.guidance,
                 s.cfg.seed, desc="sampling", on_batch=save, callback=s.hook())
    except KeyboardInterrupt:
        count = sum(len(b) for b in done)
        print(f"interrupted: {count} complete images saved in {npz}", file=sys.stderr)
        raise SystemExit(130) from None
    return [npz] + ([png_dir] if s.cfg.png_dir else [])


def merged_shards(s: Sampling) -> tuple[np.ndarray, np.ndarray]:
    """mode=merge: the shards' images and labels in index order; one line unless they are exactly images 0 … N−1
    of this model, seed, ω and sampler, each made once."""
    parts = []
    for given in s.cfg.shards:
        path = Path(given) / "samples.npz" if Path(given).is_dir() else Path(given)
        if not path.is_file():
            raise FileNotFoundError(f"shard {given}: no samples.npz there")
        part = read_npz(path)
        if part["made_by"] != s.made_by():
            raise ValueError(f"shard {given} was not made by this model, seed, guidance, sampler and num_samples "
                             f"(its record: {part['made_by']})")
        parts.append(part)
    indices = np.concatenate([p["indices"] for p in parts])
    if sorted(indices.tolist()) != list(range(s.cfg.num_samples)):
        missing = sorted(set(range(s.cfg.num_samples)) - set(indices.tolist()))
        raise ValueError(f"the shards hold {len(indices)} images, not each of 0 … {s.cfg.num_samples - 1} once"
                         + (f" (missing from {missing[0]})" if missing else " (some twice)"))
    order = np.argsort(indices)
    return np.concatenate([p["images"] for p in parts])[order], np.concatenate([p["labels"] for p in parts])[order]


@register_mode("merge")
def mode_merge(s: Sampling, out: Path) -> list[Path]:
    """Shards of one bulk run (`shards=[dir, ...]`) -> the samples.npz that run would have written whole."""
    images, labels = merged_shards(s)
    save_npz(out / "samples.npz", images, labels, None, s.made_by())
    return [out / "samples.npz"]


def interactive(s: Sampling, out: Path, stdin: Any = sys.stdin) -> None:
    """Prompt loop: a class word or digit makes and saves an image; `grid` a class grid; `quit` or EOF exits."""
    hint = f"type a class ({', '.join(s.names)}, or 0-{len(s.names) - 1}), 'grid', or 'quit'"
    print(hint, flush=True)
    count = 0
    for line in stdin:
        text = line.strip()
        if text.lower() in ("quit", "exit", "q"):
            break
        if not text:
            continue
        if text.lower() == "grid":
            print(mode_grid(s, out)[0], flush=True)
            continue
        try:
            c = parse_prompt(text, s.names)
        except ValueError as err:
            print(f"{err}. {hint}", flush=True)
            continue
        image = s.generate(torch.tensor([c]), [count])
        path = out / "interactive" / f"{count:03d}_{_slug(s.names[c])}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid_image(image, 1, scale=4).save(path)
        print(path, flush=True)
        count += 1


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower())

"""Training images/s through `train.py` itself, eager against compiled, side by side in one run.

`python -m benchmarks.entry_speed [common overrides ...] [--steps 600] [--parallel K] [--variant NAME OVERRIDE ...]`
(the common overrides first). Each variant is one `train.py` run of `--steps` steps with its overrides and the
common ones, without end-of-run evaluation, sample grid or progress bar; the figure is `steady_images_per_s` from
its status.json (diffusion.callbacks.FitClock: after the first 20 steps, so compilation and CUDA-graph capture are
left out, checkpoints and validation kept), with the whole fit's images/s beside it. `--parallel K` runs K copies of
each at once and sums them (K sweep points sharing one GPU; each copy timed over its own steps). Default variants:
the default U-Net at batch 128 and the seed paper's recipe (`experiment=ablation_schedule`, batch 32), each eager
and with `compile=reduce-overhead`; on a GPU `trainer=gpu` is added. Prints a Markdown table with each compiled
variant's speed-up over its eager one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "default U-Net, batch 128": [],
    "default U-Net, batch 128, compiled": ["compile=reduce-overhead"],
    "paper's recipe, batch 32": ["experiment=ablation_schedule"],
    "paper's recipe, batch 32, compiled": ["experiment=ablation_schedule", "compile=reduce-overhead"],
}
QUIET = ["eval.num_samples=0", "callbacks.sample_grid=null", "callbacks.progress=null", "logger=none"]


def run(overrides: list[str], steps: int, folder: Path, copies: int = 1) -> dict[str, float]:
    """`copies` train.py runs at once (sweep points sharing the machine); their status.json metrics, images/s summed
    over the copies (empty if one failed, with its last error line printed)."""
    command = [sys.executable, "train.py", *overrides, f"trainer.max_steps={steps}", *QUIET]
    folder.mkdir(parents=True)
    logs = [open(folder / f"{k}.log", "w") for k in range(copies)]
    runs = [subprocess.Popen([*command, f"hydra.run.dir={folder / str(k)}"], cwd=ROOT, stdout=log, stderr=log)
            for k, log in enumerate(logs)]
    found = []
    for k, (proc, log) in enumerate(zip(runs, logs)):
        proc.wait()
        log.close()
        status = folder / str(k) / "status.json"
        if proc.returncode != 0 or not status.is_file():
            last = (folder / f"{k}.log").read_text().strip().splitlines() or ["?"]
            print(f"failed: {' '.join(overrides)}: {last[-1]}", file=sys.stderr)
            return {}
        found.append(json.loads(status.read_text())["metrics"])
    summed = {key: round(sum(m[key] for m in found), 1) for key in ("steady_images_per_s", "fit_images_per_s")
              if all(key in m for m in found)}
    return {**summed, "fit_seconds": max(m["fit_seconds"] for m in found)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps per variant (the first 20 untimed)")
    parser.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "OVERRIDE"),
                        help="a variant of your own: its name, then its overrides (repeatable; replaces the defaults)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="run each variant this many times at once and sum their images/s (points sharing a GPU)")
    parser.add_argument("common", nargs="*", help="overrides for every variant, e.g. debug=fast")
    args = parser.parse_args(argv)
    import torch

    variants = {v[0]: v[1:] for v in args.variant} if args.variant else VARIANTS
    gpu = ["trainer=gpu"] if torch.cuda.is_available() else []
    where = torch.cuda.get_device_name() if gpu else "CPU"
    rows, eager = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, overrides) in enumerate(variants.items()):
            m = run([*gpu, *args.common, *overrides], args.steps, Path(tmp) / str(i), args.parallel)
            steady = m.get("steady_images_per_s")
            base = name.removesuffix(", compiled")
            if base == name:
                eager[name] = steady
            ratio = f"{steady / eager[base]:.2f}×" if base != name and steady and eager.get(base) else ""
            rows.append(f"| {name} | {steady or 'failed'} | {m.get('fit_images_per_s', '')} | "
                        f"{m.get('fit_seconds', '')} | {ratio} |")
    copies = f", {args.parallel} runs at once (images/s summed)" if args.parallel > 1 else ""
    print(f"train.py, {args.steps} steps per variant{copies}, {where}")
    print("| variant | images/s after 20 steps | images/s, whole fit | fit seconds | compiled / eager |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0 if all("failed" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

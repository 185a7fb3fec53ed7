"""docs/recipe/study.png and compute.png from the recorded evaluations: `python docs/recipe/plot.py` (matplotlib)."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
study = [json.loads(line) for line in open(HERE / "study_1unit_2k.jsonl")]
runs = [r for r in study if "evals" in r and r["best"][1]["fid_inception"] < 100]  # two runs returned noise: table
runs.sort(key=lambda r: r["best"][1]["fid_inception"])
finals = [json.loads(line) for line in open(HERE / "finalists_10k.jsonl")]
shipped = json.loads((HERE.parents[1] / "pretrained" / "mnist" / "metrics.json").read_text())  # experiment=mnist_best
PAPER_FID, PAPER_UNITS = 16.19, 12.5  # the seed paper: Table 2, linear, T = 1000; 100k steps × 32 images
# standard FID at 10,000 samples, mean over the sample seeds, of each recipe scored that way
fid = {r["name"]: sum(m["fid_inception"] for m in r["final"]) / len(r["final"]) for r in finals + study if "final" in r}
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
a.barh([r["name"] for r in runs], [r["best"][1]["fid_inception"] for r in runs], color="tab:blue")
a.barh([r["name"] for r in runs], [r["best"][1]["fid"] for r in runs], color="tab:orange", height=0.35)
a.invert_yaxis()
a.set_xlabel("FID at the best ω (2,000 samples; blue: Inception 28×28, orange: classifier)")
a.set_title("One change at a time from the old default (1 unit = 256k images)")
labels, means = [], []
for name, label in (("base", "old\ndefault"), ("lr2e-3", "lr 2e-3"), ("default_v", "v +\nlr 2e-3"),
                    ("default_v_ema99", "v + lr 2e-3\n+ EMA 0.99\n(new default)")):
    if name in fid:
        labels.append(label)
        means.append(fid[name])
b.bar(labels, means, color="tab:green")
b.axhline(PAPER_FID, color="k", ls="--", lw=1)
b.text(1.5, PAPER_FID + 0.41, f"seed paper ({PAPER_UNITS} units): {PAPER_FID}", fontsize=8)
b.set_ylabel("standard FID, 10,000 samples")
b.set_title("Finalists at 1 unit (H100)")
b.tick_params(axis="x", labelsize=7)
fig.tight_layout()
fig.savefig(HERE / "study.png", dpi=110)
print(HERE / "study.png")

# FID against training compute: one training image costs 3 forward passes of 0.461 GFLOP (docs/recipe.md, Compute).
IMAGES_PER_UNIT = 256_000
UNIT_FLOPS = IMAGES_PER_UNIT * 3 * 0.461e9
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
best = [json.loads(line) for line in open(HERE / "mnist_best_cpu.jsonl")]
a.plot([r["training_images"] / IMAGES_PER_UNIT for r in best], [r["fid"] for r in best], "o-", color="tab:red",
       label="experiment=mnist_best (8-unit schedule, CPU)")
# the 1-unit default at the same settings: the README sampler table's default row (pretrained/mnist_1unit)
a.plot([1], [5.78], "s", color="tab:green", ms=8, label="new default, make train (1 unit)")
a.axvline(8, color="k", ls=":", lw=1)
a.set_xlim(0, 8.5)
a.set_yscale("log")
a.set_xlabel(f"training compute, units (1 unit = {UNIT_FLOPS:.2g} FLOPs = 256k images)")
a.set_ylabel("classifier FID, 2,000 samples")
a.set_title("DPM-Solver++(3M), 10 steps, ω = 0.5, EMA weights")
a.legend(fontsize=8)
a.grid(alpha=0.3, which="both")
b.plot([1], [fid["base"]], "o", color="tab:gray", ms=8, label="old default (ε, lr 1e-3, EMA 0.995)")
b.plot([1], [fid["default_v_ema99"]], "s", color="tab:green", ms=8, label="new default (v, lr 2e-3, EMA 0.99)")
shipped_units = shipped["step"] * 128 / IMAGES_PER_UNIT
default = shipped["default_sampler_10k"]  # the same weights evaluated with the default sampler
b.plot([shipped_units], [shipped["fid_inception_mean"]], "o", color="tab:red", ms=8,
       label=f"experiment=mnist_best (8 units, CPU), DPM-Solver++({shipped['sampler_options']['order']}M) "
             f"{shipped['sampler_steps']}")
b.plot([shipped_units], [default["fid_inception_mean"]], "o", mfc="none", color="tab:red", ms=8,
       label=f"the same weights, default {default['sampler_options']['order']}M {default['sampler_steps']}")
b.plot([PAPER_UNITS], [PAPER_FID], "k^", ms=8, label="seed paper (100k steps × 32)")
b.axhline(6, color="tab:red", ls=":", lw=1, label="the 8-unit aim: 6")
b.set_xscale("log")
b.set_xlim(0.5, 20)
b.set_xlabel("training compute, units")
b.set_ylabel("standard FID, 10,000 samples (28×28)")
b.set_title("Standard FID reached, by training budget")
b.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2)  # below: no point hidden
b.grid(alpha=0.3, which="both")
fig.tight_layout()
fig.savefig(HERE / "compute.png", dpi=110)
print(HERE / "compute.png")

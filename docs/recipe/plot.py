"""docs/recipe/study.png from the study's records: `python docs/recipe/plot.py` (matplotlib)."""

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
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
a.barh([r["name"] for r in runs], [r["best"][1]["fid_inception"] for r in runs], color="tab:blue")
a.barh([r["name"] for r in runs], [r["best"][1]["fid"] for r in runs], color="tab:orange", height=0.35)
a.invert_yaxis()
a.set_xlabel("FID at the best ω (2,000 samples; blue: Inception 28×28, orange: classifier)")
a.set_title("One change at a time from the old default (1 unit = 256k images)")
labels, means = [], []
for name, label in (("base", "old\ndefault"), ("lr2e-3", "lr 2e-3"), ("default_v", "v +\nlr 2e-3"),
                    ("default_v_ema99", "v + lr 2e-3\n+ EMA 0.99\n(new default)")):
    f = [m["fid_inception"] for r in finals + study if r.get("name") == name and "final" in r for m in r["final"]]
    if f:
        labels.append(label)
        means.append(sum(f) / len(f))
b.bar(labels, means, color="tab:green")
b.axhline(16.19, color="k", ls="--", lw=1)
b.text(1.5, 16.6, "seed paper (12.5 units): 16.19", fontsize=8)
b.set_ylabel("standard FID, 10,000 samples")
b.set_title("Finalists at 1 unit (H100)")
b.tick_params(axis="x", labelsize=7)
fig.tight_layout()
fig.savefig(HERE / "study.png", dpi=110)
print(HERE / "study.png")

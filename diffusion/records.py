"""The one owner of results: what a metrics.json holds, how its numbers read, print and log, and the tables the docs
render from committed records (`python -m diffusion.render`).

A metrics.json is either one evaluation (`fid`, `is`, ... of one set of samples) or several sample seeds of the same
model (`<key>_mean` / `<key>_std` over the seeds, each seed's metrics under `seeds`). Readers go through `value`,
`spread` and `shown`, so both kinds read alike. No torch here: the report and the docs load this in an instant.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Metric:
    """A headline number: its metrics.json key, its label, the significant digits of the report's raw figures, and
    how tables and lines show it (fixed decimals, or a percentage)."""

    key: str
    label: str
    digits: int = 4
    decimals: int = 2
    percent: bool = False

    def show(self, m: dict[str, Any]) -> str:
        """This metric of a metrics.json as the docs, the printed table and the demo give it: "4.40 ± 0.07",
        "99.88% ± 0.07%"; empty when absent."""
        if not self.percent:
            return shown(m, self.key, fixed=self.decimals)
        v, s = value(m, self.key), spread(m, self.key)
        if v is None:
            return ""
        return f"{100 * v:.{self.decimals}f}%" + ("" if s is None else f" ± {100 * s:.{self.decimals}f}%")


# The headline numbers, in table order: the only list of them. Adding a metric: its key here, its value in
# diffusion.evaluation.evaluate; the report, the printed table, the docs' seed tables, W&B and the demo follow.
HEADLINE = (
    Metric("fid_inception", "standard FID"),  # Inception-v3 features: the seed paper's protocol
    Metric("fid", "classifier FID"),  # the project's evaluator's features
    Metric("is", "IS", decimals=3),
    Metric("class_accuracy", "class accuracy", percent=True),
)
PER_SAMPLE_SET = ("is_std", "per_class_accuracy", "confusion", "seed")  # meaningful for one set of samples only


def headline_keys() -> list[str]:
    """The headline metrics' keys, in table order."""
    return [h.key for h in HEADLINE]


def label(key: str) -> str:
    """A headline metric's column label."""
    return next(h.label for h in HEADLINE if h.key == key)


def value(m: dict[str, Any], key: str) -> float | None:
    """A headline number of one evaluation, or its mean over the sample seeds."""
    got = m.get(f"{key}_mean", m.get(key)) if "num_seeds" in m else m.get(key)
    return float(got) if isinstance(got, (int, float)) else None


def spread(m: dict[str, Any], key: str) -> float | None:
    """The sample standard deviation of a headline number over the sample seeds (None for one evaluation)."""
    got = m.get(f"{key}_std") if "num_seeds" in m else None
    return float(got) if isinstance(got, (int, float)) else None


def shown(m: dict[str, Any], key: str, digits: int | None = None, fixed: int | None = None) -> str:
    """A headline number as text: "4.405" or, over seeds, "4.405 ± 0.067" (`digits` significant, or `fixed`
    decimals for both); empty when absent."""
    v, s = value(m, key), spread(m, key)
    if v is None:
        return ""
    digits = digits or next((h.digits for h in HEADLINE if h.key == key), 4)
    fmt = (lambda x: f"{x:.{fixed}f}") if fixed is not None else (lambda x: f"{x:.{digits}g}")
    return fmt(v) if s is None else f"{fmt(v)} ± {fmt(s) if fixed is not None else f'{s:.2g}'}"


def sampler_label(m: dict[str, Any]) -> str:
    """How a metrics.json's samples were drawn, short: "dpm_solver 2M 20", "ddim 50", "+ interval" when ω was
    applied in a σ range only."""
    options = m.get("sampler_options") or {}
    parts = [m.get("sampler"), f"{options['order']}M" if options.get("order") else None, m.get("sampler_steps"),
             "+ interval" if options.get("guidance_interval") else None]
    return " ".join(str(p) for p in parts if p is not None)


def summarize_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One metrics dict for the same model scored with several sample seeds: `<metric>_mean` and `<metric>_std`
    (sample standard deviation) of the headline numbers, every seed's metrics under `seeds`, the shared metadata
    from the first, and a printable `summary` line."""
    shared = {k: v for k, v in runs[0].items() if k not in (*headline_keys(), *PER_SAMPLE_SET)}
    out: dict[str, Any] = {**shared, "num_seeds": len(runs)}
    parts = []
    for key in headline_keys():
        values = [r[key] for r in runs if key in r]
        if len(values) == len(runs):
            mean, std = statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
            out[f"{key}_mean"], out[f"{key}_std"] = mean, std
            parts.append(f"{key} {mean:.4g} ± {std:.2g}")
    out["seeds"] = runs
    out["summary"] = f"{len(runs)} seeds × {runs[0]['num_samples']} samples: " + ", ".join(parts)
    return out


def key_segment(name: str) -> str:
    """A name as one segment of a metric key that W&B can sort and filter by: letters, digits and _, not starting
    with a digit ("ddim-50" -> "ddim_50")."""
    segment = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return segment if re.match(r"[A-Za-z_]", segment) else f"_{segment}"


def guidance_segment(guidance: float) -> str:
    """ω as a key segment: 0.2 -> w0_2, 1 -> w1, -1 -> wm1 (unconditional)."""
    return "w" + f"{guidance:g}".replace("-", "m").replace(".", "_")


def logger_scalars(m: dict[str, Any], evaluation: str | None = None,
                   guidance: float | None = None) -> dict[str, float]:
    """The headline numbers as logger scalars: eval/<key>, or with a named evaluation and/or an ω of several
    eval/<evaluation>/w<ω>/<key> (e.g. eval/fast/w0_2/fid), every key valid for W&B's tables."""
    parts = ["eval", *([key_segment(evaluation)] if evaluation else []),
             *([guidance_segment(guidance)] if guidance is not None else [])]
    return {"/".join([*parts, key]): v for key in headline_keys() if (v := value(m, key)) is not None}


def result_rows(results: dict[str | None, dict[float, dict[str, Any]]]) -> tuple[list[str], list[list[Any]]]:
    """Every (evaluation, ω) of a run as a table: the columns and one row each (evaluation, sampler, ω, the headline
    numbers, samples, step)."""
    columns = ["evaluation", "sampler", "ω", *[h.label for h in HEADLINE], "samples", "step"]
    rows = [[name or "", sampler_label(m), w, *[value(m, h.key) for h in HEADLINE], m.get("num_samples"), m.get("step")]
            for name, by_w in results.items() for w, m in by_w.items()]
    return columns, rows


def headline_line(m: dict[str, Any]) -> str:
    """The headline numbers of a metrics.json in one line: "standard FID 4.40, classifier FID 5.42, IS 9.910, class
    accuracy 99.88%" (those it holds)."""
    return ", ".join(f"{h.label} {h.show(m)}" for h in HEADLINE if value(m, h.key) is not None)


def format_table(m: dict[str, Any], names: list[str]) -> str:
    """A short printable summary: headline numbers, then accuracy and the commonest confusion per class."""
    lines = [f"{m['num_samples']} samples of {m['data']}: {headline_line(m)}",
             f"{'class':<12} {'accuracy':>8}  most often mistaken for"]
    for c, name in enumerate(names):
        row = list(m["confusion"][c])
        row[c] = -1
        other = max(range(len(row)), key=row.__getitem__)
        mistaken = f"{names[other]} ({row[other]})" if row[other] > 0 else "-"
        lines.append(f"{name:<12} {m['per_class_accuracy'][c]:>8.3f}  {mistaken}")
    return "\n".join(lines)


def write_metrics(metrics: dict[str, Any], path: Path) -> Path:
    """metrics.json (indented, stable key order)."""
    path.write_text(json.dumps(metrics, indent=2))
    return path


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A metrics.json as a dict (diffusion.files.UnreadableFile, naming it, for anything else)."""
    from diffusion.files import read_json_object

    return read_json_object(path)

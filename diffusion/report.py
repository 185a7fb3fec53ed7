"""`python -m diffusion.report <multirun dir>`: one table from every run's metrics.json and status.json, with the
seed paper's published FID beside each run of a setting it reports, then the paper's Tables 2 and 3 with a column
per named evaluation (eval.samplers) of this sweep.

Writes report.md, report.csv and, when several ω were evaluated, guidance.png (FID and IS against ω)
into the directory (or --out), and prints the Markdown tables; `--wandb` also logs them to the sweep's W&B group.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffusion import records
from diffusion.published import PAPER_IS_NETWORK, PAPER_TABLES, TABLE_TITLES, paper_scores, paper_tables_of
from diffusion.files import UnreadableFile
from diffusion.records import label, read_metrics, sampler_label, shown, spread, value
from diffusion.runs import METRICS, OK, STATUS_FILE, WANDB_IDENTITY, read_status

PAPER = "paper (Inception FID)"
PAPER_IS = "paper IS (its own MNIST CNN)"  # not Inception's, not our classifier's: not comparable to ours
BESIDE = {"fid_inception": PAPER, "is": PAPER_IS}  # the paper's figure goes beside our metric of that key
IS_NOTE = (f"IS: the paper's from {PAPER_IS_NETWORK}, ours from our classifier (diffusion/classifier.py); neither is "
           "Inception-v3's, and the two are not comparable. Standard FID: both Inception-v3 features, 28×28; the "
           "classifier FID uses our classifier's features and is comparable only with itself.")


def columns() -> list[str]:
    """The table's columns: the run, its setting, the headline metrics (diffusion.records), the paper's FID and IS."""
    metrics = [c for h in records.HEADLINE for c in ([h.label, BESIDE[h.key]] if h.key in BESIDE else [h.label])]
    return ["run", "evaluation", "iterations", "T", "schedule", "ω", "seed", *metrics, "samples", "sampler", "status"]


def _cell(m: dict[str, Any], key: str) -> Any:
    """A headline number: the float of one evaluation, or "mean ± std" over sample seeds (the paper's Table 1)."""
    return shown(m, key) if spread(m, key) is not None else value(m, key)


def _row(run: str, m: dict[str, Any]) -> dict[str, Any]:
    paper = paper_scores(m.get("data"), m.get("schedule"), m.get("timesteps"), m.get("guidance")) or (None, None)
    if "num_seeds" in m:
        run = f"{run} (mean ± std of {m['num_seeds']} seeds)"
    return {"run": run, "evaluation": m.get("evaluation"), "iterations": m.get("step"), "T": m.get("timesteps"),
            "schedule": m.get("schedule"), "ω": m.get("guidance"), "seed": m.get("seed"),
            **{h.label: _cell(m, h.key) for h in records.HEADLINE}, PAPER: paper[0],
            PAPER_IS: paper[1], "samples": m.get("num_samples"), "sampler": sampler_label(m), "status": "ok",
            ROW_RECORD: m}


ROW_RECORD = "_metrics"  # a row's metrics.json, for the paper's tables (not a column)
UNREADABLE = "unreadable"  # a row's status when its record could not be read
TABLE_KEYS = ("fid_inception", "fid", "is")  # what a cell of the paper's tables shows, in this order


def table_cell(found: list[dict[str, Any]], keys: Sequence[str]) -> str:
    """One setting of the paper's tables: each key's value ("–" where not measured), over several runs of the
    setting (training seeds) "mean ± std" and their number."""
    parts = []
    for key in keys:
        values = [v for r in found if (v := value(r[ROW_RECORD], key)) is not None]
        if not values:
            parts.append("–")
        elif len(values) == 1:
            parts.append(f"{values[0]:.4g}")
        else:
            parts.append(f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}")
    return " / ".join(parts) + (f" ({len(found)} runs)" if len(found) > 1 else "")


def paper_table_rows(rows: list[dict[str, Any]]) -> dict[int, tuple[str, list[str], list[list[str]]]]:
    """The seed paper's Tables 2 and 3, {n: (title, header, rows)}: per setting its Inception FID / IS, then this
    sweep's for each evaluation: the Inception FID where it was measured, the classifier FID and IS always; several
    runs of one setting (e.g. seed=0,1) as mean ± std."""
    ok = [r for r in rows if r.get("status") == OK and ROW_RECORD in r]
    evaluations = sorted({r.get("evaluation") or "" for r in ok}, key=lambda e: (e != "paper", e))
    keys = [k for k in TABLE_KEYS if k != "fid_inception" or any(value(r[ROW_RECORD], k) is not None for r in ok)]
    shown_as = " / ".join(("classifier IS" if k == "is" else label(k)) for k in keys)
    out = {}
    for n, title in TABLE_TITLES.items():
        header = ["schedule", "T", "ω", "paper: Inception FID / IS of its own CNN",
                  *[f"ours{f', {e}' if e else ''}: {shown_as}" for e in evaluations]]
        lines = []
        for (schedule, T, w), (fid, is_) in PAPER_TABLES.items():
            if n not in paper_tables_of(schedule, T, w):
                continue
            cells = []
            for e in evaluations:
                found = [r for r in ok if (r.get("evaluation") or "") == e
                         and (r.get("schedule"), r.get("T"), r.get("ω")) == (schedule, T, w)]
                cells.append(table_cell(found, keys) if found else "not run")
            lines.append([schedule, str(T), f"{w:g}", f"{_paper(fid)} / {_paper(is_)}", *cells])
        out[n] = (title, header, lines)
    return out


def paper_tables(rows: list[dict[str, Any]]) -> str:
    """The seed paper's Tables 2 and 3 in Markdown (paper_table_rows)."""
    out = []
    for n, (title, header, lines) in paper_table_rows(rows).items():
        text = ["| " + " | ".join(header) + " |", "|---|---:|---:|" + "---:|" * (len(header) - 3),
                *["| " + " | ".join(line) + " |" for line in lines]]
        out.append(f"\n## The seed paper's Table {n}: {title}\n\n" + "\n".join(text) + "\n\n" + IS_NOTE + "\n")
    return "".join(out)


def log_to_wandb(rows: list[dict[str, Any]], root: Path, out: Path) -> None:
    """--wandb: the table and the paper's Tables 2 and 3 as W&B tables, in a job_type=report run of the sweep's W&B
    group (that of its runs; else report/<dir>)."""
    import wandb
    from omegaconf import OmegaConf

    from diffusion.loggers import WandbIdentity, wandb_logger
    from diffusion.runtime import CONF_DIR

    found = [WandbIdentity.read_only(p.parent) for p in sorted(root.glob(f"**/{WANDB_IDENTITY}"))]
    group = next((i.get("group") for i in found if i.get("group")), None) or f"report/{root.resolve().name}"
    project = next((i.get("project") for i in found if i.get("project")), None) \
        or OmegaConf.load(CONF_DIR / "logger" / "wandb.yaml").wandb.project
    logger = wandb_logger(project, str(out / "wandb-report"), default_name=f"report {root.resolve().name}",
                          group=group, job_type="report")
    try:
        data: dict[str, Any] = {"report/runs": wandb.Table(columns=columns(), allow_mixed_types=True,
                                                           data=[[r.get(c) for c in columns()] for r in rows])}
        for n, (title, header, lines) in paper_table_rows(rows).items():
            data[f"report/table_{n}"] = wandb.Table(columns=header, data=lines)
        logger.experiment.log(data)
        states = [r["status"].split(":")[0] for r in rows]
        logger.experiment.summary.update({"ok": states.count(OK), "failed": states.count("failed"),
                                          "interrupted": states.count("interrupted")})
    finally:
        wandb.finish()


def job_dir(path: Path, root: Path) -> Path:
    """The job directory a metrics file belongs to (eval/… folders belong to their training run)."""
    parts = path.parent.relative_to(root).parts
    rel = Path(*parts[:parts.index("eval")]) if "eval" in parts else Path(*parts)
    return Path(root.resolve().name) if rel == Path(".") else rel


def collect(root: str | Path) -> list[dict[str, Any]]:
    """Rows for every metrics.json under root, plus one row per job whose status is not ok (failed, interrupted); a
    record that cannot be read is a row saying so (`unreadable: <file>: <why>`)."""
    root = Path(root)
    rows = []
    for p in sorted(root.glob(f"**/{METRICS}")):
        try:
            rows.append(_row(str(job_dir(p, root)), read_metrics(p)))
        except (UnreadableFile, TypeError, ValueError) as err:  # ValueError, TypeError: values of the wrong type
            rows.append({"run": str(job_dir(p, root)), "status": f"{UNREADABLE}: {err}"})
    for p in sorted(root.glob(f"**/{STATUS_FILE}")):
        try:
            status = read_status(p.parent) or {}
        except UnreadableFile as err:
            rows.append({"run": str(p.parent.relative_to(root)), "status": f"{UNREADABLE}: {err}"})
            continue
        if status.get("status") != OK:
            rows.append({"run": str(p.parent.relative_to(root)),
                         "status": f"{status.get('status')}: {status.get('error')}"})
    return sorted(rows, key=lambda r: (r["run"], r.get("evaluation") or "", -99 if r.get("ω") is None else r["ω"]))


def points(root: str | Path) -> list[dict[str, Any]]:
    """One row per training run under root (its status.json): status, steps, training images and time, images/s,
    evaluation time, and the machine it last ran on."""
    from diffusion.runtime import machine_label

    root, out = Path(root), []
    for p in sorted(root.glob(f"**/{STATUS_FILE}")):
        try:
            status = read_status(p.parent) or {}
        except UnreadableFile:
            continue  # collect() shows it
        m = status.get("metrics") or {}
        if "fit_seconds" not in m:  # not a training run (a sample.py evaluation)
            continue
        out.append({"point": str(job_dir(p, root)), "status": status.get("status"), "iterations": m.get("global_step"),
                    "training images": m.get("fit_images"), "training steps' time": duration(m.get("fit_seconds")),
                    "images/s": m.get("fit_images_per_s"), "evaluation time": duration(m.get("eval_seconds")),
                    "machine": machine_label(status["machine"]) if status.get("machine") else ""})
    return out


def duration(seconds: float | None) -> str:
    """Seconds as "1 h 02 min", "24 min 10 s" or "38 s"; empty for None."""
    if seconds is None:
        return ""
    s = round(seconds)
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s" if m else f"{sec} s"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _paper(v: float | None) -> str:
    """A published figure as the paper prints it (two decimals)."""
    return "" if v is None else f"{v:.2f}"


def to_markdown(rows: list[dict[str, Any]]) -> str:
    cols = columns()
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_paper(r.get(c)) if c in (PAPER, PAPER_IS) else _fmt(r.get(c)) for c in cols) + " |"
              for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns())
        writer.writeheader()
        writer.writerows({c: r.get(c) for c in columns()} for r in rows)


def plot_guidance(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """FID and IS against ω, one line per run and evaluation; None when no run has more than one ω."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if isinstance(r.get(label("fid")), float) and r.get("ω") is not None:  # not the "mean ± std" of repeated runs
            runs.setdefault(r["run"] + (f" ({r['evaluation']})" if r.get("evaluation") else ""), []).append(r)
    if not any(len(v) > 1 for v in runs.values()) and len(runs) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for run, rs in runs.items():
        rs = sorted(rs, key=lambda r: r["ω"])
        for ax, key in zip(axes, (label("fid"), label("is"))):
            ax.plot([r["ω"] for r in rs], [r[key] for r in rs], "o-", label=run)
    for ax, key in zip(axes, (f"{label('fid')} (lower is better)", f"{label('is')} (higher is better)")):
        ax.set_xlabel("guidance ω (ω = −1: unconditional)")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="a multirun (or run) directory")
    parser.add_argument("--out", help="where to write report.md/.csv/guidance.png (default: root)")
    parser.add_argument("--wandb", action="store_true", help="also log the tables to W&B, in the sweep's group")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        print(f"error: {root} is not a directory", file=sys.stderr)
        return 1
    rows = collect(root)
    if not rows:
        print(f"error: no metrics.json or status.json under {root}", file=sys.stderr)
        return 1
    out = Path(args.out or root)
    out.mkdir(parents=True, exist_ok=True)
    table = to_markdown(rows) + paper_tables(rows)
    (out / "report.md").write_text(table)
    write_csv(rows, out / "report.csv")
    plot = plot_guidance(rows, out / "guidance.png")
    print(table)
    print(f"wrote {out / 'report.md'}, {out / 'report.csv'}" + (f", {plot}" if plot else ""))
    if args.wandb:
        log_to_wandb(rows, root, out)
    states = [r["status"].split(":")[0] for r in rows]
    interrupted = states.count("interrupted")
    print(f"{states.count(OK)} ok, {states.count('failed')} failed"
          + (f", {interrupted} interrupted (resume=true continues them)" if interrupted else "")
          + (f", {states.count(UNREADABLE)} unreadable" if UNREADABLE in states else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

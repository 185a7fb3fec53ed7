"""`python -m diffusion.render [--check]`: the results tables of the docs, rendered from committed records.

A rendered table stands between `<!-- table: KIND ARGS -->` and `<!-- /table -->` in a Markdown file (README.md,
docs/, pretrained/*/README.md); TABLES[KIND](doc, *ARGS) builds it from records: the shipped models' metrics.json,
JSONL under docs/, the seed paper's figures (diffusion.published). `--check` changes nothing and exits 1 naming
each table that differs from its records (the tests run it), so a number is measured once and typed nowhere.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffusion.published import PAPER_BATCH, PAPER_IS_NETWORK, PAPER_ITERATIONS, PAPER_REPEATS, PAPER_TABLES
import diffusion.records
from diffusion.records import read_metrics, sampler_label, shown, value
from diffusion.runs import METRICS, WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- table: ([^>]*?) -->\n)(.*?)(<!-- /table -->)", re.S)
UNIT_IMAGES = 256_000  # one training unit: `make train`'s 2,000 steps × 128 images (docs/recipe.md)
TABLES: dict[str, Callable[..., str]] = {}


def table(kind: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Register a table builder under `kind`."""

    def register(fn: Callable[..., str]) -> Callable[..., str]:
        TABLES[kind] = fn
        return fn

    return register


def markdown(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A Markdown table; `align` is one character per column, l or r."""
    marks = ["---:" if a == "r" else "---" for a in (align or "l" * len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]) + "\n"


def link(doc: Path, target: Path, text: str) -> str:
    """A Markdown link from `doc` to `target`, relative, as the docs write them."""
    return f"[{text}]({Path(os.path.relpath(target, doc.parent)).as_posix()})"


def records(path: str) -> dict[str, Any]:
    """A metrics.json, or one key of it: `pretrained/mnist/metrics.json:default_sampler_10k`."""
    file, _, key = path.partition(":")
    m = read_metrics(ROOT / file)
    return m[key] if key else m


def shipped() -> dict[str, Path]:
    """The shipped models' folders, the default first."""
    from diffusion.checkpoint import shipped_models

    return {name: path.parent for name, path in shipped_models().items()}


def units(m: dict[str, Any]) -> float:
    """A shipped model's training compute in units, from its metrics.json's `training` record."""
    return m["training"]["steps"] * m["training"]["batch_size"] / UNIT_IMAGES


def training(m: dict[str, Any]) -> str:
    """How a shipped model was trained, from its metrics.json's `training` record."""
    t, n = m["training"], units(m)
    return (f"`{t['recipe']}`, {n:g} unit{'' if n == 1 else 's'}: {t['steps']:,} steps × {t['batch_size']} images "
            f"({t['device']}, {t['wall_time']})")


@table("pretrained")
def pretrained_table(doc: Path) -> str:
    """The shipped models: training, standard FID (paper protocol), class accuracy, IS, the folder."""
    rows = []
    for name, folder in shipped().items():
        m = read_metrics(folder / METRICS)
        size = (folder / WEIGHTS).stat().st_size / 1e6
        fid = (f"{shown(m, 'fid_inception', fixed=2)} (ω = {m['guidance']:g}, {sampler_label(m)}, "
               f"{m['num_seeds']} sample seeds × {m['num_samples']:,})")
        rows.append([f"`{name}`", training(m), fid, accuracy(m), f"{value(m, 'is'):.2f}",
                     f"{link(doc, folder / 'README.md', f'`pretrained/{name}/`')}, {size:.1f} MB"])
    return markdown(["model", "training", "standard FID (paper protocol)", "class accuracy", "IS", "files"], rows)


@table("seeds")
def seeds_table(doc: Path, path: str) -> str:
    """One evaluation repeated with several sample seeds: a row per seed, then mean ± std, a column per headline
    metric (diffusion.records.HEADLINE)."""
    m = records(path)
    headline = diffusion.records.HEADLINE
    rows = [[r.get("seed", i), *[h.show(r) for h in headline]] for i, r in enumerate(m["seeds"])]
    rows.append(["mean ± std", *[h.show(m) for h in headline]])
    return markdown(["sample seed", *[h.label for h in headline]], rows, "r" * (1 + len(headline)))


def accuracy(m: dict[str, Any]) -> str:
    """The class accuracy as the docs show it: "99.88%", "99.88% ± 0.07%"."""
    return next(h for h in diffusion.records.HEADLINE if h.key == "class_accuracy").show(m)


@table("paper")
def paper_table(doc: Path) -> str:
    """The seed paper's published standard FIDs beside the shipped MNIST models', same protocol."""
    images = PAPER_ITERATIONS * PAPER_BATCH
    best = min(PAPER_TABLES.items(), key=lambda kv: kv[1][0])
    (schedule, T, w), (fid, inception_score) = best
    mean, std = statistics.fmean(PAPER_REPEATS), statistics.stdev(PAPER_REPEATS)
    rows = [[f"seed paper, Table 2's best ({schedule}, T = {T})", f"{images / UNIT_IMAGES:g}", "DDPM, all T steps",
             f"{w:g}", f"{fid:.2f}", "", f"{inception_score:.2f} ({PAPER_IS_NETWORK})"],
            [f"seed paper, Table 1 (the same model, FID computed {len(PAPER_REPEATS)} times)",
             f"{images / UNIT_IMAGES:g}", "DDPM, all T steps", f"{w:g}", f"{mean:.2f} ± {std:.2f}", "", ""]]
    for name, folder in shipped().items():
        m = read_metrics(folder / METRICS)
        if m["data"] != "mnist":
            continue
        for label, r in ((f"`pretrained/{name}`", m), (f"`pretrained/{name}`, another sampler",
                                                        m.get("default_sampler_10k"))):
            if r:
                rows.append([label, f"{units(m):g}", sampler_label(r), f"{m['guidance']:g}",
                             f"{shown(r, 'fid_inception', fixed=2)} ({r['num_seeds']} sample seeds)", accuracy(r),
                             f"{value(r, 'is'):.2f} (our classifier)"])
    return markdown(["model", "training units", "sampler", "ω", "standard FID", "class accuracy", "IS"], rows)


@table("jsonl")
def jsonl_table(doc: Path, path: str) -> str:
    """A JSONL record of 2,000-sample checks: setting, steps, ω, standard and classifier FID, IS, accuracy."""
    rows = []
    for line in (ROOT / path).read_text().splitlines():
        r = json.loads(line)
        setting = r["setting"] + (f" guidance_interval={r['guidance_interval']}" if r.get("guidance_interval") else "")
        rows.append([f"`{setting}`", r["steps"], f"{r['guidance']:g}", f"{r['fid_inception']:.2f}",
                     f"{r['fid']:.2f}", f"{r['is']:.2f}", accuracy(r)])
    return markdown(["sampler", "steps", "ω", "standard FID", "classifier FID", "IS", "class accuracy"], rows,
                    "lrrrrrr")


@table("paper_table")
def paper_table_of_sweep(doc: Path, path: str, number: str) -> str:
    """The seed paper's Table 2 or 3 beside a committed sweep's records (diffusion.report.paper_table_rows)."""
    from diffusion.report import collect, paper_table_rows

    title, header, lines = paper_table_rows(collect(ROOT / path))[int(number)]
    return markdown(header, lines, "lrr" + "r" * (len(header) - 3))


@table("sweep_points")
def sweep_points(doc: Path, path: str) -> str:
    """A committed sweep's training runs: steps, training images and time, images/s, evaluation time, machine."""
    from diffusion.report import points

    rows = points(ROOT / path)
    if not rows:
        raise ValueError(f"{path}: no training run's status.json")
    header = list(rows[0])
    cells = [[f"{v:,}" if isinstance(v, int) else "" if v is None else v for v in r.values()] for r in rows]
    return markdown(header, cells, "llrrrrrl")


@table("setup_times")
def setup_times(doc: Path, path: str) -> str:
    """How long the set-up commands took on a fresh clone, per machine (a JSONL record: command, seconds, machine,
    commit, what the time covers)."""
    from diffusion.report import duration

    rows = []
    for line in (ROOT / path).read_text().splitlines():
        r = json.loads(line)
        rows.append([f"`{r['command']}`", duration(r["seconds"]), r["machine"], f"`{r['commit']}`", r["covers"]])
    return markdown(["command", "time", "machine", "commit", "what it covers"], rows, "lrlll")


def render(text: str, doc: Path) -> str:
    """`text` with every rendered table rebuilt from its records."""

    def rebuild(match: re.Match) -> str:
        kind, *args = match.group(2).split()
        if kind not in TABLES:
            raise ValueError(f"{doc}: no table kind {kind!r} (known: {', '.join(sorted(TABLES))})")
        return match.group(1) + TABLES[kind](doc, *args) + match.group(4)

    return BLOCK.sub(rebuild, text)


def documents() -> list[Path]:
    """The Markdown files that may hold rendered tables."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md")), *sorted(ROOT.glob("pretrained/*/README.md"))]


def stale() -> list[str]:
    """`file: table` for every rendered table that differs from its records."""
    out = []
    for doc in documents():
        text = doc.read_text()
        pairs = zip(BLOCK.finditer(text), BLOCK.finditer(render(text, doc)))
        out += [f"{doc.relative_to(ROOT)}: {old.group(2)}" for old, new in pairs if old.group(0) != new.group(0)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a table differs from its records")
    args = parser.parse_args(argv)
    try:
        if args.check:
            found = stale()
            for line in found:
                print(f"stale: {line} (python -m diffusion.render)", file=sys.stderr)
            return int(bool(found))
        for doc in documents():
            text = doc.read_text()
            if (new := render(text, doc)) != text:
                doc.write_text(new)
                print(f"rendered {doc.relative_to(ROOT)}")
    except (ValueError, KeyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

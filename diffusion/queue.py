"""`python -m diffusion.queue QUEUE.yaml [--budget-s S] [--kinds K,…]`: advance a committed queue of long GPU work
by what fits.

A queue file names training points and the evaluations of each (e.g. the paper's sampler and a fast one); it expands
into pieces, in order: train point P (train.py, resumable), then per evaluation and ω: sample shard k (sample.py
mode=bulk shard=…) and score (sample.py mode=merge evaluate=true, appending one line to `records.jsonl`). Every piece
runs through the real entry points in its own process, writes under the queue's `out` folder and is done when its
files say so, so the next invocation, on a fresh machine holding only the repository, carries on where this one
stopped. A piece still running when the budget ends gets Ctrl-C (training keeps its last.ckpt and continues from it
next time; a shard is made again). `--kinds train,sample` leaves the scoring to a machine that has the Inception
weights (a GPU window cannot carry them in one call: docs/results.md, "A GPU window").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from diffusion.files import file_digest
from diffusion.processes import run_in_group
from diffusion.records import headline_keys, sampler_label, value
from diffusion.runtime import CONF_DIR
from diffusion.sweeps import quoted, read_status

ROOT = CONF_DIR.parent
RECORDS = "records.jsonl"
CLOCK = ("fit_seconds", "fit_images_per_s", "steady_images_per_s")  # a training's own figures, from its status.json
WEIGHTS, DROPPED = "model.safetensors", "model.sha256"  # a point's weights; what is left of them once dropped
GRACE_S = 60  # after Ctrl-C at the budget's end: time to save before the piece is killed
KINDS = ("train", "sample", "score")
EVALUATION_KEYS = ("guidance", "num_samples", "shards")  # each evaluation's required keys; sample/score: overrides


class QueueError(ValueError):
    """A queue file that cannot be run as written."""


@dataclass(frozen=True)
class Piece:
    """One unit of queued work: train a point, or for one of its evaluations at ω: sample one shard, or score."""

    kind: str  # train | sample | score
    point: str
    evaluation: str | None = None
    guidance: float | None = None
    shard: int | None = None

    def __str__(self) -> str:
        at = "" if self.guidance is None else f" {self.evaluation} ω={self.guidance:g}"
        return f"{self.kind} {self.point}{at}" + ("" if self.shard is None else f" shard {self.shard}")


class Queue:
    """A queue file (YAML: `out`, `train` (overrides for every point), `keep_weights`, `points: {name: {train: [...],
    evaluate: {evaluation: {...}}, keep_weights}}`) and its output folder."""

    def __init__(self, path: str | Path) -> None:
        self.spec = OmegaConf.load(path)  # plain YAML: nothing in it can run
        self.out = ROOT / str(self.spec.out)
        for name, point in self.spec.points.items():
            for evaluation, ev in point.get("evaluate", {}).items():
                if not OmegaConf.is_dict(ev) or any(key not in ev for key in EVALUATION_KEYS):
                    raise QueueError(f"{path}: points.{name}.evaluate.{evaluation} must be a mapping with "
                                     f"{', '.join(EVALUATION_KEYS)} (and sample/score overrides); `evaluate` names "
                                     "each evaluation of a point, e.g. paper: {...}, fast: {...}")

    def pieces(self) -> list[Piece]:
        """Every piece in the order they run: a point's training, then per evaluation and ω its shards and score."""
        found = []
        for name, point in self.spec.points.items():
            found.append(Piece("train", name))
            for evaluation, ev in point.get("evaluate", {}).items():
                for w in ev.guidance:
                    found += [Piece("sample", name, evaluation, float(w), k) for k in range(ev.shards)]
                    found.append(Piece("score", name, evaluation, float(w)))
        return found

    def evaluation(self, p: Piece) -> Any:
        return self.spec.points[p.point].evaluate[p.evaluation]

    def run_dir(self, p: Piece) -> Path:
        return self.out / p.point / "run"

    def eval_dir(self, p: Piece) -> Path:
        return self.out / p.point / p.evaluation / f"guidance={p.guidance:g}"

    def shard_dir(self, p: Piece, k: int) -> Path:
        return self.eval_dir(p) / f"shard{k}"

    def shard_range(self, p: Piece, k: int) -> tuple[int, int]:
        """Images [start, stop) of shard k: num_samples split into `shards` near-equal ranges."""
        n, shards = self.evaluation(p).num_samples, self.evaluation(p).shards
        return k * n // shards, (k + 1) * n // shards

    def done(self, p: Piece) -> bool:
        """Whether a piece's outputs are complete (read from the files, not from a state of the queue's own)."""
        from diffusion.modes import read_npz

        if p.kind == "train":
            status, run = read_status(self.run_dir(p)), self.run_dir(p)
            return (status is not None and status["status"] == "ok"
                    and ((run / WEIGHTS).is_file() or (run / DROPPED).is_file()))
        if p.kind == "score":
            return self.record(p) is not None  # written by finish(), after metrics.json
        npz = self.shard_dir(p, p.shard) / "samples.npz"
        return self.done(Piece("score", p.point, p.evaluation, p.guidance)) or (
            npz.is_file() and read_npz(npz)["indices"].tolist() == list(range(*self.shard_range(p, p.shard))))

    def train_overrides(self, point: str) -> list[str]:
        """A point's train.py overrides: the queue's common `train` list, then the point's own."""
        return [*self.spec.get("train", []), *self.spec.points[point].train]

    def setting(self, point: str) -> dict[str, Any]:
        """What a point trains, read from its composed training config (no run needed): data, schedule, T, compute."""
        from hydra import compose, initialize_config_dir

        train = self.train_overrides(point)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=train)
        experiment = next((o.split("=", 1)[1] for o in train if o.startswith("experiment=")), None)
        return {"data": cfg.data.name, "schedule": cfg.schedule.kind, "timesteps": int(cfg.timesteps),
                "steps": int(cfg.trainer.max_steps), "batch_size": int(cfg.data.batch_size), "experiment": experiment}

    def progress(self, point: str, evaluation: str, guidance: float) -> str:
        """"done", or what one evaluation of a point at ω still waits for."""
        if not self.done(Piece("train", point)):
            return "queued: training"
        if self.done(Piece("score", point, evaluation, guidance)):
            return "done"
        shards = self.spec.points[point].evaluate[evaluation].shards
        sampled = sum(self.done(Piece("sample", point, evaluation, guidance, k)) for k in range(shards))
        return "queued: scoring" if sampled == shards else f"queued: {sampled} of {shards} shards sampled"

    def ready(self, p: Piece) -> bool:
        """Whether what a piece reads is there: a shard needs its point trained, a score all its shards."""
        if p.kind == "sample":
            return self.done(Piece("train", p.point)) and (self.run_dir(p) / WEIGHTS).is_file()
        if p.kind == "score":
            return all(self.done(Piece("sample", p.point, p.evaluation, p.guidance, k))
                       for k in range(self.evaluation(p).shards))
        return True

    def command(self, p: Piece) -> list[str]:
        """The entry-point command line of a piece."""
        if p.kind == "train":
            return ["train.py", *self.train_overrides(p.point), f"hydra.run.dir={quoted(self.run_dir(p))}",
                    "resume=true", "eval.num_samples=0"]
        ev = self.evaluation(p)
        common = [f"ckpt_path={quoted(self.run_dir(p) / WEIGHTS)}", f"num_samples={ev.num_samples}",
                  f"guidance={p.guidance}", *ev.get("sample", [])]
        if p.kind == "sample":
            start, stop = self.shard_range(p, p.shard)
            return ["sample.py", *common, "mode=bulk", f"shard=[{start},{stop}]",
                    f"hydra.run.dir={quoted(self.shard_dir(p, p.shard))}"]
        shards = ",".join(quoted(self.shard_dir(p, k)) for k in range(ev.shards))
        return ["sample.py", *common, *ev.get("score", []), "mode=merge", f"shards=[{shards}]", "evaluate=true",
                f"hydra.run.dir={quoted(self.eval_dir(p))}"]

    def finish(self, p: Piece) -> None:
        """After a piece: a trained point keeps its weights, not its training state; a score becomes a record."""
        if p.kind == "train":
            shutil.rmtree(self.run_dir(p) / "checkpoints", ignore_errors=True)
        if p.kind == "score":
            m = json.loads((self.eval_dir(p) / "metrics.json").read_text())
            fit = (read_status(self.run_dir(p)) or {}).get("metrics", {})  # the last training piece's clock
            record = {"point": p.point, "evaluation": p.evaluation, "guidance": p.guidance,
                      "train": self.train_overrides(p.point),
                      "model_sha256": file_digest(self.run_dir(p) / WEIGHTS),
                      "step": m.get("step"), "num_samples": m.get("num_samples"), "sampler": sampler_label(m),
                      **{key: value(m, key) for key in headline_keys()},
                      **{key: fit[key] for key in CLOCK if key in fit}}
            with open(self.out / RECORDS, "a") as f:
                f.write(json.dumps(record) + "\n")
            for k in range(self.evaluation(p).shards):
                shutil.rmtree(self.shard_dir(p, k), ignore_errors=True)
            self.drop_weights(p.point)

    def drop_weights(self, point: str) -> None:
        """A point with `keep_weights: false` (its own, else the queue's; default true) keeps only its weights' SHA-256
        once every piece of it is done, so the repository a GPU window carries stays small (docs/results.md); the
        records name the weights they came from."""
        run = self.run_dir(Piece("train", point))
        keep = self.spec.points[point].get("keep_weights", self.spec.get("keep_weights", True))
        if keep or not (run / WEIGHTS).is_file():
            return
        if all(self.done(q) for q in self.pieces() if q.point == point):
            (run / DROPPED).write_text(f"{file_digest(run / WEIGHTS)}  {WEIGHTS}\n")
            (run / WEIGHTS).unlink()

    def records(self) -> list[dict[str, Any]]:
        path = self.out / RECORDS
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def record(self, p: Piece) -> dict[str, Any] | None:
        key = (p.point, p.evaluation, p.guidance)
        return next((r for r in self.records() if (r["point"], r.get("evaluation"), r["guidance"]) == key), None)


def run_piece(command: list[str], deadline: float) -> int | None:
    """Run an entry point until it ends (its exit code) or the deadline (Ctrl-C, then kill after GRACE_S: None)."""
    return run_in_group([sys.executable, *command], GRACE_S, timeout=max(1.0, deadline - time.monotonic()), cwd=ROOT)


def report(queue: Queue) -> list[Piece]:
    """Print what is done and what is left; returns the pieces left."""
    left = [p for p in queue.pieces() if not queue.done(p)]
    total = len(queue.pieces())
    where = queue.out.relative_to(ROOT) if queue.out.is_relative_to(ROOT) else queue.out
    print(f"queue {where}: {total - len(left)} of {total} pieces done"
          + (f"; next: {', '.join(map(str, left[:4]))}{' …' if len(left) > 4 else ''}" if left else "; finished"))
    return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queue", help="the queue file, e.g. results/paper_queue.yaml")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting pieces after this many seconds")
    parser.add_argument("--min-piece-s", type=float, default=30.0,
                        help="do not start a piece with less than this left of the budget")
    parser.add_argument("--max-pieces", type=int, default=None, help="run at most this many pieces")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="run only pieces of these kinds, e.g. train,sample (scores then wait for a machine "
                             "with the Inception weights) or score")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or any(k not in KINDS for k in kinds):
        print(f"error: --kinds takes a comma-separated list of {', '.join(KINDS)}; got {args.kinds!r}", file=sys.stderr)
        return 2
    if not Path(args.queue).is_file():
        print(f"error: no queue file {args.queue}", file=sys.stderr)
        return 1
    try:
        queue = Queue(args.queue)
    except QueueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.budget_s
    ran = 0
    for piece in report(queue):
        if args.max_pieces is not None and ran >= args.max_pieces:
            break
        if piece.kind not in kinds or not queue.ready(piece):  # another machine's kind, or waiting for one
            continue
        if deadline - time.monotonic() < args.min_piece_s:
            print(f"budget: {max(0.0, deadline - time.monotonic()):.0f} s left, less than --min-piece-s; stopping")
            break
        if queue.done(piece):  # an earlier piece's run may have completed it (e.g. a score removes its shards)
            continue
        print(f"piece: {piece}: {' '.join(queue.command(piece))}", flush=True)
        began = time.monotonic()
        code = run_piece(queue.command(piece), deadline)
        ran += 1
        produced = (queue.eval_dir(piece) / "metrics.json").is_file() if piece.kind == "score" else queue.done(piece)
        if code is None or not produced:
            print(f"piece: {piece} not finished ({'budget ended' if code is None else f'exit code {code}'}, "
                  f"{time.monotonic() - began:.0f} s); it carries on next time")
            state = queue.run_dir(piece) / "checkpoints" / "last.ckpt"
            if piece.kind == "train" and state.is_file():
                print(f"piece: {piece} keeps its training state in {state} ({state.stat().st_size / 2**20:.0f} MiB): "
                      "a fresh machine carries on from it only if it travels with the repository")
            if code is not None:
                return 1
            break
        queue.finish(piece)
        print(f"piece: {piece} done in {time.monotonic() - began:.0f} s", flush=True)
    report(queue)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m diffusion.queue QUEUE.yaml [--budget-s S]`: advance a committed queue of long GPU work by what fits.

A queue file names training points and how each is evaluated; it expands into pieces, in order: train point P
(train.py, resumable), sample shard k of P at ω (sample.py mode=bulk shard=…), score P at ω (sample.py mode=merge
evaluate=true, appending one line to `records.jsonl`). Every piece runs through the real entry points in its own
process, writes under the queue's `out` folder and is done when its files say so, so the next invocation, on a
fresh machine holding only the repository, carries on where this one stopped. A piece still running when the budget
ends gets Ctrl-C (training keeps its last.ckpt and continues from it next time; a shard is made again).
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

from diffusion.processes import run_in_group
from diffusion.records import headline_keys, sampler_label, value
from diffusion.runtime import CONF_DIR
from diffusion.sweeps import quoted

ROOT = CONF_DIR.parent
RECORDS = "records.jsonl"
GRACE_S = 60  # after Ctrl-C at the budget's end: time to save before the piece is killed


@dataclass(frozen=True)
class Piece:
    """One unit of queued work: train a point, sample one shard of it at ω, or score it at ω."""

    kind: str  # train | sample | score
    point: str
    guidance: float | None = None
    shard: int | None = None

    def __str__(self) -> str:
        at = "" if self.guidance is None else f" ω={self.guidance:g}"
        return f"{self.kind} {self.point}{at}" + ("" if self.shard is None else f" shard {self.shard}")


class Queue:
    """A queue file (YAML: `out`, `points: {name: {train: [...], evaluate: {...}}}`) and its output folder."""

    def __init__(self, path: str | Path) -> None:
        self.spec = OmegaConf.load(path)  # plain YAML: nothing in it can run
        self.out = ROOT / str(self.spec.out)

    def pieces(self) -> list[Piece]:
        """Every piece in the order they run: a point's training, then per ω its shards and its score."""
        found = []
        for name, point in self.spec.points.items():
            found.append(Piece("train", name))
            for w in point.evaluate.guidance:
                found += [Piece("sample", name, float(w), k) for k in range(point.evaluate.shards)]
                found.append(Piece("score", name, float(w)))
        return found

    def run_dir(self, p: Piece) -> Path:
        return self.out / p.point / "run"

    def eval_dir(self, p: Piece) -> Path:
        return self.out / p.point / f"guidance={p.guidance:g}"

    def shard_dir(self, p: Piece, k: int) -> Path:
        return self.eval_dir(p) / f"shard{k}"

    def shard_range(self, p: Piece, k: int) -> tuple[int, int]:
        """Images [start, stop) of shard k: num_samples split into `shards` near-equal ranges."""
        n, shards = self.spec.points[p.point].evaluate.num_samples, self.spec.points[p.point].evaluate.shards
        return k * n // shards, (k + 1) * n // shards

    def done(self, p: Piece) -> bool:
        """Whether a piece's outputs are complete (read from the files, not from a state of the queue's own)."""
        from diffusion.modes import read_npz
        from diffusion.sweeps import read_status

        if p.kind == "train":
            status = read_status(self.run_dir(p))
            return status is not None and status["status"] == "ok" and (self.run_dir(p) / "model.safetensors").is_file()
        if p.kind == "score":
            return self.record(p) is not None  # written by finish(), after metrics.json
        npz = self.shard_dir(p, p.shard) / "samples.npz"
        return self.done(Piece("score", p.point, p.guidance)) or (
            npz.is_file() and read_npz(npz)["indices"].tolist() == list(range(*self.shard_range(p, p.shard))))

    def command(self, p: Piece) -> list[str]:
        """The entry-point command line of a piece."""
        point = self.spec.points[p.point]
        if p.kind == "train":
            return ["train.py", *point.train, f"hydra.run.dir={quoted(self.run_dir(p))}", "resume=true", "eval.num_samples=0"]
        ev = point.evaluate
        common = [f"ckpt_path={quoted(self.run_dir(p) / 'model.safetensors')}", f"num_samples={ev.num_samples}",
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
            record = {"point": p.point, "guidance": p.guidance, "train": list(self.spec.points[p.point].train),
                      "step": m.get("step"), "num_samples": m.get("num_samples"), "sampler": sampler_label(m),
                      **{key: value(m, key) for key in headline_keys()}}
            with open(self.out / RECORDS, "a") as f:
                f.write(json.dumps(record) + "\n")
            for k in range(self.spec.points[p.point].evaluate.shards):
                shutil.rmtree(self.shard_dir(p, k), ignore_errors=True)

    def records(self) -> list[dict[str, Any]]:
        path = self.out / RECORDS
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def record(self, p: Piece) -> dict[str, Any] | None:
        return next((r for r in self.records() if (r["point"], r["guidance"]) == (p.point, p.guidance)), None)


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
    args = parser.parse_args(argv)
    if not Path(args.queue).is_file():
        print(f"error: no queue file {args.queue}", file=sys.stderr)
        return 1
    queue, start = Queue(args.queue), time.monotonic()
    deadline = start + args.budget_s
    ran = 0
    for piece in report(queue):
        if args.max_pieces is not None and ran >= args.max_pieces:
            break
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
            if code is not None:
                return 1
            break
        queue.finish(piece)
        print(f"piece: {piece} done in {time.monotonic() - began:.0f} s", flush=True)
    report(queue)
    return 0


if __name__ == "__main__":
    sys.exit(main())

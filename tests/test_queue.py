"""The GPU queue (diffusion.queue): a tiny queue advanced over several invocations, some limited to some kinds of
piece (a GPU window without the Inception weights, then a CPU for the scores), ends with the records of one run, and
the docs' Tables 2/3 render from those records."""

import json
import re
import subprocess
import sys

import pytest

from conftest import DATA, ROOT



SAMPLE = ["sampler.steps=3", "batch_size=5"]
POINT = {"train": ["debug=fast", "trainer.max_steps=10", "callbacks.progress=null"], "keep_weights": False,
         "evaluate": {"paper": {"guidance": [0.5], "num_samples": 12, "shards": 2, "sample": SAMPLE,
                                "score": ["eval.batch_size=12"]},
                      "fast": {"guidance": [0.5], "num_samples": 12, "shards": 1,
                               "sample": ["sampler=ddim", "sampler.steps=2", "batch_size=6"]}}}


def advance(queue, *args, code=0):
    env = {"DIFFUSION_DATA": str(DATA), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "diffusion.queue", str(queue), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == code, (r.stdout + r.stderr)[-3000:]
    return r.stdout + r.stderr


def write_queue(path, out, points):
    path.write_text(json.dumps({"out": str(out), "points": points}))
    return path


@pytest.mark.slow  # end-to-end through the real entry points
def test_a_queue_stopped_between_pieces_and_split_by_kind_carries_on_to_the_records_of_an_uninterrupted_run(tmp_path):
    queues = {name: write_queue(tmp_path / f"{name}.yaml", tmp_path / name, {"tiny": POINT})
              for name in ("whole", "pieces")}
    assert "6 of 6 pieces done; finished" in advance(queues["whole"])

    out = advance(queues["pieces"], "--budget-s", "0")  # no time: nothing starts, what is left is printed
    assert "0 of 6 pieces done; next: train tiny, sample tiny paper ω=0.5 shard 0" in out and "stopping" in out
    assert "1 of 6 pieces done" in advance(queues["pieces"], "--kinds", "train,sample", "--max-pieces", "1")
    assert not (tmp_path / "pieces" / "tiny" / "run" / "checkpoints").exists()  # the weights only are kept
    out = advance(queues["pieces"], "--kinds", "train,sample")  # a GPU window without Inception: no scores
    assert "4 of 6 pieces done; next: score tiny paper ω=0.5, score tiny fast ω=0.5" in out
    assert not (tmp_path / "pieces" / "records.jsonl").exists()
    assert "5 of 6 pieces done" in advance(queues["pieces"], "--kinds", "score", "--max-pieces", "1")
    assert "6 of 6 pieces done; finished" in advance(queues["pieces"], "--kinds", "score")

    # not compared: the training pieces' wall time (measured), and the weights file's hash (safetensors writes its
    # metadata keys in an order that differs from process to process; the tensors are the same)
    clock = ("fit_seconds", "fit_images_per_s", "steady_images_per_s", "model_sha256")
    records = {name: [{k: v for k, v in json.loads(line).items() if k not in clock}
                      for line in (tmp_path / name / "records.jsonl").read_text().splitlines()] for name in queues}
    assert len(records["whole"]) == 2 and records["pieces"] == records["whole"]
    paper, fast = records["whole"]
    assert (paper["point"], paper["evaluation"], fast["evaluation"]) == ("tiny", "paper", "fast")
    assert paper["guidance"] == 0.5 and paper["num_samples"] == 12 and paper["step"] == 10
    assert paper["fid"] is not None and paper["fid"] != fast["fid"]  # two samplers, two sets of images
    assert not list((tmp_path / "pieces").glob("**/shard*"))  # merged and scored: the shards are gone
    run = tmp_path / "pieces" / "tiny" / "run"  # keep_weights: false: every piece done, the weights' hash is left
    assert not (run / "model.safetensors").exists()
    named = {json.loads(line)["model_sha256"] for line in (tmp_path / "pieces" / "records.jsonl").open()}
    assert named == {(run / "model.sha256").read_text().split()[0]}
    assert "6 of 6 pieces done; finished" in advance(queues["pieces"])  # and the point still counts as trained

    # The docs' table kind over this queue: linear / T = 1000 at ω = 0.5 is a row of the paper's Table 3
    from diffusion.render import paper_queue_table

    table = paper_queue_table(ROOT / "docs" / "results.md", str(queues["pieces"]), "3")
    row = next(line for line in table.splitlines() if "| 0.5 |" in line)
    assert "| linear | 1000 | 0.5 | 24.67 / 9.14 |" in row and "queued" not in row  # no Inception here: FID "–"
    assert row.endswith(f"| – / {paper['is']:.2f} | – / {fast['is']:.2f} |")


@pytest.mark.parametrize("evaluate, args, expected", [
    ({"guidance": [0.5], "num_samples": 12, "shards": 1}, [], "points.tiny.evaluate.guidance must be a mapping with"),
    ({"paper": {"guidance": [0.5], "shards": 1}}, [], "points.tiny.evaluate.paper must be a mapping with guidance, "
                                                      "num_samples, shards"),
    ({"paper": POINT["evaluate"]["paper"]}, ["--kinds", "train,eval"], "--kinds takes a comma-separated list of "
                                                                       "train, sample, score; got 'train,eval'"),
])
def test_a_queue_file_or_kinds_that_cannot_run_get_one_line(tmp_path, evaluate, args, expected):
    queue = write_queue(tmp_path / "q.yaml", tmp_path / "out", {"tiny": {**POINT, "evaluate": evaluate}})
    lines = advance(queue, *args, code=2 if args else 1).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not (tmp_path / "out").exists()


def test_each_setting_of_the_paper_belongs_to_the_tables_that_print_it():
    from diffusion.published import PAPER_TABLES, paper_tables_of

    where = {k: paper_tables_of(*k) for k in PAPER_TABLES}
    assert where[("linear", 1000, 0.2)] == [2, 3]  # Table 3's ω = 0.2 row is Table 2's best
    assert [k for k, t in where.items() if t == [2]] == [("linear", 4000, 0.2), ("cosine", 1000, 0.2),
                                                         ("cosine", 4000, 0.2)]
    assert [k for k, t in where.items() if t == [3]] == [("linear", 1000, 0.0), ("linear", 1000, 0.5)]
    assert paper_tables_of("linear", 1000, 0.3) == []


@pytest.mark.slow
def test_the_gpu_window_script_advances_a_queue_and_packs_its_folder_and_a_cut_training_state_to_come_back(tmp_path):
    long = {"train": [*POINT["train"], "trainer.max_steps=100000"]}  # cut by the budget: its state must come back
    queue = write_queue(tmp_path / "q.yaml", tmp_path / "results", {"tiny": {"train": POINT["train"]}, "long": long})
    out, back = tmp_path / "OUT", tmp_path / "back"
    out.mkdir(), back.mkdir()
    env = {"DIFFUSION_DATA": str(DATA), "PATH": "/usr/bin:/bin", "OUT": str(out), "BUDGET_S": "45",
           "PYTHON": sys.executable}
    r = subprocess.run(["bash", "scripts/gpu_window.sh", str(queue)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    log = (out / "queue.log").read_text()
    assert "piece: train long not finished (budget ended" in log and "1 of 2 pieces done; next: train long" in log
    assert re.search(r"stopped at step \d+ after \d+ s: [\d,]+ training images/s, [\d,]+ after the warm-up", log)
    for archive in ("results", "state"):
        parts = sorted(out.glob(f"{archive}.tgz.*"))
        assert [p.name for p in parts] == [f"{archive}.tgz.00"] and parts[0].stat().st_size < 15 * 2**20
        subprocess.run(f"cat {parts[0]} | tar xzf - -C {back}", shell=True, check=True)
    results, unpacked = tmp_path / "results", back / str(tmp_path / "results").lstrip("/")
    files = sorted(p.relative_to(results) for p in results.rglob("*")
                   if p.is_file() and (p.parent.name != "checkpoints" or p.name == "last.ckpt"))
    assert sorted(p.relative_to(unpacked) for p in unpacked.rglob("*") if p.is_file()) == files
    assert (results / "long/run/checkpoints/interrupted.ckpt").is_file()  # left behind: only last.ckpt travels
    for f in ("tiny/run/model.safetensors", "long/run/checkpoints/last.ckpt"):
        assert (unpacked / f).read_bytes() == (results / f).read_bytes()


def test_the_queues_common_training_overrides_come_before_each_points_own(tmp_path):
    from diffusion.queue import Piece, Queue

    path = tmp_path / "q.yaml"
    path.write_text(json.dumps({"out": str(tmp_path / "out"), "train": ["trainer=gpu", "compile=reduce-overhead"],
                                "points": {"a": {"train": ["schedule=cosine", "timesteps=4000"]}}}))
    queue = Queue(path)
    assert queue.command(Piece("train", "a"))[:5] == ["train.py", "trainer=gpu", "compile=reduce-overhead",
                                                      "schedule=cosine", "timesteps=4000"]
    assert queue.setting("a") | {"steps": None} == {"data": "mnist", "schedule": "cosine", "timesteps": 4000,
                                                    "steps": None, "batch_size": 128, "experiment": None}

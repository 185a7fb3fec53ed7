"""The GPU queue (diffusion.queue): a tiny queue advanced over several invocations ends with the records of one."""

import json
import subprocess
import sys

import pytest

from conftest import DATA, ROOT

pytestmark = pytest.mark.slow  # end-to-end through the real entry points

POINT = {"train": ["debug=fast", "trainer.max_steps=10", "callbacks.progress=null"],
         "evaluate": {"guidance": [0.5], "num_samples": 12, "shards": 2,
                      "sample": ["sampler.steps=3", "batch_size=5"], "score": ["eval.batch_size=12"]}}


def advance(queue, *args):
    env = {"DIFFUSION_DATA": str(DATA), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "diffusion.queue", str(queue), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r.stdout


def test_a_queue_stopped_between_pieces_carries_on_to_the_records_of_an_uninterrupted_run(tmp_path):
    queues = {}
    for name in ("whole", "pieces"):
        queues[name] = tmp_path / f"{name}.yaml"
        queues[name].write_text(json.dumps({"out": str(tmp_path / name), "points": {"tiny": POINT}}))
    assert "queue" in advance(queues["whole"]) and "4 of 4 pieces done; finished" in advance(queues["whole"])

    out = advance(queues["pieces"], "--budget-s", "0")  # no time: nothing starts, what is left is printed
    assert "0 of 4 pieces done; next: train tiny, sample tiny ω=0.5 shard 0" in out and "stopping" in out
    assert "1 of 4 pieces done" in advance(queues["pieces"], "--max-pieces", "1")
    assert "3 of 4 pieces done" in advance(queues["pieces"], "--max-pieces", "2")
    assert not (tmp_path / "pieces" / "tiny" / "run" / "checkpoints").exists()  # the weights only are kept
    assert "4 of 4 pieces done; finished" in advance(queues["pieces"])

    records = {name: (tmp_path / name / "records.jsonl").read_text().splitlines() for name in queues}
    assert len(records["whole"]) == 1 and records["pieces"] == records["whole"]
    record = json.loads(records["whole"][0])
    assert record["point"] == "tiny" and record["guidance"] == 0.5 and record["num_samples"] == 12
    assert record["step"] == 10 and record["fid"] is not None
    assert not list((tmp_path / "pieces").glob("**/shard*"))  # merged and scored: the shards are gone

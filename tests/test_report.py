"""The report's tables from records (diffusion.report): the paper's Tables 2 and 3, and the sweep's training runs."""

import json
import os

from diffusion.report import collect, paper_table_rows, points
from diffusion.runs import write_status


def record(point, w, seed, fid, is_, fid_inception=None, schedule="linear", T=1000):
    m = {"data": "mnist", "schedule": schedule, "timesteps": T, "guidance": w, "seed": seed, "step": 5000,
         "num_samples": 2000, "evaluation": "fast", "sampler": "dpm_solver", "sampler_steps": 20,
         "sampler_options": {"order": 2}, "fid": fid, "is": is_, "class_accuracy": 0.99}
    if fid_inception is not None:
        m["fid_inception"] = fid_inception
    folder = point / "eval" / "fast" / f"guidance={w}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(m))


def test_the_paper_tables_show_both_fids_where_measured_and_training_seeds_as_mean_and_std(tmp_path):
    for seed, (inc, fid) in enumerate([(20.0, 3.0), (22.0, 5.0)]):  # two training seeds of linear, T = 1000
        point = tmp_path / f"{seed}-schedule=linear,timesteps=1000"
        record(point, 0.2, seed, fid, 9.5, fid_inception=inc)
        record(point, 0.5, seed, fid + 1, 9.6)  # no Inception FID measured there
    record(tmp_path / "2-schedule=cosine,timesteps=1000", 0.2, 0, 4.0, 9.4, fid_inception=30.0, schedule="cosine")
    tables = paper_table_rows(collect(tmp_path))
    title, header, lines = tables[2]
    assert header[-1] == "ours, fast: standard FID / classifier FID / classifier IS"
    rows = {(line[0], line[1], line[2]): line for line in lines}
    assert rows["linear", "1000", "0.2"][3:] == ["16.19 / 9.56", "21 ± 1.4 / 4 ± 1.4 / 9.5 ± 0 (2 runs)"]
    assert rows["cosine", "1000", "0.2"][4] == "30 / 4 / 9.4"
    assert rows["linear", "4000", "0.2"][4] == "not run"
    rows3 = {line[2]: line[4] for line in tables[3][2]}
    assert rows3 == {"0.2": "21 ± 1.4 / 4 ± 1.4 / 9.5 ± 0 (2 runs)", "0": "not run",
                     "0.5": "– / 5 ± 1.4 / 9.6 ± 0 (2 runs)"}


def test_without_any_inception_fid_the_tables_show_the_classifier_fid_labelled_as_such(tmp_path):
    record(tmp_path / "0-a", 0.2, 0, 3.25, 9.5)
    title, header, lines = paper_table_rows(collect(tmp_path))[2]
    assert header[-1] == "ours, fast: classifier FID / classifier IS"
    assert lines[0][4] == "3.25 / 9.5"


def test_the_points_table_reads_each_training_runs_status(tmp_path):
    point = tmp_path / "0-schedule=linear,timesteps=1000"
    write_status(point, "ok", metrics={"global_step": 5000, "fit_images": 160000, "fit_seconds": 1721.4,
                                       "fit_images_per_s": 92.9, "eval_seconds": 3725.0})
    write_status(tmp_path / "eval-only", "ok", metrics={"eval/fid": 3.0})  # a sample.py evaluation: not a point
    (row,) = points(tmp_path)
    assert row["point"] == point.name and row["iterations"] == 5000 and row["training images"] == 160000
    assert row["training steps' time"] == "28 min 41 s" and row["evaluation time"] == "1 h 02 min"
    assert row["machine"].startswith(f"{len(os.sched_getaffinity(0))}-core ")  # the machine that wrote the record

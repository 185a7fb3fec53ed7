"""The benchmarks run as a user types them (tiny model, few images): their tables stay correct, not their speed."""

import os
import subprocess
import sys

from conftest import DATA, ROOT, run_main

from diffusion.checkpoint import load_module
from diffusion.samplers import log_snr_timesteps


def test_bench_sample_counts_network_evaluations_per_setting(tiny_ckpt):
    r = run_main("benchmarks.sample_speed", str(tiny_ckpt), "--n", "10", "--batch", "10", "--only",
                 "dpm_solver order=3", "dpm_solver order=2 guidance_interval", "dpm_solver order=3 guidance")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in r.stdout.splitlines() if line.startswith("| dpm_solver")]
    assert [(c[0].strip(), int(c[1])) for c in rows] == [("dpm_solver order=3", n) for n in (10, 15, 20)] + [
        ("dpm_solver order=2 guidance_interval=[0.28, 5.42]", n) for n in (15, 20)] + [
        ("dpm_solver order=3 guidance_interval=[0.28, 5.42]", 10)]
    schedule = load_module(tiny_ckpt).schedule
    for name, steps, _, nfe, rate, _, fid, _, acc in rows:
        visited, nfe = len(log_snr_timesteps(schedule, int(steps))), float(nfe)  # T=100: repeats collapse
        if "interval" in name:
            assert visited < nfe < 2 * visited  # the ∅ pass only inside the interval
        else:
            assert nfe == 2 * visited  # ω ≠ 0: conditional and ∅ halves at every step
        assert float(rate) > 0 and float(fid) >= 0 and acc.strip().endswith("%")


def test_bench_sample_sweeps_steps_and_plots_quality_against_them(tiny_ckpt, tmp_path):
    plot = tmp_path / "steps.png"
    r = run_main("benchmarks.sample_speed", str(tiny_ckpt), "--n", "10", "--batch", "10", "--only", "ddim",
                 "dpm_solver order=3", "--steps", "2", "4", "--guidance", "0", "1.5", "--plot", str(plot))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [[c.strip() for c in line.split("|")[1:5]] for line in r.stdout.splitlines() if line.startswith("| d")]
    assert [row[:3] for row in rows] == [[name, steps, w] for name in ("ddim", "dpm_solver order=3")
                                         for steps in ("2", "4") for w in ("0", "1.5")]
    for _, steps, w, nfe in rows:  # ω = 0: the conditional pass alone; ω ≠ 0: and the ∅ pass at every step
        assert float(nfe) == int(steps) * (1 if w == "0" else 2)
    assert plot.is_file() and str(plot) in r.stdout


def test_bench_entry_compares_train_py_variants_side_by_side():
    r = subprocess.run([sys.executable, "-m", "benchmarks.entry_speed", "--steps", "30", "debug=fast",
                        "--variant", "tiny", "--variant", "tiny, compiled", "compile=false"], cwd=ROOT, text=True,
                       capture_output=True, timeout=600, env={**os.environ, "DIFFUSION_DATA": str(DATA)})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in r.stdout.splitlines() if line.startswith("| tiny")]
    assert [row[0] for row in rows] == ["tiny", "tiny, compiled"]
    (_, eager, _, _, none), (_, same, whole, seconds, ratio) = rows
    assert none == "" and float(ratio.rstrip("×")) == round(float(same) / float(eager), 2)
    assert float(whole) * float(seconds) > 30 * 32 * 0.98  # the whole fit: 30 steps of 32 images

"""The seed paper's published figures (seed 003, the NTNU paper): what the report and the docs' tables compare with.

All MNIST, 100k iterations at batch 32 (3.2M training images), Inception FID of 10,000 samples against the 10,000
test images (pytorch-fid) and an IS from the paper's own small MNIST CNN (its section 3.5), not from Inception-v3.
"""

from __future__ import annotations

PAPER_ITERATIONS, PAPER_BATCH = 100_000, 32
# Which network the paper's IS comes from: comparable neither to an Inception IS nor to our classifier's IS
PAPER_IS_NETWORK = "the paper's own MNIST CNN"
# (schedule, T, ω) -> (FID, IS): Table 2 (schedule × T at ω = 0.2) and Table 3 (ω at linear, T = 1000)
PAPER_TABLES: dict[tuple[str, int, float], tuple[float, float]] = {
    ("linear", 1000, 0.2): (16.19, 9.56),
    ("linear", 4000, 0.2): (20.91, 8.68),
    ("cosine", 1000, 0.2): (26.82, 9.00),
    ("cosine", 4000, 0.2): (21.70, 8.73),
    ("linear", 1000, 0.0): (21.12, 9.13),
    ("linear", 1000, 0.5): (24.67, 9.14),
}
TABLE2_GUIDANCE = 0.2  # Table 2 compares schedule × T at this ω
TABLE3_SETTING = ("linear", 1000)  # Table 3 varies ω for this schedule and T
TABLE_TITLES = {2: f"schedule × T at ω = {TABLE2_GUIDANCE}",
                3: f"ω at {TABLE3_SETTING[0]}, T = {TABLE3_SETTING[1]}"}  # (MNIST, 10,000 samples, 100k iterations)


def paper_tables_of(schedule: str, timesteps: int, guidance: float) -> list[int]:
    """Which of the paper's Tables (2, 3) report a setting: [2], [3], [2, 3] (linear / 1000 / 0.2) or []."""
    if (schedule, int(timesteps), float(guidance)) not in PAPER_TABLES:
        return []
    return [n for n, holds in ((2, guidance == TABLE2_GUIDANCE), (3, (schedule, timesteps) == TABLE3_SETTING)) if holds]


# Table 1: the linear / 1000 / 0.2 model's FID computed 5 times; the paper gives 16.04 ± 0.11 for them
PAPER_REPEATS = (16.19, 16.05, 15.97, 16.09, 15.92)


def paper_scores(data: str | None, schedule: str | None, timesteps: int | None,
                 guidance: float | None) -> tuple[float, float] | None:
    """The paper's (FID, IS) for a run's setting, or None where it reports none (it reports MNIST only)."""
    if data != "mnist" or guidance is None:
        return None
    return PAPER_TABLES.get((str(schedule), int(timesteps or 0), float(guidance)))

"""One switch for every size in the book: ``FQL_SCALE=ci`` (2 CPU cores, minutes) or ``paper`` (a GPU, the paper's sizes).

Chapters read sizes from ``current()`` instead of hard-coding them, so the same notebook teaches on a laptop and
reproduces on a GPU.
"""
from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class Scale:
    name: str
    hidden_dims: tuple[int, ...]  # every MLP: flow field, one-step policy, each critic head
    batch_size: int
    offline_steps: int  # gradient steps on a benchmark task
    toy_steps: int  # gradient steps on the book's toy tasks
    eval_episodes: int
    seeds: int


SCALES = {
    "ci": Scale("ci", hidden_dims=(64, 64), batch_size=256, offline_steps=5_000, toy_steps=2_000, eval_episodes=10,
                seeds=2),
    # A reproduction on a CPU budget: about an hour of a 2-core CPU per seed on one OGBench task. Half the paper's
    # width keeps its depth and gives 3.3x the updates of 4x512 in the same time (41.5 vs 12.7 updates/s per seed, 2
    # seeds vmapped, on a 2-core AVX-512 EPYC: results/throughput.csv), so 250K of the paper's 1M steps fit.
    "cpu-hour": Scale("cpu-hour", hidden_dims=(256, 256, 256, 256), batch_size=256, offline_steps=250_000,
                      toy_steps=20_000, eval_episodes=50, seeds=2),
    "paper": Scale("paper", hidden_dims=(512, 512, 512, 512), batch_size=256, offline_steps=1_000_000,
                   toy_steps=20_000, eval_episodes=50, seeds=8),
}


def get(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown scale {name!r}: expected one of {sorted(SCALES)} (e.g. FQL_SCALE=ci or FQL_SCALE=paper)")


def current() -> Scale:
    """The scale named by the ``FQL_SCALE`` environment variable; ``ci`` when unset."""
    return get(os.environ.get("FQL_SCALE", "ci"))

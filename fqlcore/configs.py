"""The paper's per-task hyperparameters and reported numbers, read from the CSVs shipped in ``fqlcore/reference/``.

Only alpha, the discount, ``q_agg`` and the step counts change from task to task; everything else is FQL's default.
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import os

from fqlcore.agents import fql

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "reference")
MODES = ("offline", "offline_to_online")


@functools.cache
def _read(filename: str) -> tuple:
    with open(os.path.join(REFERENCE_DIR, filename), newline="") as f:
        return tuple(csv.DictReader(f))


def _unknown(name: str, known) -> ValueError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else f" Known: {', '.join(sorted(known)[:10])}, ..."
    return ValueError(f"no paper hyperparameters for {name!r}.{hint}")


def paper_hyperparameters(task: str, mode: str = "offline") -> dict:
    """The public code's exact flags for ``task`` as a dict (alpha, discount, q_agg, offline_steps, online_steps, ...)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {MODES}")
    rows = {r["dataset"]: r for r in _read("fql_paper_hyperparameters.csv") if r["mode"] == mode}
    if task not in rows:
        raise _unknown(task, rows)
    row = rows[task]
    return {"alpha": float(row["alpha"]), "discount": float(row["discount"]), "q_agg": row["q_agg"],
            "offline_steps": int(row["offline_steps"]), "online_steps": int(row["online_steps"]),
            "encoder": row["encoder"] or None, "p_aug": float(row["p_aug"]) if row["p_aug"] else None,
            "frame_stack": int(row["frame_stack"]) if row["frame_stack"] else None}


def paper_config(task: str, mode: str = "offline", **overrides) -> fql.Config:
    """FQL's config for ``task`` as the paper ran it, e.g. ``paper_config("cube-single-play-singletask-task2-v0")``."""
    h = paper_hyperparameters(task, mode)
    config = fql.Config(alpha=h["alpha"], discount=h["discount"], q_agg=h["q_agg"], encoder=h["encoder"])
    return dataclasses.replace(config, **overrides)


def tasks(mode: str = "offline") -> list[str]:
    return [r["dataset"] for r in _read("fql_paper_hyperparameters.csv") if r["mode"] == mode]


def paper_results(dataset: str | None = None, method: str | None = None, suite: str | None = None) -> list[dict]:
    """The paper's reported offline numbers (mean, std over seeds; std None where the paper gives none)."""
    rows = []
    for r in _read("fql_paper_offline.csv"):
        if (dataset or r["dataset"]) == r["dataset"] and (method or r["method"]) == r["method"] and \
                (suite or r["suite"]) == r["suite"]:
            rows.append({"suite": r["suite"], "dataset": r["dataset"], "method": r["method"], "mean": float(r["mean"]),
                         "std": float(r["std"]) if r["std"] else None, "default_task": r["default_task"] == "1"})
    return rows

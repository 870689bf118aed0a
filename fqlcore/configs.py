"""The paper's per-task hyperparameters and reported numbers, read from the CSVs shipped in ``fqlcore/reference/``.

For FQL only alpha, the discount, ``q_agg`` and the step counts change from task to task; everything else is FQL's
default. The baselines' per-task values (the paper's Tables 6 and 7) come from
``fql_paper_baseline_hyperparameters.csv`` (``baseline_hyperparameters``); ``method_config`` gives any method's config
for a task, ``describe`` a config in short.
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import os
import re

from fqlcore import agents
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


# The baseline table's parameter names, per method, and the Config field each one sets.
BASELINE_FIELDS = {
    "IQL": {"awr_inverse_temperature_alpha": "alpha"},
    "ReBRAC": {"actor_bc_coef_alpha1": "alpha_actor", "critic_bc_coef_alpha2": "alpha_critic"},
    "FAWAC": {"awr_inverse_temperature_alpha": "alpha"},
    "FBRAC": {"bc_coef_alpha": "alpha"},
    "IFQL": {"num_action_samples_N": "num_samples"},
}
PAPER_NAMES = {"fql": "FQL", "bc": "BC", "iql": "IQL", "rebrac": "ReBRAC", "fawac": "FAWAC", "fbrac": "FBRAC",
               "ifql": "IFQL"}


def environment(task: str) -> str:
    """The name the baseline table gives ``task``'s environment: ``cube-double``, ``visual-scene``, ``antsoccer``,
    ``d4rl-pen-human-v1``; the paper tuned each OGBench environment on its default task and reused the values."""
    if "-singletask" not in task:  # the paper's D4RL names: antmaze-large-play-v2, pen-human-v1, ...
        return "d4rl-" + task
    name = task.split("-singletask")[0].rsplit("-", 1)[0]  # drop the dataset kind: play, navigate, noisy, ...
    return "antsoccer" if name.startswith("antsoccer") else name


def _group(env: str) -> str:
    """The group of environments whose stated values (e.g. IQL's network size) cover ``env``."""
    if env.startswith(("cube-", "scene", "puzzle-")):
        return "ogbench-manipulation"  # state-based only: the visual environments are named visual-*
    if env.startswith(("d4rl-pen", "d4rl-door", "d4rl-hammer", "d4rl-relocate")):
        return "d4rl-adroit"
    return "all"


def _table_value(method: str, parameter: str, keys) -> str | None:
    """The value of ``parameter`` for ``method`` at the first of ``keys`` (an environment or group) that has one."""
    rows = {r["environment"]: r["value"] for r in _read("fql_paper_baseline_hyperparameters.csv")
            if r["method"] == method and r["parameter"] == parameter}
    return next((rows[k] for k in keys if k in rows), None)


def baseline_hyperparameters(method: str, task: str, mode: str = "offline") -> dict:
    """The Config fields the paper gives ``method`` (e.g. ``"iql"``) for ``task``: its Table 6 (offline) or Table 7
    (offline-to-online) values, the discount (the method's own where stated, else FQL's for the task: "same as FQL
    unless otherwise stated"), FBRAC's ``q_agg`` (FQL's, as FBRAC's defaults are FQL's) and the network size where
    the paper states one (IQL: 4 x 256 on state-based manipulation). Raises ValueError where the paper gives no value,
    rather than falling back on a default."""
    name = PAPER_NAMES.get(method)
    if name not in BASELINE_FIELDS:
        raise ValueError(f"no baseline table for {method!r}: expected one of "
                         f"{', '.join(k for k, v in PAPER_NAMES.items() if v in BASELINE_FIELDS)}")
    fql_flags = paper_hyperparameters(task, mode)  # raises for a task the paper did not run
    if fql_flags["encoder"]:
        raise ValueError(f"{task} is a pixel task ({fql_flags['encoder']} encoder in the paper) and fqlcore's {name} "
                         "has no image encoder")
    o2o = "o2o-" if mode == "offline_to_online" else ""
    env = environment(task)
    out = {}
    for parameter, field in BASELINE_FIELDS[name].items():
        value = _table_value(name, parameter, [o2o + env])
        if value is None:
            known = sorted({r["environment"] for r in _read("fql_paper_baseline_hyperparameters.csv")
                            if r["method"] == name and r["parameter"] == parameter})
            missing = " (the offline antsoccer rows are missing from the only full text of the paper available)" \
                if env == "antsoccer" and not o2o else ""
            raise ValueError(f"the paper gives no {name} {parameter} for {task} ({mode}: table key {o2o + env!r})"
                             f"{missing}; tables with one: {', '.join(known)}")
        out[field] = float(value)
    if "num_samples" in out:
        out["num_samples"] = int(out["num_samples"])
    own_discount = _table_value(name, "discount", [o2o + env])
    out["discount"] = float(own_discount) if own_discount is not None else fql_flags["discount"]
    if name == "FBRAC":
        out["q_agg"] = fql_flags["q_agg"]
    dims = _table_value(name, "mlp_dims", [o2o + env, env, _group(env), "all"])  # the most specific statement
    if dims is not None:
        out["hidden_dims"] = tuple(int(d) for d in re.match(r"\[([0-9, ]+)\]", dims).group(1).split(","))
    return out


def method_config(method: str, task: str, mode: str = "offline", **overrides):
    """``method``'s Config for ``task`` as the paper ran it (FQL: ``paper_config``; the baselines:
    ``baseline_hyperparameters``; BC: its defaults), then ``overrides`` (e.g. ``hidden_dims`` of a smaller scale)."""
    if method == "fql":
        return paper_config(task, mode, **overrides)
    agent = agents.get(method)
    values = {} if method == "bc" else baseline_hyperparameters(method, task, mode)
    return dataclasses.replace(agent.Config(**values), **overrides)


# Always in ``describe``: the fields the paper sets per task. Every other field appears where it is not the default.
DESCRIBED_FIELDS = ("alpha", "alpha_actor", "alpha_critic", "num_samples", "expectile", "discount", "q_agg", "policy")


def _short(value) -> str:
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe(config) -> str:
    """The hyperparameters a run used, in one short string for a results row: ``name=value`` joined by ``;``, in the
    Config's field order, with the per-task fields always and any other field that differs from its default, e.g.
    ``alpha=300;discount=0.99;q_agg=mean`` (FQL at the paper's size) or
    ``alpha=0.3;expectile=0.9;hidden_dims=256x256x256x256;discount=0.99`` (IQL on cube-double)."""
    return ";".join(f"{f.name}={_short(getattr(config, f.name))}" for f in dataclasses.fields(config)
                    if f.name in DESCRIBED_FIELDS or getattr(config, f.name) != f.default)

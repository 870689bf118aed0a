"""``python -m fqlcore reproduce``: the paper's tables as one resumable command.

For each task of a suite: train ``seeds`` vmapped agents with the paper's hyperparameters, evaluate on the paper's
schedule, append one CSV row per (seed, evaluation) with its provenance, and print ours next to the paper's mean ± std.
A rerun skips finished runs and resumes unfinished ones from their checkpoints; ``--shard k/n`` splits the tasks
between the jobs of a cluster array.
"""
from __future__ import annotations

import csv
import dataclasses
import os

import jax
import numpy as np

from fqlcore import agents, configs, evaluate as ev, provenance, scale as scales, train

FIELDS = ["task", "method", "scale", "seed", "step", "total_steps", "success", "return", "length", "episodes",
          "data_source", "ogbench_version", "hidden_dims", "commit", "device", "date", "command"]


def suite_tasks(suite: str) -> list[str]:
    """The tasks of a suite, or the comma-separated task names themselves."""
    offline = configs.tasks("offline")
    state = [t for t in offline if "-singletask-task" in t and not t.startswith("visual-")]
    suites = {"ogbench-state": state, "ogbench-visual": [t for t in offline if t.startswith("visual-")]}
    for env in sorted({t.split("-singletask-")[0] for t in state}):  # e.g. "cube-single-play": its 5 tasks
        suites[env] = [t for t in state if t.startswith(env + "-singletask-")]
    if suite in suites:
        return suites[suite]
    names = [t.strip() for t in suite.split(",") if t.strip()]
    unknown = [t for t in names if t not in offline]
    if unknown or not names:
        raise ValueError(f"unknown suite or task(s) {unknown or suite!r}: expected a suite ({', '.join(suites)}) or "
                         "task names from `python -m fqlcore tasks`")
    return names


def shard(tasks: list[str], spec: str | None) -> list[str]:
    """Tasks k, k + n, k + 2n, ... of the list for ``spec`` = "k/n" (k from 0 to n - 1)."""
    if not spec:
        return tasks
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes k/n with whole numbers, e.g. 0/4, got {spec!r}") from None
    if not 0 <= k < n:
        raise ValueError(f"--shard {spec}: k must be in 0..{n - 1}")
    return tasks[k::n]


@dataclasses.dataclass(frozen=True)
class Schedule:
    steps: int
    eval_every: int
    report_steps: tuple  # the evaluations whose mean is the reported number (never the best one)


def schedule(task: str, scale: scales.Scale, steps: int | None = None) -> Schedule:
    """The paper's: state tasks evaluate every 10% and report the mean at 80/90/100%; pixel tasks every 20%, 60/80/100%."""
    if steps is None:
        steps = configs.paper_hyperparameters(task)["offline_steps"] if scale.name == "paper" else scale.offline_steps
    fractions = (0.6, 0.8, 1.0) if task.startswith("visual-") else (0.8, 0.9, 1.0)
    every = steps // (5 if task.startswith("visual-") else 10)
    if every == 0 or steps % every:
        raise ValueError(f"{steps} steps cannot be split into the paper's evaluation schedule; use a multiple of 10")
    return Schedule(steps, every, tuple(round(f * steps) for f in fractions))


def read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: str, row: dict) -> None:
    """Appends one row (the file is never rewritten), with a header when the file is new."""
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def _run_key(row) -> tuple:
    return row["task"], row["method"], row["scale"], str(row["total_steps"])


def agent_config(method: str, task: str, scale: scales.Scale):
    agent = agents.get(method)
    if method == "fql":
        return configs.paper_config(task, hidden_dims=scale.hidden_dims)
    fields = {f.name for f in dataclasses.fields(agent.Config)}
    overrides = {"hidden_dims": scale.hidden_dims} if "hidden_dims" in fields else {}
    discount = configs.paper_hyperparameters(task)["discount"]
    if "discount" in fields:
        overrides["discount"] = discount
    return agent.Config(**overrides)


def ogbench_loader(task: str):
    """(dataset, picklable env maker, provenance dict) for an OGBench task."""
    from fqlcore.envs import ogbench as og
    _, dataset, _, info = og.load(task)
    return dataset, og.make_env_fn(task), {"data_source": info["source"], "ogbench_version": info["ogbench_version"]}


def run_task(task: str, method: str, seeds: int, scale: scales.Scale, results: str, *, steps: int | None = None,
             eval_episodes: int | None = None, workers: int = 1, runs_dir: str = "runs/reproduce",
             loader=ogbench_loader, progress: bool = True) -> list[dict]:
    """Trains and evaluates one task (skipped when the CSV already holds every evaluation); returns its rows."""
    plan = schedule(task, scale, steps)
    episodes = eval_episodes or scale.eval_episodes
    key = (task, method, scale.name, str(plan.steps))
    done = {(int(r["seed"]), int(r["step"])): r for r in read_rows(results) if _run_key(r) == key}
    wanted = {(s, st) for s in range(seeds) for st in range(0, plan.steps + 1, plan.eval_every)}
    if wanted <= set(done):
        return [done[k] for k in sorted(wanted)]
    dataset, env_fn, source = loader(task)
    agent, config = agents.get(method), agent_config(method, task, scale)
    act = jax.jit(agent.act)
    stamp = {"commit": provenance.commit(), "device": provenance.device(), "command": provenance.command()}

    def evaluate(state, seed):
        at = int(state.step)
        if (seed, at) in done:
            return {k: float(done[(seed, at)][k]) for k in ("success", "return", "length")}
        scores = ev.evaluate(lambda o, k: act(state, o, k), env_fn, num_episodes=episodes, seed=seed, workers=workers)
        row = {"task": task, "method": method, "scale": scale.name, "seed": seed, "step": at, "total_steps": plan.steps,
               "episodes": episodes, "hidden_dims": "x".join(map(str, scale.hidden_dims)), "date": provenance.now(),
               **{k: scores[k] for k in ("success", "return", "length")}, **source, **stamp}
        append_row(results, row)
        done[(seed, at)] = row
        return {k: scores[k] for k in ("success", "return", "length")}

    checkpoint = os.path.join(runs_dir, scale.name, method, f"{task}-{plan.steps}")
    train.train(agent, config, dataset, plan.steps, seeds=seeds, batch_size=scale.batch_size,
                chunk_size=min(plan.eval_every, 10_000), evaluate=evaluate, eval_every=plan.eval_every,
                checkpoint_dir=checkpoint, progress=progress)
    missing = sorted(wanted - set(done))
    if missing:
        raise ValueError(f"{task}: the checkpoint in {checkpoint!r} has finished but {results!r} lacks the evaluations "
                         f"(seed, step) {missing[:5]}...; delete that checkpoint directory to rerun the task")
    return [done[k] for k in sorted(wanted)]


def table(tasks: list[str], method: str, scale: scales.Scale, results: str, steps: int | None = None) -> str:
    """Ours (mean ± std over seeds of the reported number) next to the paper's, one line per task."""
    rows = read_rows(results)
    paper_name = {"fql": "FQL", "iql": "IQL", "rebrac": "ReBRAC", "fawac": "FAWAC", "fbrac": "FBRAC", "ifql": "IFQL",
                  "bc": "BC"}.get(method, method)
    lines = [f"{'task':48s} {'ours (' + scale.name + ')':>16s} {'seeds':>5s} {'paper':>10s}"]
    for task in tasks:
        plan = schedule(task, scale, steps)
        mine = [r for r in rows if _run_key(r) == (task, method, scale.name, str(plan.steps))]
        try:
            ours = ev.summarize(ev.per_seed_scores(mine, plan.report_steps)).format()
            n = str(len({r["seed"] for r in mine}))
        except ValueError:
            ours, n = "not run", "-"
        paper = configs.paper_results(task, paper_name)
        ref = f"{paper[0]['mean']:.0f} ± {paper[0]['std']:.0f}" if paper and paper[0]["std"] is not None else \
            (f"{paper[0]['mean']:.0f}" if paper else "-")
        lines.append(f"{task:48s} {ours:>16s} {n:>5s} {ref:>10s}")
    return "\n".join(lines)


def main(args) -> None:
    scale = scales.get(args.scale)
    tasks = shard(suite_tasks(args.suite), args.shard)
    seeds = args.seeds or scale.seeds
    for task in tasks:
        print(f"== {task}: {args.method}, {seeds} seeds, scale {scale.name}")
        run_task(task, args.method, seeds, scale, args.results, steps=args.steps, eval_episodes=args.eval_episodes,
                 workers=args.workers)
    print(table(tasks, args.method, scale, args.results, args.steps))

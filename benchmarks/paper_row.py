"""A paper-scale row on one machine: data, training with its evaluations, result rows and a timing breakdown.

Run through ``benchmarks/paper_row.sh``, which installs first (``make venv``, jax's GPU build where there is a GPU)
and passes the seconds that took. The steps, each timed:
  data      regenerate the task's OGBench dataset with OGBench's oracles in every core (``generate-data``), unless a
            copy is there already (``--source published`` downloads OGBench's files instead, where there is network);
  load      read it onto the device;
  compile   XLA compiling the training chunk;
  train     the 1M updates of 8 vmapped seeds (at ``FQL_SCALE=paper``) with the paper's evaluation schedule. On an
            accelerator the evaluations run in CPU processes while training goes on (``reproduce.run_task``'s
            ``background_eval``): ``train`` then includes only the wait for the last ones, and ``evaluate`` is empty.
Rows go to ``<out>/reproduce.csv`` (the same rows as ``python -m fqlcore reproduce``) and the breakdown to
``<out>/paper_row_timing.csv``, both with their provenance.

    bash benchmarks/paper_row.sh [--out results] [--task cube-single-play-singletask-task2-v0] [--seeds 8]
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax

from fqlcore import provenance, reproduce, scale as scales
from fqlcore.envs import ogbench as og

TIMING_FIELDS = ["date", "commit", "device", "task", "scale", "seeds", "steps", "data_source", "background_eval",
                 "setup_s", "data_s", "load_s", "compile_s", "train_s", "evaluate_s", "total_s", "command"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cube-single-play-singletask-task2-v0")
    parser.add_argument("--scale", default=os.environ.get("FQL_SCALE", "paper"), choices=tuple(scales.SCALES))
    parser.add_argument("--seeds", type=int, default=None, help="default: the scale's (8 at paper scale)")
    parser.add_argument("--steps", type=int, default=None, help="override the training length (rows record it)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="default: the scale's (50 at paper scale)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="episodes of regenerated data (default: as many as the published dataset)")
    parser.add_argument("--source", default="regenerated", choices=("regenerated", "published"),
                        help="regenerated (default: no network needed) or OGBench's published files (download)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes for data and evaluation")
    parser.add_argument("--out", default="results", help="folder of reproduce.csv and paper_row_timing.csv")
    parser.add_argument("--runs", default="runs/reproduce", help="folder of the checkpoints (a rerun resumes them)")
    parser.add_argument("--setup-seconds", type=float, default=0.0, help="(from paper_row.sh) the install's time")
    args = parser.parse_args(argv)
    scale = scales.get(args.scale)
    seeds = args.seeds or scale.seeds
    results = os.path.join(args.out, "reproduce.csv")
    timing_path = os.path.join(args.out, "paper_row_timing.csv")
    try:
        if reproduce.suite_tasks(args.task) != [args.task]:
            raise ValueError(f"--task takes one task, e.g. cube-single-play-singletask-task2-v0, got the suite "
                             f"{args.task!r}")
        reproduce.check_results_file(results)
        provenance.check_csv(timing_path, TIMING_FIELDS)
        plan = reproduce.schedule(args.task, scale, args.steps)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    background = jax.default_backend() != "cpu"
    print(f"device: {provenance.device()}; {args.task}, {seeds} seeds x {plan.steps} steps at scale {scale.name}; "
          f"evaluations {'in background CPU processes' if background else 'inline (no accelerator)'}", flush=True)
    if scale.name == "paper" and not background:
        print("warning: a paper-scale row on a CPU takes days; install jax's GPU build (make venv JAX=cuda12)",
              file=sys.stderr)

    timings = {"setup": args.setup_seconds}
    started = time.perf_counter()
    dataset = og.parse_name(args.task).dataset
    if args.source == "regenerated" and not os.path.exists(og.regenerated_paths(dataset)["manifest"]):
        og.generate(dataset, num_episodes=args.episodes, workers=args.workers)
    timings["data"] = time.perf_counter() - started
    reproduce.run_task(args.task, "fql", seeds, scale, results, steps=args.steps, eval_episodes=args.eval_episodes,
                       workers=args.workers, loader=functools.partial(reproduce.ogbench_loader, source=args.source),
                       runs_dir=args.runs,
                       background_eval=background, timings=timings)
    timings["total"] = sum(timings.get(k, 0.0) for k in ("setup", "data", "load", "train"))
    print(reproduce.table([args.task], "fql", scale, results, args.steps))
    print("seconds: " + ", ".join(f"{k} {timings.get(k, 0.0):.1f}" for k in
                                  ("setup", "data", "load", "compile", "train", "evaluate", "total")))
    row = {"date": provenance.now(), "commit": provenance.commit(), "device": provenance.device(), "task": args.task,
           "scale": scale.name, "seeds": seeds, "steps": plan.steps, "data_source": args.source,
           "background_eval": background, "command": provenance.command(),
           **{f"{k}_s": f"{timings.get(k, 0.0):.1f}" for k in ("setup", "data", "load", "compile", "train", "evaluate",
                                                              "total")}}
    provenance.append_csv(timing_path, TIMING_FIELDS, [row])
    print(f"rows in {results}, timings in {timing_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

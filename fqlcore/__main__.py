"""Command line: ``python -m fqlcore train | generate-data | reproduce | tasks`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import csv
import dataclasses
import difflib
import math
import os
import sys
import warnings

from fqlcore.scale import SCALES

AGENT_NAMES = ("fql", "bc", "iql", "rebrac", "fawac", "fbrac", "ifql")
TOY_DATASETS = ("toy-bandit",)


def _whole(minimum: int, maximum: int):
    """An argparse type: a whole number in [minimum, maximum] (leave the option out for its default)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value} (leave the option out for its "
                                             "default)")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {value:,}")
        return value
    return parse


STEPS = _whole(1, 2 ** 31 - 1)  # the agents count steps in int32
SEEDS = _whole(1, 1024)  # vmapped in one program: memory grows with them
EPISODES = _whole(1, 100_000)
WORKERS = _whole(1, 1024)
_seed = _whole(0, 2 ** 31 - 1)


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"--alpha must be a finite number >= 0, got {text}")
    return value




def _load_dataset(name: str):
    """(train dataset, evaluation env maker or None, source) for an .npz path, ``toy-bandit``, a D4RL name or Minari
    id, or an OGBench name."""
    from fqlcore import data, toy
    if name.endswith(".npz"):
        return data.load_npz(name), None, f"file {name}"
    if name == "toy-bandit":
        return toy.bandit_dataset(), None, "toy"
    from fqlcore.envs import d4rl
    if name in d4rl.DATASETS or "/" in name:  # the paper's D4RL names, or a Minari id
        _, dataset, info = d4rl.load(name)
        return dataset, d4rl.make_env_fn(name), info["source"]
    from fqlcore.envs import ogbench as og  # needs the [ogbench] extra
    try:
        og.parse_name(name)
    except ValueError:
        from fqlcore import configs
        close = difflib.get_close_matches(name, list(TOY_DATASETS) + configs.tasks("offline"), n=1)
        raise ValueError(f"unknown --dataset {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "") +
                         f": expected a toy dataset ({', '.join(TOY_DATASETS)}), a path to an .npz file, a D4RL name or "
                         "Minari id, or an OGBench task such as cube-single-play-singletask-task2-v0 "
                         "(`python -m fqlcore tasks` lists the paper's)") from None
    env, train_set, _, info = og.load(name)
    return train_set, og.make_env_fn(name), info["source"]


def _agent_config(agent, args, scale):
    from fqlcore import configs
    fields = {f.name for f in dataclasses.fields(agent.Config)}
    overrides = {"hidden_dims": scale.hidden_dims} if "hidden_dims" in fields and scale.name != "paper" else {}
    if args.dataset in configs.tasks("offline"):  # a task of the paper: its hyperparameters for this method
        config = configs.method_config(args.agent, args.dataset, **overrides)
    else:
        config = agent.Config(**overrides)
    if args.alpha is not None:
        if "alpha" not in fields:
            raise SystemExit(f"error: --alpha does not apply to agent {args.agent!r}")
        config = dataclasses.replace(config, alpha=args.alpha)
    return config


def say_device():
    """One line naming what the training will run on, so that nobody trains on a CPU by mistake."""
    import jax
    from fqlcore import provenance
    hint = "" if jax.default_backend() != "cpu" else (
        " (no accelerator: for an NVIDIA GPU install jax's GPU build, `make venv JAX=cuda12`)")
    print(f"device: {provenance.device()}{hint}", flush=True)


def cmd_train(args):
    from fqlcore import agents, data, scale as scales, toy, train
    import jax
    say_device()
    scale = scales.get(args.scale)
    agent = agents.get(args.agent)
    dataset, make_env, source = _load_dataset(args.dataset)
    config = _agent_config(agent, args, scale)
    steps = scale.offline_steps if args.steps is None else args.steps
    evaluate, act = None, jax.jit(agent.act)
    if make_env is not None and args.eval_every:
        from fqlcore import evaluate as ev
        evaluate = lambda state, seed: ev.evaluate(lambda o, k: act(state, o, k), make_env,
                                                   num_episodes=args.eval_episodes, seed=seed, workers=args.workers)
    elif args.dataset == "toy-bandit":
        evaluate = lambda state, seed: {"return": toy.bandit_return(lambda o, k: act(state, o, k),
                                                                    jax.random.PRNGKey(seed))}
    print(f"training {args.agent} on {args.dataset} ({source}), {steps} steps x {args.seeds} seed(s), "
          f"scale {scale.name}, checkpoints in {args.out}\n{config}")
    result = train.train(agent, config, dataset, steps, seeds=args.seeds, seed=args.seed, batch_size=scale.batch_size,
                         chunk_size=args.chunk, evaluate=evaluate, eval_every=args.eval_every or None,
                         checkpoint_dir=args.out)
    path = os.path.join(args.out, "history.csv")
    names = sorted({k for row in result.history for k in row})
    with data.replacing(path, "w") as f:
        writer = csv.DictWriter(f, names)
        writer.writeheader()
        writer.writerows(result.history)
    last = [r for r in result.history if r["step"] == steps]
    for row in last:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"history written to {path}")


def cmd_generate(args):
    from fqlcore.envs import ogbench as og
    manifest = og.generate(args.dataset, out_dir=args.out, num_episodes=args.episodes, seed=args.seed,
                           workers=args.workers, overwrite=args.overwrite)
    print(f"wrote {manifest['paths']['dir']} ({manifest['source']}, {manifest['episodes']['train']} episodes)")


def cmd_reproduce(args):
    from fqlcore import reproduce
    if args.table is None:  # it trains
        say_device()
    reproduce.main(args)


def cmd_tasks(args):
    from fqlcore import configs
    for task in configs.tasks(args.mode):
        print(task)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fqlcore", description="Flow Q-Learning in JAX: train, make data, list tasks.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an agent on a dataset", description="Train an agent on a dataset; "
                       "an interrupted run resumes from --out when the same command is run again.")
    t.add_argument("--dataset", required=True, help="an .npz file (fields observations, actions, rewards, "
                   "next_observations, masks), 'toy-bandit', or an OGBench name such as cube-single-play-singletask-task2-v0")
    t.add_argument("--agent", default="fql", choices=AGENT_NAMES)
    t.add_argument("--steps", type=STEPS, default=None, help="gradient steps (default: the scale's offline_steps)")
    t.add_argument("--seeds", type=SEEDS, default=1, help="independent seeds, trained together with vmap")
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--scale", default=os.environ.get("FQL_SCALE", "ci"), choices=tuple(SCALES))
    t.add_argument("--alpha", type=_alpha, default=None, help="override the distillation weight (FQL) or BC weight")
    t.add_argument("--chunk", type=STEPS, default=1000, help="updates per jitted chunk")
    t.add_argument("--eval-every", type=_whole(0, 2 ** 31 - 1), default=0, help="evaluate every N steps (0: never)")
    t.add_argument("--eval-episodes", type=EPISODES, default=50)
    t.add_argument("--workers", type=WORKERS, default=os.cpu_count(), help="evaluation environments in parallel")
    t.add_argument("--out", default=None, help="checkpoint and history directory (default runs/<dataset>-<agent>)")
    t.set_defaults(func=cmd_train)
    g = sub.add_parser("generate-data", help="regenerate an OGBench manipulation dataset with OGBench's oracles")
    g.add_argument("--dataset", required=True, help="e.g. cube-single-play-v0")
    g.add_argument("--out", default=None, help="directory for regenerated data (never OGBench's download directory)")
    g.add_argument("--episodes", type=EPISODES, default=None, help="default: as many as the published dataset")
    g.add_argument("--seed", type=_seed, default=0)
    g.add_argument("--workers", type=WORKERS, default=None, help="parallel processes (default: all cores)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing regenerated dataset")
    g.set_defaults(func=cmd_generate)
    r = sub.add_parser("reproduce", help="the paper's tables: train, evaluate, write results/*.csv, compare",
                       description="Train and evaluate a suite with the paper's protocol; rows go to --results with "
                       "their provenance; a rerun skips finished runs and resumes unfinished ones.")
    r.add_argument("--suite", required=True, help="ogbench-state, ogbench-visual, d4rl-antmaze, d4rl-adroit, "
                   "offline-to-online[:tasks], an environment such as cube-single-play (its 5 tasks), or "
                   "comma-separated task names")
    r.add_argument("--method", default="fql", choices=AGENT_NAMES)
    r.add_argument("--seeds", type=SEEDS, default=None, help="default: the scale's (at paper scale 8, pixel tasks 4)")
    r.add_argument("--scale", default=os.environ.get("FQL_SCALE", "ci"), choices=tuple(SCALES))
    r.add_argument("--steps", type=STEPS, default=None, help="override the training length (rows record it)")
    r.add_argument("--eval-episodes", type=EPISODES, default=None, help="default: the scale's (50 at paper scale)")
    r.add_argument("--workers", type=WORKERS, default=os.cpu_count(), help="evaluation environments in parallel")
    r.add_argument("--shard", default=None, help="k/n: run tasks k, k+n, ... (k from 0), for cluster job arrays")
    r.add_argument("--results", default="results/reproduce.csv")
    r.add_argument("--source", default="auto", choices=("auto", "published", "regenerated"),
                   help="OGBench data: published (download), regenerated (generate-data), auto (published if present or "
                        "downloadable, else regenerated); rows record which")
    r.add_argument("--table", default=None, choices=("task", "category"),
                   help="print this table from --results without training: one line per task, or the paper's "
                        "per-category averages with 95%% bootstrap intervals (default: train, then the task table)")
    r.add_argument("--curves", default=None, metavar="PNG",
                   help="also draw each category's learning curve with its bootstrap band into this file")
    r.set_defaults(func=cmd_reproduce)
    k = sub.add_parser("tasks", help="list the tasks with the paper's hyperparameters")
    k.add_argument("--mode", default="offline", choices=("offline", "offline_to_online"))
    k.set_defaults(func=cmd_tasks)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    joined = []  # "--alpha -inf", "--shard -1/2": a value, not an option, so the checks can name it
    for arg in argv:
        if (joined and joined[-1].startswith("--") and "=" not in joined[-1] and arg[:1] == "-"
                and arg[1:2] not in ("-", "")):
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    args = parser().parse_args(joined)
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"  # one line, no source
    if getattr(args, "out", 1) is None and args.command == "train":
        args.out = os.path.join("runs", f"{os.path.basename(args.dataset).removesuffix('.npz')}-{args.agent}")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory: ask for fewer seeds, episodes or a smaller dataset", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder that cannot be written: what the system said, and where
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}: free some space or pick another output path; files already written are "
              "intact", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: files already written are intact; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

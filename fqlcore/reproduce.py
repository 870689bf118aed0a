"""``python -m fqlcore reproduce``: the paper's tables as one resumable command.

For each task of a suite: train ``seeds`` vmapped agents with the paper's hyperparameters, evaluate on the paper's
schedule, append one CSV row per (seed, evaluation) with its provenance, and print ours next to the paper's mean ± std.
A rerun skips finished runs and resumes unfinished ones from their checkpoints; ``--shard k/n`` splits the tasks
between the jobs of a cluster array.

D4RL suites (``d4rl-antmaze``, ``d4rl-adroit``) train on Minari's D4RL datasets (``fqlcore.envs.d4rl``): their rows say
``data_source=minari`` and the Minari id, and the table shows them in their own "minari" column beside the paper's D4RL
numbers, never as them. ``offline-to-online`` trains offline, then fine-tunes online (``fqlcore.online``), one seed after
another; its rows have ``mode=offline_to_online`` and the reported numbers are the evaluations at the end of the offline
phase (before) and at the end (after).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import datetime
import functools
import multiprocessing
import os
import shutil
import threading
import time

import jax

from fqlcore import agents, configs, data, evaluate as ev, provenance, runlock, scale as scales, train

FIELDS = ["task", "method", "scale", "seed", "step", "total_steps", "success", "return", "length", "episodes",
          "data_source", "ogbench_version", "hidden_dims", "commit", "device", "date", "command",
          "normalized_score", "minari_id", "mode", "hyperparameters", "termination", "score_caveat",
          "run_id", "dataset_fingerprint", "success_timing", "versions"]  # the columns after "command" came later: a
# file with an older header gains them (empty in its rows) when a run next writes to it (``upgrade_results``)
RUN_ID = "RUN_ID"  # the file in a run's checkpoint directory that names the run
SUITE_O2O = "offline-to-online"
D4RL_SUITES = ("d4rl-antmaze", "d4rl-adroit")


def is_d4rl(task: str) -> bool:
    """A D4RL dataset name of the paper (``antmaze-umaze-v2``, ``pen-human-v1``, ...): loaded through Minari."""
    from fqlcore.envs import d4rl
    return task in d4rl.DATASETS


def metric_of(task: str) -> str:
    """The reported metric: D4RL adroit reports the normalized score (0-100), everything else the success rate."""
    return "normalized_score" if is_d4rl(task) and not task.startswith("antmaze") else "success"


def suite_mode(suite: str) -> str:
    """``offline_to_online`` for ``offline-to-online`` (or ``offline-to-online:<task>,<task>``), else ``offline``."""
    return "offline_to_online" if suite == SUITE_O2O or suite.startswith(SUITE_O2O + ":") else "offline"


def suite_tasks(suite: str) -> list[str]:
    """The tasks of a suite, or the comma-separated task names themselves (``offline-to-online:<names>`` for
    fine-tuning tasks)."""
    offline = configs.tasks("offline")
    state = [t for t in offline if "-singletask-task" in t and not t.startswith("visual-")]
    suites = {"ogbench-state": state, "ogbench-visual": [t for t in offline if t.startswith("visual-")],
              "d4rl-antmaze": [t for t in offline if is_d4rl(t) and t.startswith("antmaze")],
              "d4rl-adroit": [t for t in offline if is_d4rl(t) and not t.startswith("antmaze")],
              SUITE_O2O: configs.tasks("offline_to_online")}
    for env in sorted({t.split("-singletask-")[0] for t in state}):  # e.g. "cube-single-play": its 5 tasks
        suites[env] = [t for t in state if t.startswith(env + "-singletask-")]
    if suite in suites:
        return suites[suite]
    known = offline
    if suite_mode(suite) == "offline_to_online":
        suite, known = suite[len(SUITE_O2O) + 1:], configs.tasks("offline_to_online")
    names = [t.strip() for t in suite.split(",") if t.strip()]
    unknown = [t for t in names if t not in known]
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
    if n < 1:
        raise ValueError(f"--shard {spec}: n, the number of jobs, must be at least 1, e.g. 0/4")
    if not 0 <= k < n:
        raise ValueError(f"--shard {spec}: k, this job's index, must be one of 0..{n - 1} (counting from 0)")
    return tasks[k::n]


@dataclasses.dataclass(frozen=True)
class Schedule:
    steps: int  # offline steps
    eval_every: int
    report_steps: tuple  # the evaluations whose mean is the reported number (never the best one)
    online_steps: int = 0  # offline-to-online: environment steps after the offline ones

    @property
    def total_steps(self) -> int:
        return self.steps + self.online_steps


def schedule(task: str, scale: scales.Scale, steps: int | None = None, mode: str = "offline") -> Schedule:
    """The paper's: state tasks evaluate every 10% and report the mean at 80/90/100%; pixel tasks every 20%, 60/80/100%;
    D4RL (500K steps) every 20%, reporting the last evaluation. Offline-to-online (1M + 1M): every 10% of the offline
    steps through both phases, reporting the evaluation at the end of each (``steps`` for before,
    ``report_steps == (total_steps,)`` for after). ``steps`` overrides the length of each phase."""
    if mode == "offline_to_online":
        h = configs.paper_hyperparameters(task, mode)
        offline, online_ = (h["offline_steps"], h["online_steps"]) if scale.name == "paper" else (scale.offline_steps,) * 2
        offline, online_ = (steps, steps) if steps is not None else (offline, online_)
        every = offline // 10
        if offline % 10 or online_ % every:
            raise ValueError(f"{offline} + {online_} steps cannot be split into the paper's evaluation schedule; use "
                             "multiples of 10")
        return Schedule(offline, every, (offline + online_,), online_)
    if steps is None:
        steps = configs.paper_hyperparameters(task)["offline_steps"] if scale.name == "paper" else scale.offline_steps
    if is_d4rl(task):
        if steps % 5:
            raise ValueError(f"{steps} steps cannot be split into the paper's evaluation schedule; use a multiple of 5")
        return Schedule(steps, steps // 5, (steps,))
    fractions = (0.6, 0.8, 1.0) if task.startswith("visual-") else (0.8, 0.9, 1.0)
    if steps % 10:  # evaluations at 10% steps (state) or 20% (pixels), reported at round fractions of the run
        raise ValueError(f"{steps} steps cannot be split into the paper's evaluation schedule; use a multiple of 10")
    every = steps // (5 if task.startswith("visual-") else 10)
    return Schedule(steps, every, tuple(round(f * steps) for f in fractions))


def training_hours(updates_per_s_per_seed: float, seeds_per_program: int, seeds: int = 8,
                   steps: int = 1_000_000) -> float:
    """Predicted hours of training for ``seeds`` x ``steps`` updates (default: a paper-scale row) when each program
    trains ``seeds_per_program`` seeds at once: ceil(seeds / seeds_per_program) programs, one after another."""
    programs = -(-seeds // seeds_per_program)
    return programs * steps / updates_per_s_per_seed / 3600


def paper_seeds(task: str, scale: scales.Scale) -> int:
    """The scale's seeds; at the paper's scale, 4 for pixel tasks as the paper ran them (8 for the others)."""
    return 4 if scale.name == "paper" and task.startswith("visual-") else scale.seeds


def read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _header(path: str) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def check_results_file(path: str) -> list[str]:
    """The columns the file has, checked before any work starts. A file written before the last columns existed is
    accepted (``upgrade_results`` adds them); a directory, a file with other columns or a torn last line raises a
    ValueError that says what to do."""
    if os.path.isdir(path):
        raise ValueError(f"--results {path!r} is a directory: pass a CSV file path, e.g. results/reproduce.csv")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the folder of --results {path!r} ({e.strerror}): pass a writable path") from None
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"--results {path!r} cannot be written: pass a writable path")
    fields = _header(path) if os.path.exists(path) and os.path.getsize(path) else FIELDS
    if fields != FIELDS[:len(fields)] or "command" not in fields:
        raise ValueError(f"--results {path!r} has the columns {fields}, not fqlcore's {FIELDS}: write these rows to "
                         "another --results file")
    provenance.check_csv(path, fields)
    return fields


def upgrade_results(path: str) -> list[str]:
    """Gives a results file written before the last columns existed the whole header, its rows unchanged and empty in
    the new columns; returns the columns added. The file is replaced whole (``data.replacing``) under a lock, so a
    crash leaves the old file or the new one; every writer runs this before its first row."""
    fields = check_results_file(path)
    if fields == FIELDS:
        return []
    with runlock.hold(os.path.abspath(path) + ".upgrading", "results upgrade"):
        fields = check_results_file(path)  # another process may have upgraded it while this one waited
        if fields == FIELDS:
            return []
        rows = read_rows(path)
        with data.replacing(path, "w") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    shutil.rmtree(os.path.abspath(path) + ".upgrading", ignore_errors=True)
    return FIELDS[len(fields):]


def append_row(path: str, row: dict) -> None:
    """Appends one row; rows already there are never rewritten (``provenance.append_csv``)."""
    if check_results_file(path) != FIELDS:
        raise ValueError(f"{path!r} has an older header: call upgrade_results({path!r}) first (reproduce does)")
    provenance.append_csv(path, FIELDS, [{k: v for k, v in row.items() if k in FIELDS}])


def run_id(checkpoint: str) -> str:
    """The id of the training run that owns ``checkpoint``: made when the run starts and kept in its directory, so
    that every row of one run carries it and a new run (its old checkpoint deleted) never passes for the old one. A
    checkpoint written before runs had ids belongs to the rows without one (\"\")."""
    path = os.path.join(checkpoint, RUN_ID)
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    if any(os.path.exists(os.path.join(checkpoint, sub, train.CHECKPOINT)) for sub in ("", "offline")):
        return ""
    os.makedirs(checkpoint, exist_ok=True)
    new = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()
    with data.replacing(path + ".new", "w") as f:
        f.write(new + "\n")
    try:
        os.link(path + ".new", path)  # a second process starting the same run at once keeps the first one's id
    except FileExistsError:
        pass
    finally:
        os.unlink(path + ".new")
    return run_id(checkpoint)


def runs_of(rows: list[dict]) -> dict:
    """{run id: its rows} in the order the runs first appear (rows written before run ids: the run \"\")."""
    runs: dict = {}
    for r in rows:
        runs.setdefault(r.get("run_id") or "", []).append(r)
    return runs


def _run_key(row) -> tuple:
    return row["task"], row["method"], row["scale"], str(row["total_steps"]), row.get("mode") or "offline"


def agent_config(method: str, task: str, scale: scales.Scale, mode: str = "offline"):
    """``method``'s config for ``task`` with the paper's per-task values (``configs.method_config``; a ValueError where
    the paper gives none). Network sizes: at the ``paper`` scale the paper's (IQL: 4 x 256 on state-based
    manipulation), at smaller scales the scale's, the same for every method so that the comparison stays fair."""
    overrides = {} if scale.name == "paper" else {"hidden_dims": scale.hidden_dims}
    return configs.method_config(method, task, mode, **overrides)


def ogbench_loader(task: str, online_steps: int = 0, source: str = "auto"):
    """(dataset, picklable env maker, provenance dict) for an OGBench task (``online_steps``: unused, fine-tuning keeps
    its own buffer).
    Pixel tasks' environments stack frames as their batches do (``batch_sampler``). ``source``: ``ogbench.load``'s
    (published, regenerated, or auto)."""
    from fqlcore import data
    from fqlcore.envs import ogbench as og
    _, arrays, _, info = og.load_arrays(task, source=source)
    dataset = data.from_arrays(**{f: arrays[f] for f in data.FIELDS})  # online.finetune keeps the paper's own buffer
    env_fn = og.make_env_fn(task, frame_stack=configs.paper_hyperparameters(task)["frame_stack"])
    return dataset, env_fn, {"data_source": info["source"], "ogbench_version": info["ogbench_version"],
                             "success_timing": info["success_timing"]}


def batch_sampler(task: str):
    """``data.sample``, or for the paper's pixel tasks its frame stacking and random-shift augmentation."""
    try:
        h = configs.paper_hyperparameters(task)
    except ValueError:
        return data.sample
    if not h["frame_stack"] and not h["p_aug"]:
        return data.sample
    from fqlcore import pixels
    return functools.partial(pixels.sample, frame_stack=h["frame_stack"], p_aug=h["p_aug"])


def d4rl_loader(task: str, online_steps: int = 0):
    """The same for a D4RL task, through Minari: ``data_source`` "minari", the Minari id and version, the reference
    scores that turn returns into normalized scores, the termination rule of its masks and its score caveat."""
    from fqlcore.envs import d4rl
    _, dataset, info = d4rl.load(task)
    return dataset, d4rl.make_env_fn(task), {
        "data_source": info["source"], "ogbench_version": "", "ref_min_score": info["ref_min_score"],
        "ref_max_score": info["ref_max_score"], "termination": info["termination"],
        "score_caveat": info["score_caveat"], "minari_id": f"{info['minari_id']} (minari {info['minari_version']})"}


def default_loader(task: str, online_steps: int = 0, source: str = "auto"):
    """Minari for D4RL names, OGBench otherwise (``source``: published, regenerated or auto; rows record which)."""
    if not is_d4rl(task):
        return ogbench_loader(task, online_steps, source)
    if source != "auto":
        raise ValueError(f"--source {source} applies to OGBench tasks; {task} loads Minari's dataset (leave --source "
                         "auto)")
    return d4rl_loader(task, online_steps)


def _scores(scores: dict, source: dict) -> dict:
    """success, return, length and, where the data has reference scores (D4RL), the normalized score of the return."""
    out = {k: float(scores[k]) for k in ("success", "return", "length")}
    if source.get("ref_min_score") is not None and source.get("ref_max_score") is not None:
        from fqlcore.envs import d4rl
        out["normalized_score"] = float(d4rl.normalized_score(source, out["return"]))
    return out


def _reward_fn(task: str):
    """Online rewards get the offline data's convention: D4RL antmaze r - 1; OGBench and adroit unchanged."""
    if not is_d4rl(task):
        return None
    from fqlcore.envs import d4rl
    return d4rl.reward_transform(d4rl.kind_of(d4rl.minari_id(task)))


def _cpu_only():
    """Initializer of an evaluation process: its JAX runs on the CPU, leaving the accelerator to training."""
    jax.config.update("jax_platforms", "cpu")


_acts = {}


def _evaluate_in_process(method: str, state, env_fn, episodes: int, seed: int) -> dict:
    """One evaluation in a background process, its episodes one after another in this process (``workers=1``, so
    its rows equal an inline evaluation's with ``workers=1``); the pool runs many such evaluations at once."""
    act = _acts.setdefault(method, jax.jit(agents.get(method).act))
    return ev.evaluate(lambda o, k: act(state, o, k), env_fn, num_episodes=episodes, seed=seed, workers=1)


def evaluation_processes(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """``workers`` CPU processes that evaluate snapshots of the agents while the accelerator trains on."""
    return concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_cpu_only)


def run_task(task: str, method: str, seeds: int, scale: scales.Scale, results: str, *, steps: int | None = None,
             eval_episodes: int | None = None, workers: int = 1, runs_dir: str = "runs/reproduce",
             loader=None, progress: bool = True, mode: str = "offline", background_eval: bool | None = None,
             timings: dict | None = None) -> list[dict]:
    """Trains and evaluates one task (skipped when the CSV already holds every evaluation); returns its rows.

    ``loader(task)`` (``loader(task, online_steps)`` for offline-to-online) gives (dataset, env maker, provenance);
    default: Minari for D4RL names, OGBench otherwise. ``mode="offline_to_online"`` fine-tunes each seed online after
    the offline phase (``fqlcore.online.finetune``), evaluating on the same schedule through both phases.

    ``background_eval`` (default: on an accelerator) evaluates offline snapshots in ``workers`` CPU processes while
    training goes on, instead of stopping it for every evaluation; rows are the same. ``timings`` receives the seconds
    spent loading, training and, for inline evaluations, evaluating."""
    o2o = mode == "offline_to_online"
    if seeds < 1 or (eval_episodes is not None and eval_episodes < 1):
        raise ValueError(f"seeds and eval_episodes must be at least 1, got {seeds} and {eval_episodes} (None: the "
                         "scale's default)")
    if mode not in ("offline", "offline_to_online"):
        raise ValueError(f"mode must be 'offline' or 'offline_to_online', got {mode!r}")
    plan = schedule(task, scale, steps, mode)
    episodes = scale.eval_episodes if eval_episodes is None else eval_episodes
    key = (task, method, scale.name, str(plan.total_steps), mode)
    wanted = {(s, st) for s in range(seeds) for st in range(0, plan.total_steps + 1, plan.eval_every)}
    runs = runs_of([r for r in read_rows(results) if _run_key(r) == key])
    for rows in reversed(runs.values()):  # a finished run (the latest, if several) is not run again
        finished = {(int(r["seed"]), int(r["step"])): r for r in rows}
        if wanted <= set(finished):
            return [finished[k] for k in sorted(wanted)]
    upgrade_results(results)
    name = f"{task}-o2o-{plan.steps}+{plan.online_steps}" if o2o else f"{task}-{plan.steps}"
    checkpoint = os.path.join(runs_dir, scale.name, method, name)
    run = run_id(checkpoint)  # rows of another run (its checkpoint gone) are never taken for this one's
    done = {(int(r["seed"]), int(r["step"])): r for r in runs.get(run, [])}
    loader = loader or default_loader
    clock = _Clock(timings)
    with clock("load"):
        dataset, env_fn, source = loader(task, plan.online_steps) if o2o else loader(task)
    agent, config = agents.get(method), agent_config(method, task, scale, mode)
    act = jax.jit(agent.act)
    stamp = {"commit": provenance.commit(), "device": provenance.device(), "command": provenance.command(),
             "mode": mode, "run_id": run, "dataset_fingerprint": data.fingerprint(dataset),
             "versions": provenance.versions()}
    provenance_columns = {k: v for k, v in source.items() if k in FIELDS}

    writing = threading.Lock()  # background evaluations finish in another thread

    def record(seed, at, scores):
        scores = _scores(scores, source)
        row = {"task": task, "method": method, "scale": scale.name, "seed": seed, "step": at,
               "total_steps": plan.total_steps, "episodes": episodes, "hidden_dims": "x".join(map(str, config.hidden_dims)),
               "hyperparameters": configs.describe(config),
               "date": provenance.now(), **scores, **provenance_columns, **stamp}
        with writing:
            append_row(results, row)
            done[(seed, at)] = row
        return {k: scores[k] for k in ("success", "return", "length")}

    pool = None

    def evaluate(state, seed):
        at = int(state.step)
        if (seed, at) in done:
            return {k: float(done[(seed, at)][k]) for k in ("success", "return", "length")}
        if pool is None:
            with clock("evaluate"):
                return record(seed, at, ev.evaluate(lambda o, k: act(state, o, k), env_fn, num_episodes=episodes,
                                                    seed=seed, workers=workers))
        scored = concurrent.futures.Future()  # resolved once the row is written, or with the error that stopped it

        def write(running):
            try:
                scored.set_result(record(seed, at, running.result()))
            except BaseException as e:  # noqa: BLE001  (handed to the training loop, which raises it)
                scored.set_exception(e)

        pool.submit(_evaluate_in_process, method, jax.device_get(state), env_fn, episodes, seed).add_done_callback(write)
        return scored

    if background_eval if background_eval is not None else jax.default_backend() != "cpu":
        pool = evaluation_processes(workers)
    try:
        with clock("train"):
            result = train.train(agent, config, dataset, plan.steps, seeds=seeds, batch_size=scale.batch_size,
                                 chunk_size=min(plan.eval_every, 10_000), evaluate=evaluate,
                                 eval_every=plan.eval_every,
                                 checkpoint_dir=os.path.join(checkpoint, "offline") if o2o else checkpoint,
                                 progress=progress, sample=batch_sampler(task),
                                 run_info={"results": os.path.abspath(results)})
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
            pool = None  # online fine-tuning evaluates inline
    if timings is not None:
        timings["compile"] = timings.get("compile", 0.0) + result.compile_seconds
    if o2o:
        from fqlcore import online
        for seed in range(seeds):  # one environment each: the seeds fine-tune one after another
            if all((seed, st) in done for st in range(plan.steps, plan.total_steps + 1, plan.eval_every)):
                continue
            online.finetune(agent, result.state(seed), dataset, env_fn, plan.online_steps, seed=seed,
                            batch_size=scale.batch_size, reward_fn=_reward_fn(task),
                            evaluate=lambda state, seed=seed: evaluate(state, seed), eval_every=plan.eval_every,
                            log_every=min(plan.eval_every, 1000), checkpoint_dir=os.path.join(checkpoint, f"online-{seed}"),
                            checkpoint_every=plan.eval_every, progress=progress)
    missing = sorted(wanted - set(done))
    if missing:
        raise ValueError(f"{task}: the checkpoint in {checkpoint!r} has finished but {results!r} lacks the evaluations "
                         f"(seed, step) {missing[:5]}...; delete that checkpoint directory to rerun the task")
    return [done[k] for k in sorted(wanted)]


class _Clock:
    """``with clock("train"): ...`` adds the block's wall-clock seconds to ``timings["train"]`` (no-op without a
    dict). Inline evaluations happen inside training: "train" includes them, "evaluate" says how much they took."""

    def __init__(self, timings: dict | None):
        self.timings = timings

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.timings is not None:
                self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def _ours(rows: list[dict], task: str, steps: tuple) -> str:
    """mean ± std over seeds of the evaluations at ``steps``, in percent (success) or as is (normalized score)."""
    metric = metric_of(task)
    try:
        return ev.summarize(ev.per_seed_scores(rows, steps, metric)).format(scale=100.0 if metric == "success" else 1.0)
    except ValueError:
        return "not run"


def _paper_o2o(task: str, method: str):
    """The paper's offline-to-online numbers for ``task`` (before, after), or None."""
    for r in configs._read("fql_paper_offline_to_online.csv"):
        if r["dataset"] == task and r["method"] == method:
            return (f"{float(r['offline_mean']):.0f} ± {float(r['offline_std']):.0f}",
                    f"{float(r['online_mean']):.0f} ± {float(r['online_std']):.0f}")
    return None


PAPER_NAMES = {"fql": "FQL", "iql": "IQL", "rebrac": "ReBRAC", "fawac": "FAWAC", "fbrac": "FBRAC", "ifql": "IFQL",
               "bc": "BC"}


def table(tasks: list[str], method: str, scale: scales.Scale, results: str, steps: int | None = None,
          mode: str = "offline") -> str:
    """Ours (mean ± std over seeds of the reported number) next to the paper's, one line per task and run.

    The ``data`` column says where our data came from (``minari`` for D4RL tasks: Minari's re-collected D4RL datasets,
    which are not the files behind the paper's D4RL numbers); offline-to-online shows before -> after for both. Rows of
    different training runs of a task (``run_id``) are never pooled: each run has its own line."""
    rows = read_rows(results)
    paper_name = PAPER_NAMES.get(method, method)
    o2o = mode == "offline_to_online"
    ours_head = ("ours before -> after" if o2o else "ours") + f" ({scale.name})"
    lines = [f"{'task':48s} {ours_head:>{30 if o2o else 16}s} {'seeds':>5s} {'data':>11s} {'paper':>{18 if o2o else 10}s}"]
    for task in tasks:
        plan = schedule(task, scale, steps, mode)
        runs = runs_of([r for r in rows if _run_key(r) == (task, method, scale.name, str(plan.total_steps), mode)])
        for run, mine in (runs or {"": []}).items():
            label = f"{task} [run {run}]" if len(runs) > 1 else task
            ours = _ours(mine, task, plan.report_steps)
            n = str(len({r["seed"] for r in mine})) if ours != "not run" else "-"
            source = "+".join(sorted({r["data_source"] for r in mine})) or "-"
            if o2o:
                ours = f"{_ours(mine, task, (plan.steps,))} -> {ours}"
                paper = _paper_o2o(task, paper_name)
                ref = f"{paper[0]} -> {paper[1]}" if paper else "-"
                lines.append(f"{label:48s} {ours:>30s} {n:>5s} {source:>11s} {ref:>18s}")
                continue
            paper = configs.paper_results(task, paper_name)
            ref = f"{paper[0]['mean']:.0f} ± {paper[0]['std']:.0f}" if paper and paper[0]["std"] is not None else \
                (f"{paper[0]['mean']:.0f}" if paper else "-")
            lines.append(f"{label:48s} {ours:>16s} {n:>5s} {source:>11s} {ref:>10s}")
    caveats = {(r["task"], r["score_caveat"]) for r in rows if r.get("score_caveat") and r["task"] in tasks}
    lines += [f"note: {task}: {caveat}" for task, caveat in sorted(caveats)]
    return "\n".join(lines)


def category_of(task: str) -> str:
    """The paper's category of a task: its environment and dataset (``cube-double-play``), or the task itself."""
    return task.split("-singletask-")[0]


def _finished_run(rows: list[dict], steps: tuple) -> list[dict] | None:
    """The rows of the latest run whose every seed has every evaluation at ``steps``, or None."""
    for mine in reversed(runs_of(rows).values()):
        seeds = {r["seed"] for r in mine}
        have = {(r["seed"], int(r["step"])) for r in mine}
        if all((seed, st) in have for seed in seeds for st in steps):
            return mine
    return None


def run_problems(rows: list[dict], task: str, method: str, scale: scales.Scale) -> list[str]:
    """What keeps one run's rows from being a finished offline ``scale`` run of ``method`` on ``task`` as ``reproduce``
    makes it: at least the scale's seeds, each evaluated at every scheduled step on the scale's episodes, the scale's
    networks, one data source and the method's per-task hyperparameters. [] when nothing does: chapters assert on this,
    never on how the numbers come out."""
    if not rows:
        return ["no rows"]
    plan = schedule(task, scale)
    problems = []
    seeds = {int(r["seed"]) for r in rows}
    if len(seeds) < scale.seeds:
        problems.append(f"{len(seeds)} seeds, expected {scale.seeds}")
    have = {(int(r["seed"]), int(r["step"])) for r in rows}
    missing = [(s, t) for s in sorted(seeds) for t in range(0, plan.steps + 1, plan.eval_every) if (s, t) not in have]
    if missing:
        problems.append(f"{len(missing)} evaluations missing (seed, step): {missing[:3]}")
    expected = {"task": task, "method": method, "scale": scale.name, "total_steps": str(plan.total_steps),
                "episodes": str(scale.eval_episodes), "hidden_dims": "x".join(map(str, scale.hidden_dims)),
                "hyperparameters": configs.describe(agent_config(method, task, scale))}
    for field, value in expected.items():
        found = sorted({r.get(field) or "" for r in rows})
        if found != [value]:
            problems.append(f"{field} {found}, expected {value!r}")
    sources = {r.get("data_source") or "" for r in rows}
    if len(sources) != 1 or "" in sources:
        problems.append(f"data_source {sorted(sources)}, expected one label")
    return problems


def run_hours(rows: list[dict]) -> float:
    """Wall-clock hours from a run's first evaluation to its last (training and evaluation, both seeds together)."""
    dates = sorted(datetime.datetime.fromisoformat(r["date"]) for r in rows)
    return (dates[-1] - dates[0]).total_seconds() / 3600


def categories(tasks: list[str], method: str, scale: scales.Scale, results: str, steps: int | None = None) -> dict:
    """{category: {"tasks", "finished", "per_seed", "curve"}} over the tasks of each category that have a finished
    run: ``per_seed`` {seed: the tasks' reported numbers averaged within the seed}, ``curve`` {step: per-seed mean over
    the tasks}. The paper's category number averages all five tasks per seed first, then takes mean ± std over seeds;
    a category with fewer finished tasks is the average of those and says so."""
    rows = read_rows(results)
    out: dict = {}
    for task in tasks:
        plan = schedule(task, scale, steps)
        metric = metric_of(task)
        entry = out.setdefault(category_of(task), {"tasks": [], "finished": [], "scores": {}, "curves": {}})
        entry["tasks"].append(task)
        mine = _finished_run([r for r in rows if _run_key(r) == (task, method, scale.name, str(plan.total_steps),
                                                                  "offline")], plan.report_steps)
        if mine is None:
            continue
        entry["finished"].append(task)
        entry["scores"][task] = {int(seed): v for seed, v in ev.per_seed_scores(mine, plan.report_steps, metric).items()}
        entry["curves"][task] = {(int(r["seed"]), int(r["step"])): float(r[metric]) for r in mine}
    for entry in out.values():
        scores, curves = entry.pop("scores"), entry.pop("curves")
        seeds = sorted(set.intersection(*(set(s) for s in scores.values()))) if scores else []
        entry["per_seed"] = {seed: float(sum(scores[t][seed] for t in scores) / len(scores)) for seed in seeds}
        steps_ = sorted(set.intersection(*({st for _, st in c} for c in curves.values()))) if curves else []
        entry["curve"] = {st: [sum(curves[t][(seed, st)] for t in curves) / len(curves) for seed in seeds]
                          for st in steps_ if all((seed, st) in curves[t] for t in curves for seed in seeds)}
    return out


def _shown_as_percent(tasks: list[str]) -> bool:
    """Whether a category is shown in percent: success rates are; D4RL adroit's normalized score is already 0-100."""
    return all(metric_of(t) == "success" for t in tasks)


def category_table(tasks: list[str], method: str, scale: scales.Scale, results: str, steps: int | None = None) -> str:
    """The paper's per-category table: ours (mean ± std over seeds of the tasks' average, and its 95% bootstrap
    interval) beside the mean of the paper's five task numbers, one line per category."""
    paper_name = PAPER_NAMES.get(method, method)
    lines = [f"{'category':28s} {'tasks':>5s} {'seeds':>5s} {'ours (' + scale.name + ')':>16s} {'95% CI':>12s} "
             f"{'paper':>6s}"]
    for category, entry in categories(tasks, method, scale, results, steps).items():
        finished, total = len(entry["finished"]), len(entry["tasks"])
        times = 100.0 if _shown_as_percent(entry["tasks"]) else 1.0
        if entry["per_seed"]:
            ours = ev.summarize(entry["per_seed"]).format(scale=times)
            low, high = ev.bootstrap_ci(entry["per_seed"])
            ci = f"[{low * times:.0f}, {high * times:.0f}]"
        else:
            ours, ci = "not run", "-"
        means = [configs.paper_results(t, paper_name) for t in entry["tasks"]]
        paper = f"{sum(m[0]['mean'] for m in means) / total:.0f}" if all(means) else "-"
        lines.append(f"{category:28s} {f'{finished}/{total}':>5s} {len(entry['per_seed']) or '-':>5} {ours:>16s} "
                     f"{ci:>12s} {paper:>6s}")
    lines += ["ours: tasks averaged within each seed, then mean ± std over seeds; a category with fewer than all of its",
              "tasks finished averages those it has. paper: the mean of its task means."]
    return "\n".join(lines)


def plot_categories(tasks: list[str], method: str, scale: scales.Scale, results: str, path: str,
                    steps: int | None = None) -> None:
    """One learning-curve panel per category: the mean over seeds of the tasks' average, shaded with its 95%
    bootstrap interval over seeds, as the paper's appendix draws them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    found = {c: e for c, e in categories(tasks, method, scale, results, steps).items() if e["curve"]}
    if not found:
        raise ValueError(f"{results!r} has no finished run of {method} at scale {scale.name} for these tasks: nothing "
                         "to plot")
    fig, axes = plt.subplots(1, len(found), figsize=(4 * len(found), 3.2), squeeze=False)
    for ax, (category, entry) in zip(axes[0], found.items()):
        at = sorted(entry["curve"])
        ci = [ev.bootstrap_ci(entry["curve"][st]) for st in at]
        success = _shown_as_percent(entry["tasks"])
        times = 100.0 if success else 1.0
        ax.plot(at, [times * sum(entry["curve"][st]) / len(entry["curve"][st]) for st in at], label=PAPER_NAMES.get(
            method, method))
        ax.fill_between(at, [times * lo for lo, _ in ci], [times * hi for _, hi in ci], alpha=0.25,
                        label="95% bootstrap CI over seeds")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:.0f}K"))
        ax.set(title=f"{category} ({len(entry['finished'])}/{len(entry['tasks'])} tasks, "
               f"{len(entry['per_seed'])} seeds)", xlabel="training step",
               ylabel="success (%)" if success else "normalized score")
        if success:
            ax.set_ylim(-2, 102)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with data.replacing(path) as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png", dpi=120)
    plt.close(fig)


def main(args) -> None:
    scale = scales.get(args.scale)
    tasks = shard(suite_tasks(args.suite), args.shard)
    if not tasks:
        print(f"--shard {args.shard} has no task: the suite has {len(suite_tasks(args.suite))}; nothing to do")
        return
    mode = suite_mode(args.suite)
    if (args.table == "category" or args.curves) and mode != "offline":
        raise ValueError("--table category and --curves average offline tasks within categories; drop them for "
                         "offline-to-online")
    if args.curves and not os.access(os.path.dirname(os.path.abspath(args.curves)), os.W_OK):
        raise ValueError(f"--curves {args.curves!r}: its folder does not exist or cannot be written; pass a writable "
                         "path such as results/curves.png")
    for task in tasks:  # every schedule checked before anything is written
        schedule(task, scale, args.steps, mode)
    if args.table is None:
        added = upgrade_results(args.results)
        if added:
            print(f"{args.results}: added the columns {added} (empty in the rows already there)")
        for task in tasks:
            seeds = args.seeds or paper_seeds(task, scale)
            print(f"== {task}: {args.method}, {seeds} seeds, scale {scale.name}" +
                  (", offline-to-online" * (mode != "offline")))
            run_task(task, args.method, seeds, scale, args.results, steps=args.steps, eval_episodes=args.eval_episodes,
                     workers=args.workers, mode=mode, loader=functools.partial(default_loader, source=args.source))
    else:
        check_results_file(args.results)
    if args.table == "category":
        print(category_table(tasks, args.method, scale, args.results, args.steps))
    else:
        print(table(tasks, args.method, scale, args.results, args.steps, mode))
    if args.curves:
        plot_categories(tasks, args.method, scale, args.results, args.curves, args.steps)
        print(f"learning curves: {args.curves}")

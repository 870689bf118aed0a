"""The training loop: one jit call runs a chunk of updates with ``lax.scan`` (batch sampling included), ``vmap`` trains
several seeds as one program, and Python only runs between chunks (progress bar, evaluation, checkpoints).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from fqlcore import data, runlock


def make_chunk(agent, batch_size: int, num_updates: int, sample=data.sample):
    """A pure function (state, key, dataset) -> (state, key, mean metrics) that runs ``num_updates`` updates.

    ``sample(dataset, key, batch_size) -> batch`` draws each batch inside jit; pixel tasks pass
    ``functools.partial(pixels.sample, frame_stack=3, p_aug=0.5)``.
    """

    def chunk(state, key, dataset):
        def body(carry, _):
            state, key = carry
            key, batch_key = jax.random.split(key)
            state, metrics = agent.update(state, sample(dataset, batch_key, batch_size))
            return (state, key), metrics

        (state, key), metrics = jax.lax.scan(body, (state, key), None, length=num_updates)
        return state, key, jax.tree.map(jnp.mean, metrics)

    return chunk


def compile_chunk(agent, batch_size: int, num_updates: int, sample=data.sample, seeds: int = 1):
    """``make_chunk`` jitted for states stacked along a seed axis: vmapped over seeds, or, for one seed, run on the seed
    itself (on a CPU a vmap of size 1 turns every matmul into a slower batched one)."""
    chunk = make_chunk(agent, batch_size, num_updates, sample)
    if seeds > 1:
        return jax.jit(jax.vmap(chunk, in_axes=(0, 0, None)))

    def one_seed(states, keys, dataset):
        state, key, metrics = chunk(seed_slice(states, 0), keys[0], dataset)
        return jax.tree.map(lambda x: x[None], (state, key, metrics))

    return jax.jit(one_seed)


def init_seeds(agent, config, dataset: data.Dataset, seeds: int, seed: int = 0, batch_size: int = 256,
               sample=data.sample):
    """Initial agent states and data keys for ``seeds`` independent runs, stacked along a leading seed axis."""
    example = sample(dataset, jax.random.PRNGKey(0), batch_size)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    init_keys, data_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    states = jax.vmap(lambda k: agent.init(k, example, config))(init_keys)
    return shard_seeds(states), shard_seeds(data_keys)


def shard_seeds(tree):
    """Spreads the seed axis over all local devices (e.g. 8 seeds on 8 GPUs); a no-op on one device."""
    devices = jax.local_devices()
    leading = {x.shape[0] for x in jax.tree.leaves(tree)}
    if len(devices) == 1 or len(leading) != 1 or leading.pop() % len(devices):
        return tree
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(devices, ("seeds",)), jax.sharding.PartitionSpec("seeds"))
    return jax.device_put(tree, sharding)


def seed_slice(tree, i: int):
    """Seed ``i`` of a tree stacked along the seed axis (e.g. one agent state out of ``TrainResult.states``)."""
    return jax.tree.map(lambda x: x[i], tree)


@dataclasses.dataclass
class TrainResult:
    states: object  # agent states with a leading seed axis
    history: list  # one dict per (chunk or evaluation, seed): {"step", "seed", metric: value, ...}
    compile_seconds: float = 0.0  # of the wall-clock time, what XLA spent compiling the chunks

    def state(self, seed: int = 0):
        return seed_slice(self.states, seed)

    def metric(self, name: str, seed: int = 0):
        """(steps, values) of one logged metric for one seed."""
        rows = [r for r in self.history if r["seed"] == seed and name in r]
        return np.array([r["step"] for r in rows]), np.array([r[name] for r in rows])


CHECKPOINT = "checkpoint.npz"


def _leaves_by_path(tree) -> dict:
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def save_checkpoint(directory, states, keys, step: int, history: list, config, run: dict | None = None,
                    pending: dict | None = None) -> None:
    """Writes one .npz atomically (temporary file, then rename): arrays by tree path, plus JSON metadata (the step, the
    history, the config and ``run``, what defines the run). No pickle. ``pending`` maps the steps whose evaluations
    were still running to the states they evaluate, so that a resumed run evaluates them again."""
    os.makedirs(directory, exist_ok=True)
    arrays = {f"states{k}": np.asarray(v) for k, v in _leaves_by_path(states).items()}
    for at_step, at_states in (pending or {}).items():
        arrays.update({f"pending{at_step}{k}": np.asarray(v) for k, v in _leaves_by_path(at_states).items()})
    arrays["keys"] = np.asarray(jax.random.key_data(keys) if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys)
    meta = {"step": step, "history": history, "config": repr(config), "run": run or {},
            "pending": sorted(pending or {})}
    arrays["meta"] = np.array(json.dumps(meta))
    data.write_npz(os.path.join(directory, CHECKPOINT), arrays)


def load_checkpoint(directory, states_like, config, run: dict | None = None):
    """(states, keys, step, history, pending) as ``save_checkpoint`` wrote them, in the structure of ``states_like``;
    None when there is none. A checkpoint of another run (another config, or any field of ``run`` that differs) is
    refused, naming the field."""
    path = os.path.join(directory, CHECKPOINT)
    if not os.path.exists(path):
        return None
    fix = "use another checkpoint directory, or delete this one to start afresh"
    arrays = data.read_npz(path, "checkpoint", "delete it to start the run afresh")
    try:
        meta = json.loads(str(arrays.pop("meta")))
        step, history, saved_config, saved_run = int(meta["step"]), list(meta["history"]), meta["config"], meta["run"]
        pending_steps = [int(s) for s in meta.get("pending", [])]
        keys = arrays.pop("keys")
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"checkpoint {path!r} has missing or unreadable metadata (written by an older fqlcore, or "
                         f"damaged); {fix}") from None
    if saved_config != repr(config):
        theirs, ours = _fields_of(saved_config), _fields_of(repr(config))
        changed = [f"{k} is {theirs.get(k, '(absent)')} there, {ours.get(k, '(absent)')} here"
                   for k in dict.fromkeys([*theirs, *ours]) if theirs.get(k) != ours.get(k)]
        raise ValueError(f"checkpoint {path!r} was written with another config ({'; '.join(changed) or saved_config}); "
                         f"{fix}")
    for name, value in (run or {}).items():
        if saved_run.get(name) != value:
            raise ValueError(f"checkpoint {path!r} belongs to another run: its {name} is {saved_run.get(name)!r}, this "
                             f"run's is {value!r}; {fix}")
    expected = _leaves_by_path(states_like)

    def restore(prefix):
        leaves = []
        for name, like in expected.items():
            saved = arrays.get(f"{prefix}{name}")
            if saved is None or saved.shape != like.shape:
                raise ValueError(f"checkpoint {path!r} does not match this run at {name} (a different number of seeds "
                                 "or network sizes?); use another checkpoint directory")
            leaves.append(jnp.asarray(saved, like.dtype))
        return jax.tree.unflatten(jax.tree.structure(states_like), leaves)

    pending = {at_step: restore(f"pending{at_step}") for at_step in pending_steps}
    return restore("states"), jnp.asarray(keys), step, history, pending


def _as_future(evaluate, state, seed) -> concurrent.futures.Future:
    """``evaluate``'s result as a future: a dict becomes one that is already done."""
    result = evaluate(state, seed)
    if isinstance(result, concurrent.futures.Future):
        return result
    done = concurrent.futures.Future()
    done.set_result(result)
    return done


def _fields_of(config_repr: str) -> dict:
    """``{"alpha": "10.0", ...}`` from a dataclass repr such as ``Config(alpha=10.0, hidden_dims=(64, 64))``."""
    body = config_repr[config_repr.find("(") + 1: config_repr.rfind(")")]
    fields, depth, start = {}, 0, 0
    for i, ch in enumerate(body + ","):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            name, _, value = body[start:i].strip().partition("=")
            if name:
                fields[name] = value
            start = i + 1
    return fields


def _check_finite(metrics: dict, step: int, checkpoint_dir):
    bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
    if bad:
        saved = checkpoint_dir is not None and os.path.exists(os.path.join(checkpoint_dir, CHECKPOINT))
        where = f"; the last good checkpoint is in {checkpoint_dir!r}" if saved else ""
        raise FloatingPointError(f"training diverged before step {step}: {', '.join(bad)} became NaN or inf{where}. "
                                 "The dataset's fields were checked as finite when loaded, so look at their scale (huge "
                                 "rewards or observations), then lower alpha or the learning rate.")


def train(agent, config, dataset: data.Dataset, steps: int, *, seeds: int = 1, seed: int = 0, batch_size: int = 256,
          chunk_size: int = 1000, evaluate: Callable | None = None, eval_every: int | None = None,
          checkpoint_dir: str | None = None, progress: bool = True, sample=data.sample,
          run_info: dict | None = None) -> TrainResult:
    """Trains ``seeds`` independent agents for ``steps`` updates each.

    ``evaluate(state, seed) -> dict`` is called for every seed at step 0 and every ``eval_every`` steps. It may return a
    ``concurrent.futures.Future`` of that dict instead (an evaluation in another process): training goes on while it
    runs, its results join the history when done, and the run waits for the last ones before it returns. With
    ``checkpoint_dir``, a checkpoint is written after every chunk and its evaluations, so a run stopped anywhere (a
    crash, Ctrl-C) loses at most one chunk and, run again, resumes and ends bitwise equal (on CPU) to an uninterrupted
    one. The directory is locked while the run writes it, and a checkpoint resumes only the run that wrote it: the same
    config, seeds, seed, batch size, steps, dataset (by fingerprint) and ``run_info`` (e.g. the results file).
    """
    if steps <= 0 or seeds <= 0 or batch_size <= 0 or chunk_size <= 0:
        raise ValueError(f"steps, seeds, batch_size and chunk_size must be positive, got {steps}, {seeds}, "
                         f"{batch_size}, {chunk_size}")
    if eval_every is not None and eval_every <= 0:
        raise ValueError(f"eval_every must be positive (or None: never), got {eval_every}")
    if checkpoint_dir is None:
        return _train(agent, config, dataset, steps, seeds, seed, batch_size, chunk_size, evaluate, eval_every, None,
                      progress, sample, None)
    run = {"seed": seed, "seeds": seeds, "batch_size": batch_size, "steps": steps,
           "dataset": data.fingerprint(dataset), **(run_info or {})}
    with runlock.hold(checkpoint_dir, "checkpoint directory"):
        return _train(agent, config, dataset, steps, seeds, seed, batch_size, chunk_size, evaluate, eval_every,
                      checkpoint_dir, progress, sample, run)


def _train(agent, config, dataset, steps, seeds, seed, batch_size, chunk_size, evaluate, eval_every, checkpoint_dir,
           progress, sample, run) -> TrainResult:
    if eval_every is not None:
        chunk_size = math.gcd(chunk_size, eval_every)  # a chunk never runs past an evaluation
    states, keys = init_seeds(agent, config, dataset, seeds, seed, batch_size, sample)
    step, history, restored_pending = 0, [], {}
    if checkpoint_dir is not None:
        restored = load_checkpoint(checkpoint_dir, states, config, run)
        if restored is not None:
            states, keys, step, history, restored_pending = restored
    pending = {}  # step -> (the states it evaluates, one future per seed); kept in checkpoints until every one is done

    def start_evaluation(at_step, at_states):
        pending[at_step] = at_states, [_as_future(evaluate, seed_slice(at_states, i), i) for i in range(seeds)]
        collect()

    def collect(wait=False):
        """Moves finished evaluations into the history, in step order (waiting for all of them with ``wait``)."""
        for at_step in sorted(pending):
            futures = pending[at_step][1]
            if wait:
                concurrent.futures.wait(futures)
            if not all(f.done() for f in futures):
                break
            history.extend({"step": at_step, "seed": i, **{k: float(v) for k, v in f.result().items()}}
                           for i, f in enumerate(futures))
            del pending[at_step]

    def checkpoint():
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, states, keys, step, history, config, run,
                            {s: at_states for s, (at_states, _) in pending.items()})

    for at_step, at_states in sorted(restored_pending.items()):  # stopped while evaluating: evaluate again
        start_evaluation(at_step, at_states)
    if evaluate is not None and step == 0 and not any(r["step"] == 0 for r in history) and 0 not in pending:
        start_evaluation(0, states)
    chunks, compile_seconds = {}, 0.0
    bar = tqdm(total=steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    try:
        while step < steps:
            n = min(chunk_size, steps - step)
            if n not in chunks:  # compiled ahead of the call, so that its time is known
                started = time.perf_counter()
                chunks[n] = compile_chunk(agent, batch_size, n, sample, seeds).lower(states, keys, dataset).compile()
                compile_seconds += time.perf_counter() - started
            new_states, new_keys, metrics = chunks[n](states, keys, dataset)
            metrics = jax.device_get(metrics)
            _check_finite(metrics, step + n, checkpoint_dir)
            states, keys, step = new_states, new_keys, step + n
            history.extend({"step": step, "seed": i, **{k: float(v[i]) for k, v in metrics.items()}} for i in range(seeds))
            if evaluate is not None and eval_every is not None and step % eval_every == 0:
                start_evaluation(step, states)
            collect()
            checkpoint()
            bar.update(n)
            bar.set_postfix({k: f"{float(np.mean(v)):.3g}" for k, v in list(metrics.items())[:3]})
        if pending:
            collect(wait=True)
            checkpoint()
    except KeyboardInterrupt:
        if checkpoint_dir is not None:
            print(f"\ninterrupted: the last finished chunk is saved in {checkpoint_dir!r}; run again to resume",
                  file=sys.stderr)
        raise
    finally:
        bar.close()
    return TrainResult(states, history, compile_seconds)

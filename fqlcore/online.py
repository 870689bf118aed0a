"""Offline-to-online fine-tuning, as the book's appendix (``book/method.md``, A.7) pins it and the paper's public code
(``main.py``) runs it.

After offline training the agent keeps training while it acts: ONE environment step per gradient step, acting with the
agent's exploration policy (``exploration_policy``: FQL's stochastic one-step policy; ReBRAC's and IQL's noisy
actions), with the same losses and alpha. ``mask = 1 - terminated``; an episode ends on terminated or truncated and the
environment is reset; rewards go through the same ``reward_fn`` as the offline data (D4RL antmaze: r - 1,
``fqlcore.envs.d4rl.reward_transform``).

The replay buffer is the public code's (``ReplayBuffer.create_from_initial_dataset`` without balanced sampling): ONE
buffer of ``max(buffer_size, N + 1)`` rows (``buffer_size`` = 2M, N = offline transitions) that starts as the offline
dataset, with a pointer at row N. Each transition is written at the pointer, the pointer moves to ``(pointer + 1) %
rows`` and ``size = max(pointer, size)``; batches are drawn uniformly from rows ``[0, size)``, offline and online alike.
So once the offline rows plus the online steps exceed the buffer, online transitions overwrite the oldest offline rows
(row 0 first), and the buffer's last row, written when the pointer wraps, is never sampled (``size`` stops at
``rows - 1``). A ``buffer_size`` of at least N + steps + 1 never wraps: every row is kept and sampled.

Per step, the host steps the environment and two jitted calls do the rest: one writes the transition into the buffer
in place (donated), the other samples a batch from it, updates, and chooses the next action with the updated agent.
Only the action comes back to the host. (In one call, XLA on a CPU copied the buffer's arrays every step:
``python benchmarks/online_step.py`` times both with the 2M-row buffer and checks they end with the same parameters.)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from fqlcore import data, runlock, train

CHECKPOINT = "online_checkpoint.npz"
BUFFER_SIZE = 2_000_000  # main.py's --buffer_size


@flax.struct.dataclass
class Buffer(data.Dataset):
    """The paper's replay buffer: a ``data.Dataset`` (rows ``[0, size)`` are sampled) with the row the next transition
    is written to."""
    pointer: jax.Array  # () int32


def buffer(dataset: data.Dataset, buffer_size: int = BUFFER_SIZE) -> Buffer:
    """The public code's ``ReplayBuffer.create_from_initial_dataset(dataset, size=max(buffer_size, N + 1))``: the N
    valid rows of ``dataset`` followed by free ones, size = pointer = N."""
    if buffer_size <= 0:
        raise ValueError(f"buffer_size must be positive, got {buffer_size}")
    n = int(dataset.size)
    rows = max(buffer_size, n + 1)

    def grow(x):
        return jnp.zeros((rows,) + x.shape[1:], x.dtype).at[:n].set(x[:n])

    return Buffer(**{f: grow(getattr(dataset, f)) for f in data.FIELDS}, size=jnp.asarray(n, jnp.int32),
                  pointer=jnp.asarray(n, jnp.int32))


def add(buf: Buffer, transition: dict) -> Buffer:
    """The public code's ``ReplayBuffer.add_transition`` (runs inside jit): write at the pointer, move it one row (back
    to 0 past the last row), ``size = max(pointer, size)``."""
    i = buf.pointer
    written = {f: getattr(buf, f).at[i].set(jnp.asarray(transition[f], getattr(buf, f).dtype)) for f in data.FIELDS}
    pointer = (i + 1) % buf.capacity
    return buf.replace(**written, pointer=pointer, size=jnp.maximum(pointer, buf.size))


@dataclasses.dataclass
class OnlineResult:
    state: object  # the agent state after fine-tuning (one seed)
    dataset: Buffer  # the replay buffer: the offline rows, then the online transitions written over free and old rows
    history: list  # dicts {"step", "online_step", "seed", ...}: metric means, evaluations, finished episodes
    env_steps: int

    def metric(self, name: str):
        """(steps, values) of one logged metric (as ``train.TrainResult.metric``)."""
        rows = [r for r in self.history if name in r]
        return np.array([r["step"] for r in rows]), np.array([r[name] for r in rows])


def reset_seed(seed: int, episode: int) -> int:
    """The reset seed of online episode ``episode``: a function of (seed, episode) only."""
    return int(np.random.SeedSequence([seed, 2_000_003, episode]).generate_state(1)[0])


def exploration_policy(agent):
    """How ``agent`` acts while it fine-tunes: its ``explore`` where it has one, else its ``act``. The public code acts
    online at temperature 1 and evaluates at temperature 0: ReBRAC adds N(0, 0.2^2) noise clipped at 0.5 and IQL samples
    its N(mean, I) (both then clipped to [-1, 1]); FQL, IFQL, FAWAC and FBRAC are stochastic either way."""
    return getattr(agent, "explore", agent.act)


def make_learn(agent, batch_size: int):
    """(state, buffer, key, next_obs) -> (state, key, metrics, next action): updates on a uniform batch of the buffer's
    rows ``[0, size)``, then acts on ``next_obs`` (the observation after the step, or after the reset when the episode
    ended) with the updated agent's exploration policy (``exploration_policy``)."""
    explore = exploration_policy(agent)

    def learn(state, buf, key, next_obs):
        key, batch_key, act_key = jax.random.split(key, 3)
        state, metrics = agent.update(state, data.sample(buf, batch_key, batch_size))
        return state, key, metrics, explore(state, next_obs[None], act_key)[0]

    return learn


def make_step(agent, batch_size: int):
    """One online step as one function: (state, buffer, key, transition, next_obs) -> (state, buffer, key, metrics,
    next action). Writes the transition (``add``), then ``make_learn``'s update and action. A plain ``data.Dataset``
    is taken as a buffer whose pointer is its size. ``finetune`` runs the same two parts as two jitted calls."""
    learn = make_learn(agent, batch_size)

    def step(state, dataset, key, transition, next_obs):
        if not isinstance(dataset, Buffer):
            dataset = Buffer(**{f: getattr(dataset, f) for f in data.FIELDS}, size=dataset.size, pointer=dataset.size)
        dataset = add(dataset, transition)
        state, key, metrics, action = learn(state, dataset, key, next_obs)
        return state, dataset, key, metrics, action

    return step


_JITTED: dict = {}


def _jitted(agent, batch_size: int):
    """(act, write, learn) for ``finetune``, jitted once per (agent, batch size) and reused by later calls (seeds,
    resumed runs): ``make_step`` as two calls, the write (``add``), whose buffer is donated and so updated in place,
    then ``make_learn``. Keyed by the agent's identity, so any object with ``update`` and ``act`` works (a module, a
    ``types.SimpleNamespace``); the entry holds the agent, so its id is not reused."""
    key = (id(agent), batch_size)
    if key not in _JITTED:
        explore = exploration_policy(agent)
        act = jax.jit(lambda s, o, k: explore(s, o[None], k)[0])
        _JITTED[key] = agent, act, jax.jit(add, donate_argnums=(0,)), jax.jit(make_learn(agent, batch_size))
    return _JITTED[key][1:]


def _online_rows(buf: Buffer, env_steps: int) -> np.ndarray:
    """The rows that hold online transitions, oldest first: the last min(env_steps, rows) written, ending before the
    pointer."""
    m = min(env_steps, buf.capacity)
    return (int(buf.pointer) - m + np.arange(m)) % buf.capacity


def _save(directory, state, buf: Buffer, env_steps: int, key, meta: dict) -> None:
    """One .npz, written atomically: agent state leaves by tree path, the buffer rows that hold online transitions
    (oldest first), the key, JSON metadata (with the buffer's pointer and size)."""
    os.makedirs(directory, exist_ok=True)
    arrays = {f"state{k}": np.asarray(v) for k, v in train._leaves_by_path(state).items()}
    rows = _online_rows(buf, env_steps)
    arrays.update({f"data/{f}": np.asarray(getattr(buf, f)[rows]) for f in data.FIELDS})
    arrays["key"] = np.asarray(key)
    arrays["meta"] = np.array(json.dumps({**meta, "pointer": int(buf.pointer), "size": int(buf.size)}))
    data.write_npz(os.path.join(directory, CHECKPOINT), arrays)


def _load(directory, state_like, buf: Buffer, check: dict):
    """(state, buffer, key, meta) from a checkpoint, the online rows written back over the fresh ``buf`` (the offline
    dataset as ``buffer`` makes it); None if there is none."""
    path = os.path.join(directory, CHECKPOINT)
    if not os.path.exists(path):
        return None
    arrays = data.read_npz(path, "online checkpoint", "delete it to start fine-tuning afresh")
    meta = json.loads(str(arrays.pop("meta")))
    for name, value in check.items():
        if meta["check"].get(name) != value:
            raise ValueError(f"online checkpoint {path!r} belongs to another run ({name}: {meta['check'].get(name)!r}, "
                             f"not {value!r}); use another checkpoint directory, or delete it to start afresh")
    leaves = []
    for name, like in train._leaves_by_path(state_like).items():
        saved = arrays.get(f"state{name}")
        if saved is None or saved.shape != like.shape:
            raise ValueError(f"online checkpoint {path!r} does not match the agent at {name}; use another directory")
        leaves.append(jnp.asarray(saved, like.dtype))
    state = jax.tree.unflatten(jax.tree.structure(state_like), leaves)
    buf = buf.replace(pointer=jnp.asarray(meta["pointer"], jnp.int32), size=jnp.asarray(meta["size"], jnp.int32))
    rows = _online_rows(buf, meta["env_steps"])
    if len(arrays["data/actions"]) != len(rows):
        raise ValueError(f"online checkpoint {path!r} holds {len(arrays['data/actions'])} online rows, not the "
                         f"{len(rows)} its step count and buffer imply; delete it to start afresh")
    buf = buf.replace(**{f: getattr(buf, f).at[rows].set(jnp.asarray(arrays[f"data/{f}"], getattr(buf, f).dtype))
                         for f in data.FIELDS})
    return state, buf, jnp.asarray(arrays["key"]), meta


def finetune(agent, state, dataset: data.Dataset, env, steps: int, *, seed: int = 0, batch_size: int = 256,
             reward_fn: Callable | None = None, evaluate: Callable | None = None, eval_every: int | None = None,
             log_every: int = 1000, checkpoint_dir: str | None = None, checkpoint_every: int = 10_000,
             buffer_size: int = BUFFER_SIZE, progress: bool = True) -> OnlineResult:
    """Fine-tunes one agent online for ``steps`` environment steps (one gradient step each).

    Args:
        agent: an agent module (``fqlcore.agents.fql``): ``update`` and ``act`` are used.
        state: the agent state after offline training (one seed, e.g. ``TrainResult.state(0)``).
        dataset: the offline dataset (its valid rows; free rows, if it has any, are not used). It is copied once
            into the replay buffer (``buffer``), whose arrays are updated in place (donated) step after step and
            returned in the result; the caller's dataset stays as it was.
        env: a gymnasium environment, or a zero-argument function that makes one. Its observations must have the
            dataset's shape (``fqlcore.envs.d4rl.make_env`` flattens AntMaze's goal dictionaries like its data).
        steps: environment steps (= gradient steps) to run.
        seed: seeds the action noise and the resets (episode i is reset with ``reset_seed(seed, i)``).
        batch_size: as offline (256 in the paper).
        reward_fn: maps the environment's reward to the stored one (the offline data's convention, e.g.
            ``d4rl.reward_transform("antmaze")``: r - 1); None keeps it. Episode returns are logged unchanged.
        evaluate: ``evaluate(state) -> dict`` (e.g. ``fqlcore.evaluate.evaluate`` with ``act``), called at online step 0
            (the offline policy) and every ``eval_every`` steps.
        log_every: steps between rows of mean losses in the history (and NaN checks).
        checkpoint_dir: with it, a checkpoint is written atomically every ``checkpoint_every`` steps, after every
            evaluation and at the end: the agent state, the buffer rows that hold online transitions and the
            buffer's pointer and size, the environment step count,
            the key and the episode bookkeeping (no pickle). Run again with the same arguments to resume. The
            environment's own state cannot be saved: a resumed run starts a fresh episode (its reset seed continues
            the episode count), marks the last stored transition of the interrupted episode as an episode end
            (``terminals = 1``; its mask is untouched, it was no termination), and does not log that episode's return.
            So a resumed run continues the same buffer, agent and step count, but is not bitwise equal to an
            uninterrupted one.
        buffer_size: the replay buffer has ``max(buffer_size, N + 1)`` rows (the public code's ``--buffer_size``,
            2M); past them, online transitions overwrite the oldest rows (module docstring). At least N + steps + 1
            keeps every transition.
        progress: a progress bar.

    Returns an ``OnlineResult``: the state, the replay buffer (``Buffer``: the offline rows, the online transitions
    written over free rows and then over the oldest ones; ``size`` rows are sampled), and
    the history, whose ``step`` counts gradient steps in total (offline + online: 1M..2M in the paper) and
    ``online_step`` the environment steps; ``"seed"`` is ``seed`` so ``fqlcore.evaluate.per_seed_scores`` reads it.
    """
    import gymnasium

    if min(steps, batch_size, log_every, checkpoint_every, buffer_size) <= 0:
        raise ValueError(f"steps, batch_size, log_every, checkpoint_every and buffer_size must be positive, got "
                         f"{steps}, {batch_size}, {log_every}, {checkpoint_every}, {buffer_size}")
    if eval_every is not None and eval_every <= 0:
        raise ValueError(f"eval_every must be positive or None, got {eval_every}")
    env = env if isinstance(env, gymnasium.Env) else env()
    if tuple(env.observation_space.shape) != tuple(dataset.observation_shape):
        raise ValueError(f"the environment's observations {env.observation_space.shape} do not match the dataset's "
                         f"{dataset.observation_shape}")
    reward_fn = reward_fn or (lambda r: r)
    offline_size = int(dataset.size)
    check = {"config": repr(state.config), "offline_size": offline_size,
             "buffer_rows": max(buffer_size, offline_size + 1), "seed": seed, "batch_size": batch_size,
             "fingerprint": data.fingerprint(dataset, offline_size)}
    with runlock.hold(checkpoint_dir, "checkpoint directory") if checkpoint_dir else contextlib.nullcontext():
        dataset = buffer(dataset, buffer_size)  # a new array set, donated step by step
        key = jax.random.PRNGKey(seed)
        t, history, episodes, interrupted = 0, [], 0, False
        step_offset = int(state.step)
        if checkpoint_dir is not None:
            restored = _load(checkpoint_dir, state, dataset, check)
            if restored is not None:
                state, dataset, key, meta = restored
                t, history, episodes, step_offset = meta["env_steps"], meta["history"], meta["episodes"], meta["step_offset"]
                if meta["episode_length"] > 0:  # the stored episode ends where the checkpoint cut it
                    last = (int(dataset.pointer) - 1) % dataset.capacity
                    dataset = dataset.replace(terminals=dataset.terminals.at[last].set(1.0))
                    interrupted = True

        act, write, learn = _jitted(agent, batch_size)
        obs_dtype = np.dtype(dataset.observations.dtype)
        space = env.action_space
        bounded = isinstance(space, gymnasium.spaces.Box)

        def row(**values):
            return {"step": step_offset + t, "online_step": t, "seed": seed, **values}

        def checkpoint():
            if checkpoint_dir is not None:
                _save(checkpoint_dir, state, dataset, t, key,
                      {"check": check, "env_steps": t, "history": history, "episodes": episodes,
                       "episode_length": episode_length, "step_offset": step_offset})

        def run_evaluation():
            history.append(row(**{k: float(v) for k, v in evaluate(state).items()}))

        if evaluate is not None and t == 0:  # the offline policy (a checkpoint exists only after online steps)
            run_evaluation()
        obs, info = env.reset(seed=reset_seed(seed, episodes))
        obs = np.asarray(obs, obs_dtype)
        episode_return, episode_length = 0.0, 0
        key, act_key = jax.random.split(key)
        action = act(state, obs, act_key)
        pending = []  # per-step metrics, still on the device
        bar = tqdm(total=steps, initial=t, disable=not progress, unit="step", dynamic_ncols=True,
                   desc="fine-tuning" + (" (resumed: fresh episode)" if interrupted else ""))
        try:
            while t < steps:
                a = np.asarray(action, np.float32)
                if bounded:
                    a = np.clip(a, space.low, space.high).astype(np.float32)
                next_obs, reward, terminated, truncated, info = env.step(a)
                next_obs = np.asarray(next_obs, obs_dtype)
                episode_return += float(reward)
                episode_length += 1
                done = bool(terminated) or bool(truncated)
                transition = {"observations": obs, "actions": a, "rewards": np.float32(reward_fn(np.float32(reward))),
                              "next_observations": next_obs, "masks": np.float32(1.0 - float(terminated)),
                              "terminals": np.float32(done)}
                if done:
                    ended = {"episode_return": episode_return, "episode_length": episode_length}
                    if "success" in info:
                        ended["episode_success"] = float(info["success"])
                    episodes += 1
                    obs, info = env.reset(seed=reset_seed(seed, episodes))
                    obs = np.asarray(obs, obs_dtype)
                    episode_return, episode_length = 0.0, 0
                else:
                    obs = next_obs
                with warnings.catch_warnings():  # backends that cannot donate copy instead, and say so
                    warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")
                    dataset = write(dataset, transition)
                state, key, metrics, action = learn(state, dataset, key, obs)
                pending.append(metrics)
                t += 1
                if done:
                    history.append(row(**ended))
                if t % log_every == 0 or t == steps:
                    means = {k: float(np.mean(v)) for k, v in jax.device_get(jax.tree.map(lambda *x: jnp.stack(x),
                                                                                          *pending)).items()}
                    pending = []
                    train._check_finite(means, step_offset + t, checkpoint_dir)
                    history.append(row(**means))
                    bar.set_postfix({k: f"{v:.3g}" for k, v in list(means.items())[:3]})
                evaluated = evaluate is not None and eval_every is not None and t % eval_every == 0
                if evaluated:
                    run_evaluation()
                if evaluated or t % checkpoint_every == 0 or t == steps:
                    checkpoint()
                bar.update(1)
        except KeyboardInterrupt:
            if checkpoint_dir is not None:
                print(f"\ninterrupted: the last checkpoint is in {checkpoint_dir!r}; run again to resume (a fresh episode)")
            raise
        finally:
            bar.close()
        return OnlineResult(state=state, dataset=dataset, history=history, env_steps=t)

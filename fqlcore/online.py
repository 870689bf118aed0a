"""Offline-to-online fine-tuning, as ``METHOD.md`` pins it.

After offline training the agent keeps training while it acts: ONE environment step per gradient step, acting with the
agent's exploration policy (``exploration_policy``: FQL's stochastic one-step policy; ReBRAC's and IQL's noisy
actions), every transition appended to the SAME device-resident dataset (no separate buffer, no balanced sampling:
batches are drawn uniformly from offline and online rows alike), with the same losses and alpha.
``mask = 1 - terminated``; an episode ends on terminated or truncated and the environment is reset; rewards go
through the same ``reward_fn`` as the offline data (D4RL antmaze: r - 1, ``fqlcore.envs.d4rl.reward_transform``).

Per step, the host steps the environment and one jitted call does the rest: append the transition, sample a batch,
update, and choose the next action with the updated agent. Only the action comes back to the host.

The dataset needs free rows for the online transitions: load it with ``capacity = offline size + online steps``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from fqlcore import data, runlock, train

CHECKPOINT = "online_checkpoint.npz"


@dataclasses.dataclass
class OnlineResult:
    state: object  # the agent state after fine-tuning (one seed)
    dataset: data.Dataset  # the offline rows followed by every online transition
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


def make_step(agent, batch_size: int):
    """The jitted part of one online step: (state, dataset, key, transition, next_obs) -> (state, dataset, key,
    metrics, next action). Appends the transition, updates on a uniform batch of all rows, then acts on ``next_obs``
    (the observation after the step, or after the reset when the episode ended) with the updated agent's exploration
    policy (``exploration_policy``)."""
    explore = exploration_policy(agent)

    def step(state, dataset, key, transition, next_obs):
        dataset = data.append(dataset, transition)
        key, batch_key, act_key = jax.random.split(key, 3)
        state, metrics = agent.update(state, data.sample(dataset, batch_key, batch_size))
        action = explore(state, next_obs[None], act_key)[0]
        return state, dataset, key, metrics, action

    return step


_JITTED: dict = {}


def _jitted(agent, batch_size: int):
    """(act, step) jitted once per (agent, batch size) and reused by later calls (seeds, resumed runs)."""
    if (agent, batch_size) not in _JITTED:
        explore = exploration_policy(agent)
        act = jax.jit(lambda s, o, k: explore(s, o[None], k)[0])
        _JITTED[(agent, batch_size)] = act, jax.jit(make_step(agent, batch_size), donate_argnums=(1,))
    return _JITTED[(agent, batch_size)]


def _save(directory, state, dataset, offline_size: int, key, meta: dict) -> None:
    """One .npz, written atomically: agent state leaves by tree path, the appended rows, the key, JSON metadata."""
    os.makedirs(directory, exist_ok=True)
    n = int(dataset.size)
    arrays = {f"state{k}": np.asarray(v) for k, v in train._leaves_by_path(state).items()}
    arrays.update({f"data/{f}": np.asarray(getattr(dataset, f)[offline_size:n]) for f in data.FIELDS})
    arrays["key"] = np.asarray(key)
    arrays["meta"] = np.array(json.dumps(meta))
    data.write_npz(os.path.join(directory, CHECKPOINT), arrays)


def _load(directory, state_like, dataset: data.Dataset, offline_size: int, check: dict):
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
    n = len(arrays["data/actions"])
    if offline_size + n > dataset.capacity:
        raise ValueError(f"online checkpoint {path!r} holds {n} online transitions, more than the dataset has room for")
    dataset = dataset.replace(**{f: getattr(dataset, f).at[offline_size:offline_size + n].set(
        jnp.asarray(arrays[f"data/{f}"], getattr(dataset, f).dtype)) for f in data.FIELDS},
        size=jnp.asarray(offline_size + n, jnp.int32))
    return state, dataset, jnp.asarray(arrays["key"]), meta


def finetune(agent, state, dataset: data.Dataset, env, steps: int, *, seed: int = 0, batch_size: int = 256,
             reward_fn: Callable | None = None, evaluate: Callable | None = None, eval_every: int | None = None,
             log_every: int = 1000, checkpoint_dir: str | None = None, checkpoint_every: int = 10_000,
             progress: bool = True) -> OnlineResult:
    """Fine-tunes one agent online for ``steps`` environment steps (one gradient step each).

    Args:
        agent: an agent module (``fqlcore.agents.fql``): ``update`` and ``act`` are used.
        state: the agent state after offline training (one seed, e.g. ``TrainResult.state(0)``).
        dataset: the offline dataset with room for ``steps`` more rows (``capacity >= size + steps``). It is copied
            once; the copy's buffers are updated in place (donated) step after step and returned in the result.
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
            evaluation and at the end: the agent state, the appended rows of the dataset, the environment step count,
            the key and the episode bookkeeping (no pickle). Run again with the same arguments to resume. The
            environment's own state cannot be saved: a resumed run starts a fresh episode (its reset seed continues
            the episode count), marks the last stored transition of the interrupted episode as an episode end
            (``terminals = 1``; its mask is untouched, it was no termination), and does not log that episode's return.
            So a resumed run continues the same dataset, agent and step count, but is not bitwise equal to an
            uninterrupted one.
        progress: a progress bar.

    Returns an ``OnlineResult``: the state, the dataset (offline rows, then exactly ``steps`` online transitions), and
    the history, whose ``step`` counts gradient steps in total (offline + online: 1M..2M in the paper) and
    ``online_step`` the environment steps; ``"seed"`` is ``seed`` so ``fqlcore.evaluate.per_seed_scores`` reads it.
    """
    import gymnasium

    if steps <= 0 or batch_size <= 0 or log_every <= 0 or checkpoint_every <= 0:
        raise ValueError(f"steps, batch_size, log_every and checkpoint_every must be positive, got {steps}, "
                         f"{batch_size}, {log_every}, {checkpoint_every}")
    if eval_every is not None and eval_every <= 0:
        raise ValueError(f"eval_every must be positive or None, got {eval_every}")
    env = env if isinstance(env, gymnasium.Env) else env()
    if tuple(env.observation_space.shape) != tuple(dataset.observation_shape):
        raise ValueError(f"the environment's observations {env.observation_space.shape} do not match the dataset's "
                         f"{dataset.observation_shape}")
    reward_fn = reward_fn or (lambda r: r)
    offline_size = int(dataset.size)
    if dataset.capacity < offline_size + steps:
        raise ValueError(f"the dataset has {dataset.capacity - offline_size} free rows but {steps} online steps need one "
                         f"each: load it with capacity={offline_size + steps} (offline size + online steps)")
    check = {"config": repr(state.config), "offline_size": offline_size, "capacity": dataset.capacity, "seed": seed,
             "batch_size": batch_size, "fingerprint": data.fingerprint(dataset, offline_size)}
    with runlock.hold(checkpoint_dir, "checkpoint directory") if checkpoint_dir else contextlib.nullcontext():
        dataset = jax.tree.map(jnp.copy, dataset)  # the caller's dataset stays valid; this copy is donated step by step
        key = jax.random.PRNGKey(seed)
        t, history, episodes, interrupted = 0, [], 0, False
        step_offset = int(state.step)
        if checkpoint_dir is not None:
            restored = _load(checkpoint_dir, state, dataset, offline_size, check)
            if restored is not None:
                state, dataset, key, meta = restored
                t, history, episodes, step_offset = meta["env_steps"], meta["history"], meta["episodes"], meta["step_offset"]
                if meta["episode_length"] > 0:  # the stored episode ends where the checkpoint cut it
                    dataset = dataset.replace(terminals=dataset.terminals.at[offline_size + t - 1].set(1.0))
                    interrupted = True
        if int(dataset.size) != offline_size + t:
            raise ValueError(f"internal error: {int(dataset.size)} rows after {t} online steps from {offline_size}")

        act, step_fn = _jitted(agent, batch_size)
        obs_dtype = np.dtype(dataset.observations.dtype)
        space = env.action_space
        bounded = isinstance(space, gymnasium.spaces.Box)

        def row(**values):
            return {"step": step_offset + t, "online_step": t, "seed": seed, **values}

        def checkpoint():
            if checkpoint_dir is not None:
                _save(checkpoint_dir, state, dataset, offline_size, key,
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
                    state, dataset, key, metrics, action = step_fn(state, dataset, key, transition, obs)
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

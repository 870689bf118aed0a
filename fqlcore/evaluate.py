"""Evaluation: run a policy for N episodes, and turn evaluations into the number a paper reports.

``evaluate(act_fn, env_fn)`` runs ``num_episodes`` episodes, in ``workers`` processes at once (gymnasium's
``AsyncVectorEnv``), with ONE batched policy call per step for all environments. The success of an episode is
``info["success"]`` at its last step; the score is the mean over episodes. Episode i is reset with a seed derived from
(seed, i) alone, so with a deterministic policy the result does not depend on ``workers``; a stochastic policy (FQL
samples fresh noise per step) draws its noise for the whole batch, so its episodes do depend on how they are batched.

``reported_score`` and ``summarize`` implement the protocol of the book's appendix (``book/method.md``, A.5): the
reported number of a run is the mean of its evaluations at fixed steps (800K, 900K and 1M for OGBench state tasks),
never the best one; a table cell is the mean and standard deviation over seeds, and a category averages its tasks
within each seed first; ``bootstrap_ci`` gives the interval the paper's learning curves shade.
"""
from __future__ import annotations

import atexit
import dataclasses
from typing import Callable, Iterable, Mapping

import numpy as np

OGBENCH_STATE_STEPS = (800_000, 900_000, 1_000_000)
OGBENCH_PIXEL_STEPS = (300_000, 400_000, 500_000)
D4RL_STEPS = (500_000,)

try:
    from gymnasium import Wrapper as _Wrapper
except ImportError:  # gymnasium missing: evaluate() will say so
    _Wrapper = object


class _RecordFrames(_Wrapper):
    """Puts a rendered frame into ``info["frame"]`` at reset and after every step of an episode that is recorded.

    Whether the next episode is recorded is the attribute ``record_next``, read at reset (set it with
    ``VectorEnv.set_attr`` before resetting).
    """

    def __init__(self, env):
        super().__init__(env)
        self.record_next = False
        self._recording = False

    def _frame(self):
        return np.asarray(self.env.unwrapped.render(), dtype=np.uint8)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._recording = bool(self.record_next)
        if self._recording:
            info = dict(info, frame=self._frame())
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._recording:
            info = dict(info, frame=self._frame())
        return obs, reward, terminated, truncated, info


class _EnvFn:
    """Picklable: makes ``env_fn()`` wrapped for frame recording (runs in the worker process)."""

    def __init__(self, env_fn: Callable):
        self.env_fn = env_fn

    def __call__(self):
        import warnings

        warnings.filterwarnings("ignore", message=".*precision lowered.*")  # ogbench's Box bounds are float64
        return _RecordFrames(self.env_fn())


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of evaluation episode ``episode``: depends on (seed, episode) only, not on the workers."""
    return int(np.random.SeedSequence([seed, 1_000_003, episode]).generate_state(1)[0])


def _policy_input(obs):
    obs = np.asarray(obs)
    return obs.astype(np.float32) if obs.dtype == np.float64 else obs


def evaluate(act_fn: Callable, env_fn: Callable, num_episodes: int = 50, seed: int = 0, workers: int = 1,
             record_frames: int = 0, *, details: bool = False, context: str = "spawn") -> dict:
    """Runs ``num_episodes`` episodes of a policy; returns the means of success, return and length.

    Args:
        act_fn: ``act_fn(observations, key) -> actions`` for a batch of observations (one row per environment) and a
            JAX PRNG key, e.g. ``jax.jit(lambda o, k: fql.act(state, o, k))``. Actions are clipped to the action space.
        env_fn: a zero-argument function that makes one environment, e.g. ``fqlcore.envs.ogbench.make_env_fn(name)``.
            With ``workers > 1`` it runs in other processes, so it must be picklable (cloudpickle: lambdas and
            ``functools.partial`` work).
        num_episodes: episodes; the score is their mean (50 in the paper).
        seed: seeds the environments (episode i from (seed, i)) and the policy's keys.
        workers: environments stepped in parallel, each in its own process (``AsyncVectorEnv``); 1 runs in this
            process. All environments share one ``act_fn`` call per step.
        record_frames: render the first ``record_frames`` episodes (``env.unwrapped.render()`` after reset and every
            step) and return them under ``"frames"``: a list of uint8 arrays (T + 1, H, W, 3).
        details: also return per-episode arrays under ``"episodes"``.
        context: multiprocessing start method of the workers ("spawn" is safe once JAX has started threads).

    Returns ``{"success", "return", "length"}`` (floats; success of an episode = ``info["success"]`` at its last
    step), plus ``"frames"`` when ``record_frames > 0`` and ``"episodes"`` when ``details``.
    """
    import gymnasium
    import jax
    from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

    if num_episodes < 1:
        raise ValueError(f"num_episodes must be at least 1, got {num_episodes}")
    num_envs = max(1, min(int(workers), num_episodes))
    cache_key = (env_fn, num_envs, context)
    if _open_envs.get("key") != cache_key:  # starting worker processes costs seconds: reuse the last vector env
        _close_open_envs()
        fns = [_EnvFn(env_fn) for _ in range(num_envs)]
        if num_envs == 1:
            envs = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)
        else:
            envs = AsyncVectorEnv(fns, context=context, autoreset_mode=AutoresetMode.DISABLED)
        _open_envs.update(key=cache_key, envs=envs)
    envs = _open_envs["envs"]
    try:
        space = envs.single_action_space
        bounded = isinstance(space, gymnasium.spaces.Box)
        returns = np.zeros(num_episodes)
        lengths = np.zeros(num_episodes, np.int64)
        successes = np.zeros(num_episodes)
        frames = {e: [] for e in range(min(record_frames, num_episodes))}
        slot = np.arange(num_envs)  # the episode each environment runs; -1 when it only idles
        next_episode = num_envs

        def reset(mask):
            """Resets the environments in ``mask`` (those with an episode to run get its seed)."""
            seeds = [episode_seed(seed, int(e)) if (m and e >= 0) else None for m, e in zip(mask, slot)]
            envs.set_attr("record_next", [bool(m and e in frames) for m, e in zip(mask, slot)])
            obs, info = envs.reset(seed=seeds, options=None if mask.all() else {"reset_mask": np.asarray(mask, bool)})
            for j in np.flatnonzero(mask):
                if slot[j] in frames:
                    frames[slot[j]].append(info["frame"][j])
            return obs

        obs = reset(np.ones(num_envs, bool))
        key = jax.random.PRNGKey(seed)
        while (slot >= 0).any():
            key, act_key = jax.random.split(key)
            actions = np.asarray(act_fn(_policy_input(obs), act_key))
            if bounded:
                actions = np.clip(actions, space.low, space.high)
            obs, reward, terminated, truncated, info = envs.step(actions)
            ended = np.asarray(terminated) | np.asarray(truncated)
            for j in np.flatnonzero(slot >= 0):
                e = slot[j]
                returns[e] += float(reward[j])
                lengths[e] += 1
                if e in frames:
                    frames[e].append(info["frame"][j])
                if ended[j]:
                    if "success" not in info or not info.get("_success", np.ones(num_envs, bool))[j]:
                        raise KeyError("the environment's info has no 'success' at the last step of an episode: "
                                       "evaluate() needs OGBench-style environments that report success")
                    successes[e] = float(info["success"][j])
                    slot[j] = next_episode if next_episode < num_episodes else -1
                    next_episode += 1
            if ended.any() and (slot >= 0).any():
                obs = reset(ended)  # idle environments are reset too: a vector env steps all of them
        result = {"success": float(successes.mean()), "return": float(returns.mean()), "length": float(lengths.mean())}
        if record_frames > 0:
            result["frames"] = [np.stack(frames[e]) for e in sorted(frames)]
        if details:
            result["episodes"] = {"success": successes, "return": returns, "length": lengths}
        return result
    except BaseException:
        _close_open_envs()  # an environment may be mid-episode or broken: never reuse it
        raise


_open_envs: dict = {}  # the vector env of the last evaluate() call, kept for the next call with the same env_fn


def _close_open_envs():
    envs = _open_envs.pop("envs", None)
    _open_envs.pop("key", None)
    if envs is not None:
        envs.close()


atexit.register(_close_open_envs)


# ----------------------------------------------------------------------------------------------------------------
# The reported number
# ----------------------------------------------------------------------------------------------------------------

def per_seed_scores(eval_rows: Iterable[Mapping], steps=OGBENCH_STATE_STEPS, metric: str = "success") -> dict:
    """{seed: mean of ``metric`` over the evaluations at exactly ``steps``} from rows like ``TrainResult.history``
    (dicts with "step", optionally "seed", and the metric; rows without the metric, e.g. loss logs, are ignored).

    Raises ValueError when an evaluation at one of ``steps`` is missing or duplicated: never falls back to others.
    """
    steps = tuple(int(s) for s in steps)
    if not steps:
        raise ValueError("steps is empty: name the evaluation steps whose mean is reported")
    found: dict = {}
    for row in eval_rows:
        if metric not in row:
            continue
        s = int(row["step"])
        if s not in steps:
            continue
        key = (row.get("seed", 0), s)
        if key in found:
            raise ValueError(f"two evaluations of {metric!r} at step {s} for seed {key[0]}; expected exactly one")
        found[key] = float(row[metric])
    seeds = sorted({seed for seed, _ in found}) or [0]
    scores = {}
    for seed in seeds:
        missing = [s for s in steps if (seed, s) not in found]
        if missing:
            raise ValueError(f"seed {seed} has no evaluation of {metric!r} at steps {missing}; the reported number is the "
                             f"mean at exactly {list(steps)} (never the best evaluation): train to the last step and "
                             "evaluate at each of them")
        scores[seed] = float(np.mean([found[(seed, s)] for s in steps]))
    return scores


def reported_score(eval_rows: Iterable[Mapping], steps=OGBENCH_STATE_STEPS, metric: str = "success") -> float:
    """The reported number of ONE run: the mean of its evaluations at ``steps`` (800K, 900K and 1M by default;
    ``OGBENCH_PIXEL_STEPS`` for pixel tasks, ``D4RL_STEPS`` for D4RL). For several seeds use ``per_seed_scores``."""
    scores = per_seed_scores(list(eval_rows), steps, metric)
    if len(scores) != 1:
        raise ValueError(f"the rows hold {len(scores)} seeds ({sorted(scores)}); reported_score is for one run: use "
                         "per_seed_scores, then summarize")
    return next(iter(scores.values()))


@dataclasses.dataclass(frozen=True)
class Summary:
    mean: float
    std: float
    num_seeds: int

    def format(self, scale: float = 100.0, digits: int = 0) -> str:
        """e.g. ``'73 ± 5'`` for success rates shown in percent, as the paper's tables."""
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"

    def __str__(self) -> str:
        return self.format(scale=1.0, digits=3)


def summarize(per_seed_scores, ddof: int = 0) -> Summary:
    """Mean ± standard deviation over seeds.

    ``per_seed_scores`` is one score per seed (a sequence, or a dict {seed: score}) for a table cell; or, for a
    category, one row per task: a 2-D array (tasks, seeds) or a dict {task: per-seed scores}. Tasks are then averaged
    within each seed FIRST, and the mean and std are taken over the per-seed averages. ``ddof=0``: numpy's
    default (population) standard deviation.
    """
    scores = per_seed_scores
    if isinstance(scores, Mapping):
        values = list(scores.values())
        if values and isinstance(values[0], Mapping):  # a category: {task: {seed: score}}
            seeds = sorted(values[0])
            if any(sorted(v) != seeds for v in values):
                raise ValueError(f"the tasks of a category must have the same seeds, got {[sorted(v) for v in values]}")
            scores = np.asarray([[v[s] for s in seeds] for v in values], float)
        elif values and np.ndim(values[0]) > 0:  # a category: {task: [per-seed scores]}
            scores = np.asarray([list(v) for v in values], float)
        else:
            scores = np.asarray(values, float)
    scores = np.asarray(scores, float)
    if scores.ndim == 2:
        scores = scores.mean(axis=0)  # average the tasks of each seed first
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"expected per-seed scores (seeds,) or a category (tasks, seeds), got shape {scores.shape}")
    return Summary(mean=float(scores.mean()), std=float(scores.std(ddof=ddof)), num_seeds=int(scores.size))


def bootstrap_ci(per_seed_scores, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple:
    """(low, high): the percentile bootstrap interval of the mean over seeds, as the paper's plots shade it. Seeds are
    resampled with replacement; with few seeds the interval is as narrow as the seeds happen to agree, so read it
    beside their number."""
    scores = np.asarray(list(per_seed_scores.values()) if isinstance(per_seed_scores, Mapping) else per_seed_scores,
                        dtype=float)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"expected one score per seed, got shape {scores.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    picks = np.random.default_rng(seed).integers(0, scores.size, (resamples, scores.size))
    means = scores[picks].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))

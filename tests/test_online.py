"""Offline-to-online fine-tuning: every environment step appends exactly one transition (the one the environment
returned, with the offline data's conventions) to the same dataset, and an interrupted run resumes where it stopped."""
import os
import warnings

import gymnasium
import jax
import numpy as np
import pytest

import minari  # noqa: F401  (make test installs every extra: a missing one fails, never skips)
pytest.importorskip("h5py")

from fqlcore import online, train  # noqa: E402
from fqlcore.agents import fql  # noqa: E402
from fqlcore.envs import d4rl  # noqa: E402
from test_d4rl import ANT_ENV, ANT_ID, collect  # noqa: E402

CONFIG = fql.Config(hidden_dims=(16, 16), alpha=10.0)
BATCH, OFFLINE_STEPS, ONLINE_STEPS = 32, 40, 90


class Recorder(gymnasium.Wrapper):
    """Records what the environment returned at every step, and can die after a number of steps (a crashed job)."""

    def __init__(self, env, die_after=None):
        super().__init__(env)
        self.steps, self.die_after, self.resets = [], die_after, 0

    def reset(self, **kwargs):
        self.obs, info = self.env.reset(**kwargs)
        self.resets += 1
        return self.obs, info

    def step(self, action):
        if self.die_after is not None and len(self.steps) >= self.die_after:
            raise RuntimeError("the job died")
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps.append(dict(obs=self.obs, action=np.array(action), reward=reward, terminated=terminated,
                               truncated=truncated, next_obs=next_obs))
        self.obs = next_obs
        return next_obs, reward, terminated, truncated, info


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """A local antmaze-like Minari dataset loaded with room for the online steps, and an agent trained on it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            collect(ANT_ID, ANT_ENV, 8)
        _, dataset, info = d4rl.load(ANT_ID, download=False, capacity=None)
        _, roomy, _ = d4rl.load(ANT_ID, download=False, capacity=int(dataset.size) + ONLINE_STEPS)
        # the agent as offline training leaves it (these tests are about the data and the loop, not the learning)
        state = fql.init(jax.random.PRNGKey(0), train.data.sample(roomy, jax.random.PRNGKey(1), BATCH), CONFIG)
        yield {"dataset": roomy, "info": info, "state": state.replace(step=state.step + OFFLINE_STEPS)}


def env_fn(die_after=None):
    return Recorder(d4rl.make_env(ANT_ID), die_after)


def finetune(offline, env, steps=ONLINE_STEPS, **kwargs):
    return online.finetune(fql, offline["state"], offline["dataset"], env, steps, seed=3, batch_size=BATCH,
                           reward_fn=d4rl.reward_transform(offline["info"]["kind"]), log_every=10, progress=False,
                           **kwargs)


def test_every_step_appends_the_transition_the_environment_returned(offline):
    env = env_fn()
    evaluations = []

    def evaluate(state):
        evaluations.append(int(state.step))
        return {"success": 0.5}

    result = finetune(offline, env, evaluate=evaluate, eval_every=30)
    n0 = int(offline["dataset"].size)
    size = int(result.dataset.size)
    assert size - n0 == ONLINE_STEPS == len(env.steps) == result.env_steps, "one row per environment step"
    ds = jax.tree.map(np.asarray, result.dataset)
    before = jax.tree.map(np.asarray, offline["dataset"])
    for f in ("observations", "actions", "rewards", "next_observations", "masks", "terminals"):
        np.testing.assert_array_equal(getattr(ds, f)[:n0], getattr(before, f)[:n0], err_msg=f"offline {f} changed")
    steps = env.steps
    np.testing.assert_allclose(ds.observations[n0:size], np.stack([s["obs"] for s in steps]), rtol=1e-6)
    np.testing.assert_allclose(ds.next_observations[n0:size], np.stack([s["next_obs"] for s in steps]), rtol=1e-6)
    np.testing.assert_array_equal(ds.actions[n0:size], np.stack([s["action"] for s in steps]))
    np.testing.assert_allclose(ds.rewards[n0:size], [s["reward"] - 1.0 for s in steps])  # antmaze: r - 1 online too
    np.testing.assert_array_equal(ds.masks[n0:size], [1.0 - s["terminated"] for s in steps])
    ends = [float(s["terminated"] or s["truncated"]) for s in steps]
    np.testing.assert_array_equal(ds.terminals[n0:size], ends)
    assert sum(ends) >= 3 and env.resets == sum(ends) + 1, "a reset after every episode end"
    assert (ds.next_observations[n0:size - 1][np.array(ends[:-1]) == 0] ==
            ds.observations[n0 + 1:size][np.array(ends[:-1]) == 0]).all(), "within an episode, s' is the next s"
    # the agent took one gradient step per environment step; evaluations at online steps 0, 30, 60, 90
    start = int(offline["state"].step)
    assert int(result.state.step) == start + ONLINE_STEPS
    assert evaluations == [start, start + 30, start + 60, start + 90]
    steps_, values = result.metric("success")
    assert list(steps_) == evaluations and np.all(values == 0.5)
    assert len(result.metric("episode_return")[0]) == sum(ends)
    assert len(result.metric("critic_loss")[0]) == ONLINE_STEPS // 10


def test_an_interrupted_run_resumes_where_it_stopped(offline, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(RuntimeError, match="died"):
        finetune(offline, env_fn(die_after=55), checkpoint_dir=ckpt, checkpoint_every=20)
    # what the checkpoint holds is what an uninterrupted run had after 40 steps
    reference = finetune(offline, env_fn(), steps=40)
    n0 = int(offline["dataset"].size)
    restored = online._load(ckpt, offline["state"], offline["dataset"], n0,
                            {"config": repr(CONFIG), "offline_size": n0})
    state, dataset, _, meta = restored
    assert meta["env_steps"] == 40 and int(dataset.size) == n0 + 40
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(reference.state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for f in ("observations", "actions", "rewards", "masks", "terminals"):
        np.testing.assert_allclose(np.asarray(getattr(dataset, f))[:n0 + 40],
                                   np.asarray(getattr(reference.dataset, f))[:n0 + 40], rtol=1e-6, err_msg=f)
    # run again: it continues from 40 to the end, in a fresh episode
    env = env_fn()
    resumed = finetune(offline, env, checkpoint_dir=ckpt, checkpoint_every=20)
    assert len(env.steps) == ONLINE_STEPS - 40 and resumed.env_steps == ONLINE_STEPS
    assert int(resumed.dataset.size) == n0 + ONLINE_STEPS
    assert int(resumed.state.step) == int(offline["state"].step) + ONLINE_STEPS
    ds = jax.tree.map(np.asarray, resumed.dataset)
    np.testing.assert_allclose(ds.observations[n0 + 40:n0 + ONLINE_STEPS], np.stack([s["obs"] for s in env.steps]),
                               rtol=1e-6)
    np.testing.assert_array_equal(ds.actions[n0 + 40:n0 + ONLINE_STEPS], np.stack([s["action"] for s in env.steps]))
    np.testing.assert_array_equal(ds.actions[:n0 + 40], np.asarray(reference.dataset.actions)[:n0 + 40])
    assert ds.terminals[n0 + 39] == 1.0, "the episode cut by the interruption ends in the stored data"
    assert ds.masks[n0 + 39] == np.asarray(reference.dataset.masks)[n0 + 39], "...but was no termination"
    assert [r["online_step"] for r in resumed.history if "critic_loss" in r] == list(range(10, ONLINE_STEPS + 1, 10))
    # a finished run, run again, does nothing more
    again = finetune(offline, env_fn(), checkpoint_dir=ckpt, checkpoint_every=20)
    assert again.env_steps == ONLINE_STEPS and int(again.dataset.size) == n0 + ONLINE_STEPS
    assert os.path.exists(os.path.join(ckpt, online.CHECKPOINT))


def test_clear_errors(offline, tmp_path):
    _, tight, _ = d4rl.load(ANT_ID, download=False)
    with pytest.raises(ValueError, match=r"capacity=\d+ \(offline size \+ online steps\)"):
        online.finetune(fql, offline["state"], tight, env_fn(), 10, batch_size=BATCH, progress=False)
    with pytest.raises(ValueError, match="observations"):
        online.finetune(fql, offline["state"], offline["dataset"], gymnasium.make("Pendulum-v1"), 10, progress=False)
    ckpt = str(tmp_path / "ckpt")
    finetune(offline, env_fn(), steps=10, checkpoint_dir=ckpt)
    with pytest.raises(ValueError, match="another run"):
        online.finetune(fql, offline["state"], offline["dataset"], env_fn(), 10, seed=4, batch_size=BATCH,
                        progress=False, checkpoint_dir=ckpt)

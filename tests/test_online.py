"""Offline-to-online fine-tuning: every environment step writes exactly one transition (the one the environment
returned, with the offline data's conventions) into the paper's replay buffer, at the row its public code writes it to,
and an interrupted run resumes where it stopped."""
import os
import types
import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import minari  # noqa: F401  (make test installs every extra: a missing one fails, never skips)
pytest.importorskip("h5py")

from fqlcore import data, online, train  # noqa: E402
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
    """A local antmaze-like Minari dataset, and an agent for it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            collect(ANT_ID, ANT_ENV, 8)
        _, dataset, info = d4rl.load(ANT_ID, download=False)
        # the agent as offline training leaves it (these tests are about the data and the loop, not the learning)
        state = fql.init(jax.random.PRNGKey(0), data.sample(dataset, jax.random.PRNGKey(1), BATCH), CONFIG)
        yield {"dataset": dataset, "info": info, "state": state.replace(step=state.step + OFFLINE_STEPS)}


def env_fn(die_after=None):
    return Recorder(d4rl.make_env(ANT_ID), die_after)


def finetune(offline, env, steps=ONLINE_STEPS, dataset=None, **kwargs):
    return online.finetune(fql, offline["state"], offline["dataset"] if dataset is None else dataset, env, steps,
                           seed=3, batch_size=BATCH, reward_fn=d4rl.reward_transform(offline["info"]["kind"]),
                           log_every=10, progress=False, **kwargs)


class PaperReplayBuffer:
    """The public code's replay buffer, transcribed on a Python list of row labels: main.py makes it with
    ``ReplayBuffer.create_from_initial_dataset(dict(train_dataset), size=max(FLAGS.buffer_size, train_dataset.size + 1))``
    and, without balanced sampling, samples its training batches from it; utils/datasets.py:

        create_from_initial_dataset: buffer[:len(init)] = init; size = pointer = len(init)
        add_transition:              buffer[pointer] = transition; pointer = (pointer + 1) % max_size;
                                     size = max(pointer, size)
        get_random_idxs:             np.random.randint(self.size, size=num_idxs)
    """

    def __init__(self, offline_labels, buffer_size):
        self.max_size = max(buffer_size, len(offline_labels) + 1)
        self.rows = list(offline_labels) + [None] * (self.max_size - len(offline_labels))
        self.size = self.pointer = len(offline_labels)

    def add_transition(self, label):
        self.rows[self.pointer] = label
        self.pointer = (self.pointer + 1) % self.max_size
        self.size = max(self.pointer, self.size)

    def sampled(self):
        return self.rows[:self.size]


def test_the_transcription_on_a_worked_example():
    """Offline 5 rows, buffer_size 7, 6 online steps, worked by hand: the pointer starts at row 5; on0 and on1 fill rows 5
    and 6, the pointer wraps, on2..on5 overwrite the 4 oldest offline rows; size stopped at 6 when the pointer wrapped,
    so on1 (row 6) is never sampled."""
    paper = PaperReplayBuffer([f"off{i}" for i in range(5)], buffer_size=7)
    for j in range(6):
        paper.add_transition(f"on{j}")
    assert paper.rows == ["on2", "on3", "on4", "on5", "off4", "on0", "on1"]
    assert (paper.size, paper.pointer) == (6, 4)
    assert paper.sampled() == ["on2", "on3", "on4", "on5", "off4", "on0"]
    # a dataset at least as large as buffer_size gets N + 1 rows: the first online step fills the last row (never
    # sampled), every later one overwrites the oldest remaining offline row
    paper = PaperReplayBuffer([f"off{i}" for i in range(5)], buffer_size=3)
    for j in range(3):
        paper.add_transition(f"on{j}")
    assert paper.rows == ["on1", "on2", "off2", "off3", "off4", "on0"] and paper.sampled() == paper.rows[:5]


ACT = 2


def labelled(n):
    """A dataset whose rewards label its rows 1..n (0 marks a free row)."""
    obs = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    return data.from_arrays(obs, np.zeros((n, ACT)), np.arange(1, n + 1), obs, np.ones(n))


def transition(label):
    return {"observations": np.full(3, label, np.float32), "actions": np.zeros(ACT, np.float32),
            "rewards": np.float32(label), "next_observations": np.full(3, label, np.float32),
            "masks": np.float32(1), "terminals": np.float32(0)}


@pytest.mark.parametrize("n, buffer_size, steps", [(5, 7, 6), (5, 3, 6), (5, 20, 6), (1, 1, 5), (4, 6, 13), (3, 9, 2)])
def test_each_step_writes_and_samples_as_the_public_code(n, buffer_size, steps):
    """``finetune``'s step (the write, then the update; with an agent whose update returns its batch's labels) against
    the transcription, after every step: every row's label, the pointer, the size, and which labels a batch holds:
    all those of rows [0, size), in equal shares, and nothing else."""
    paper = PaperReplayBuffer(list(range(1, n + 1)), buffer_size)
    buf = online.buffer(labelled(n), buffer_size)
    assert buf.capacity == paper.max_size and (int(buf.size), int(buf.pointer)) == (n, n)
    spy = types.SimpleNamespace(update=lambda state, batch: (state, {"labels": batch["rewards"]}),
                                act=lambda state, obs, key: jnp.zeros((obs.shape[0], ACT)))
    batch_size = 60_000
    _, write, learn = online._jitted(spy, batch_size)
    key = jax.random.PRNGKey(0)
    for j in range(steps):
        label = 1000 + j
        paper.add_transition(label)
        buf = write(buf, transition(label))
        _, key, metrics, _ = learn(jnp.zeros(()), buf, key, jnp.zeros(3))
        np.testing.assert_array_equal(np.asarray(buf.rewards), [0 if r is None else r for r in paper.rows])
        online_rows = np.asarray(buf.rewards) >= 1000  # every field of the transition went to the same row
        for f in ("observations", "next_observations"):
            np.testing.assert_array_equal(np.asarray(getattr(buf, f))[online_rows, 0], np.asarray(buf.rewards)[online_rows])
        assert (int(buf.size), int(buf.pointer)) == (paper.size, paper.pointer), j
        labels, counts = np.unique(np.asarray(metrics["labels"]), return_counts=True)
        assert sorted(labels.astype(int)) == sorted(paper.sampled()), j
        share = counts / batch_size
        assert np.all(np.abs(share - 1 / paper.size) < 0.2 / paper.size), (j, share)


def test_a_step_never_copies_the_replay_buffer():
    """``finetune``'s two calls per step: the write updates the buffer in place (donated) and the update only gathers a
    batch from it, so no instruction of either compiled program copies a buffer-sized array. (As one call, XLA on a
    CPU copied buffer-sized arrays every step: ``benchmarks/online_step.py`` times both.)"""
    rows = 300_007  # a size no other array here has
    buf = online.buffer(labelled(5), rows)
    state = fql.init(jax.random.PRNGKey(0), data.sample(buf, jax.random.PRNGKey(1), BATCH), CONFIG)
    _, write, learn = online._jitted(fql, BATCH)
    programs = {"write": write.lower(buf, transition(1000)).compile().as_text(),
                "learn": learn.lower(state, buf, jax.random.PRNGKey(2), jnp.zeros(3)).compile().as_text()}
    for name, hlo in programs.items():
        assert f"[{rows}" in hlo, name  # the buffer is an argument of both
        copies = [line.strip()[:120] for line in hlo.splitlines() if f"[{rows}" in line and " copy(" in line]
        assert not copies, (name, copies)
    assert "input_output_alias" in programs["write"]


def test_every_step_writes_the_transition_the_environment_returned(offline):
    """The default buffer (the paper's 2M rows) has room for every step here: the offline rows stay, the online ones
    follow them in order."""
    env = env_fn()
    evaluations = []

    def evaluate(state):
        evaluations.append(int(state.step))
        return {"success": 0.5}

    result = finetune(offline, env, evaluate=evaluate, eval_every=30)
    n0 = int(offline["dataset"].size)
    size = int(result.dataset.size)
    assert result.dataset.capacity == online.BUFFER_SIZE == 2_000_000
    assert size - n0 == ONLINE_STEPS == len(env.steps) == result.env_steps, "one row per environment step"
    assert int(result.dataset.pointer) == size
    ds = jax.tree.map(np.asarray, result.dataset)
    before = jax.tree.map(np.asarray, offline["dataset"])
    for f in data.FIELDS:
        np.testing.assert_array_equal(getattr(ds, f)[:n0], getattr(before, f)[:n0], err_msg=f"offline {f} changed")
        assert not np.any(getattr(ds, f)[size:]), f"{f}: a row past the pointer was written"
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


def stored(step):
    """What the buffer should hold for a transition the environment returned (the antmaze conventions)."""
    return {"observations": step["obs"], "actions": step["action"], "rewards": step["reward"] - 1.0,
            "next_observations": step["next_obs"], "masks": 1.0 - step["terminated"],
            "terminals": float(step["terminated"] or step["truncated"])}


def check_rows(buf, paper, offline_rows, online_row):
    """Every row of ``buf`` holds what the transcription's label says: ("off", i) the offline row i, ("on", j) the
    transition ``online_row(j)`` (a dict of fields), None a free row of zeros."""
    ds = jax.tree.map(np.asarray, buf)
    assert buf.capacity == paper.max_size and (int(buf.size), int(buf.pointer)) == (paper.size, paper.pointer)
    for r, label in enumerate(paper.rows):
        for f in data.FIELDS:
            want = (0.0 if label is None else getattr(offline_rows, f)[label[1]] if label[0] == "off"
                    else online_row(label[1])[f])
            np.testing.assert_allclose(getattr(ds, f)[r], want, rtol=1e-6, err_msg=f"row {r} ({label}) {f}")


@pytest.mark.parametrize("buffer_size", [7, 3])
def test_online_transitions_overwrite_the_oldest_offline_rows(offline, buffer_size):
    """finetune on 5 offline rows for 6 steps, against the transcription: with buffer_size 7 (7 rows) and 3 (N + 1 = 6
    rows) the pointer wraps and online transitions replace the oldest offline ones; fine-tuning goes on."""
    few = data.from_arrays(*(np.asarray(getattr(offline["dataset"], f))[:5] for f in data.FIELDS[:5]),
                           terminals=np.asarray(offline["dataset"].terminals)[:5])
    env = env_fn()
    result = finetune(offline, env, steps=6, dataset=few, buffer_size=buffer_size)
    paper = PaperReplayBuffer([("off", i) for i in range(5)], buffer_size)
    for j in range(6):
        paper.add_transition(("on", j))
    assert any(label[0] == "on" for label in paper.rows[:2]), "the example wraps"
    check_rows(result.dataset, paper, jax.tree.map(np.asarray, few), lambda j: stored(env.steps[j]))
    assert int(result.state.step) == int(offline["state"].step) + 6 and result.env_steps == 6
    assert len(result.metric("critic_loss")[0]) == 1 and np.isfinite(result.metric("critic_loss")[1]).all()


@pytest.mark.parametrize("extra", [ONLINE_STEPS + 1, 30, None])
def test_an_interrupted_run_resumes_where_it_stopped(offline, tmp_path, extra):
    """With buffer_size = N + extra: every transition kept (91), a wrap at online step 30 (before the checkpoint at 40),
    and buffer_size 1 (N + 1 rows: a wrap at the first step)."""
    n0 = int(offline["dataset"].size)
    buffer_size = 1 if extra is None else n0 + extra
    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(RuntimeError, match="died"):
        finetune(offline, env_fn(die_after=55), checkpoint_dir=ckpt, checkpoint_every=20, buffer_size=buffer_size)
    # what the checkpoint holds is what an uninterrupted run had after 40 steps
    reference_env = env_fn()
    reference = finetune(offline, reference_env, steps=40, buffer_size=buffer_size)
    at40 = PaperReplayBuffer([("off", i) for i in range(n0)], buffer_size)
    for j in range(40):
        at40.add_transition(("on", j))
    offline_rows = jax.tree.map(np.asarray, offline["dataset"])
    check_rows(reference.dataset, at40, offline_rows, lambda j: stored(reference_env.steps[j]))
    check = {"config": repr(CONFIG), "offline_size": n0}
    state, buf, _, meta = online._load(ckpt, offline["state"], online.buffer(offline["dataset"], buffer_size), check)
    assert meta["env_steps"] == 40
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(reference.state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for f in ("observations", "actions", "rewards", "masks", "terminals", "size", "pointer"):
        np.testing.assert_allclose(np.asarray(getattr(buf, f)), np.asarray(getattr(reference.dataset, f)), rtol=1e-6,
                                   err_msg=f)
    # run again: it continues from 40 to the end, in a fresh episode, writing where the public code's buffer would
    env = env_fn()
    resumed = finetune(offline, env, checkpoint_dir=ckpt, checkpoint_every=20, buffer_size=buffer_size)
    assert len(env.steps) == ONLINE_STEPS - 40 and resumed.env_steps == ONLINE_STEPS
    assert int(resumed.state.step) == int(offline["state"].step) + ONLINE_STEPS
    paper = PaperReplayBuffer([("off", i) for i in range(n0)], buffer_size)
    for j in range(ONLINE_STEPS):
        paper.add_transition(("on", j))
    first = jax.tree.map(np.asarray, reference.dataset)
    row_of = {label: r for r, label in enumerate(at40.rows)}

    def online_row(j):
        if j >= 40:
            return stored(env.steps[j - 40])
        kept = {f: getattr(first, f)[row_of[("on", j)]] for f in data.FIELDS}
        return {**kept, "terminals": 1.0} if j == 39 else kept  # the episode cut by the interruption ends there

    check_rows(resumed.dataset, paper, offline_rows, online_row)  # the cut keeps its mask: it was no termination
    assert [r["online_step"] for r in resumed.history if "critic_loss" in r] == list(range(10, ONLINE_STEPS + 1, 10))
    # a finished run, run again, does nothing more
    again = finetune(offline, env_fn(), checkpoint_dir=ckpt, checkpoint_every=20, buffer_size=buffer_size)
    assert again.env_steps == ONLINE_STEPS and int(again.dataset.pointer) == paper.pointer
    assert os.path.exists(os.path.join(ckpt, online.CHECKPOINT))


def test_clear_errors(offline, tmp_path):
    with pytest.raises(ValueError, match="buffer_size must be positive"):
        online.finetune(fql, offline["state"], offline["dataset"], env_fn(), 10, buffer_size=0, progress=False)
    with pytest.raises(ValueError, match="observations"):
        online.finetune(fql, offline["state"], offline["dataset"], gymnasium.make("Pendulum-v1"), 10, progress=False)
    ckpt = str(tmp_path / "ckpt")
    n0 = int(offline["dataset"].size)
    finetune(offline, env_fn(), steps=10, checkpoint_dir=ckpt, buffer_size=n0 + 20)
    with pytest.raises(ValueError, match="another run"):
        online.finetune(fql, offline["state"], offline["dataset"], env_fn(), 10, seed=4, batch_size=BATCH,
                        progress=False, checkpoint_dir=ckpt, buffer_size=n0 + 20)
    with pytest.raises(ValueError, match="another run .buffer_rows"):
        finetune(offline, env_fn(), steps=10, checkpoint_dir=ckpt, buffer_size=n0 + 21)


def test_any_object_with_update_and_act_is_an_agent(offline):
    """The book's exercise wraps fql in a types.SimpleNamespace (unhashable): finetune runs it."""
    greedy = types.SimpleNamespace(update=fql.update, act=fql.act)
    result = online.finetune(greedy, offline["state"], offline["dataset"], env_fn(), 5, batch_size=BATCH,
                             progress=False, buffer_size=int(offline["dataset"].size) + 6)
    assert result.env_steps == 5 and int(result.state.step) == int(offline["state"].step) + 5

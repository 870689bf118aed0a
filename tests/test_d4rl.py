"""D4RL through Minari, without network: small Minari datasets collected here with ``minari.DataCollector`` on
custom environments that mimic the benchmarks' conventions (an antmaze-like sparse goal task that terminates at the
goal; the same task run on after the goal, as Minari's AntMaze data was collected; an adroit-like dense task that only
truncates) convert with FQL's rewards, masks and terminals, and score with reference returns that are not 0 and 1."""
import dataclasses
import os
import warnings

import gymnasium
import numpy as np
import pytest

import h5py  # noqa: F401  (make test installs every extra: a missing one fails, never skips)
import minari

from fqlcore import data  # noqa: E402
from fqlcore.envs import d4rl  # noqa: E402

ANT_ID, ADROIT_ID = "fqltest/antmaze/goal-v0", "fqltest/pen/dense-v0"
ANT_ENV, ADROIT_ENV = "FqlTestSparseGoal-v0", "FqlTestDense-v0"
CONTINUING_ID, CONTINUING_ENV = "fqltest/antmaze/continuing-v0", "FqlTestContinuing-v0"
ANT_REFS = (-5.0, 20.0)  # not 0 and 1: a normalized score is then not 100 x success


class SparseGoalEnv(gymnasium.Env):
    """AntMaze-like: a point in the plane, goal dictionary observations, reward 1 and termination at the goal (within
    0.3 of (1, 1)), ``info["success"]``; the time limit truncates."""
    observation_space = gymnasium.spaces.Dict({
        "observation": gymnasium.spaces.Box(-1, 1, (2,), np.float64),
        "achieved_goal": gymnasium.spaces.Box(-5, 5, (2,), np.float64),
        "desired_goal": gymnasium.spaces.Box(-5, 5, (2,), np.float64)})
    action_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    goal = np.array([1.0, 1.0])

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.5, 0.5, 2)
        self.vel = np.zeros(2)
        return self._obs(), {"success": False}

    def _obs(self):
        return {"observation": self.vel.copy(), "achieved_goal": self.pos.copy(), "desired_goal": self.goal.copy()}

    def step(self, action):
        self.vel = 0.25 * np.clip(np.asarray(action, np.float64), -1, 1)
        self.pos = np.clip(self.pos + self.vel, -5, 5)
        success = bool(np.linalg.norm(self.pos - self.goal) < 0.3)
        return self._obs(), float(success), success, False, {"success": success}


class DenseEnv(gymnasium.Env):
    """Adroit-like: flat observations, a dense reward (minus the distance to the origin), no termination (only the time
    limit), ``info["success"]`` when close."""
    observation_space = gymnasium.spaces.Box(-5, 5, (3,), np.float64)
    action_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, 2)
        return self._obs(), {"success": False}

    def _obs(self):
        return np.array([*self.pos, np.linalg.norm(self.pos)])

    def step(self, action):
        self.pos = np.clip(self.pos + 0.2 * np.clip(np.asarray(action, np.float64), -1, 1), -5, 5)
        distance = float(np.linalg.norm(self.pos))
        return self._obs(), -distance, False, False, {"success": distance < 0.2}


class ContinuingGoalEnv(SparseGoalEnv):
    """gymnasium-robotics AntMaze's option: with ``continuing_task=True`` (its default, and how Minari collected its
    AntMaze data) the episode runs on after the goal (reward 1 while there, no termination). ``maze_map`` is only
    stored, as AntMaze's keyword, so that a dataset's and its evaluation environment's mazes can differ."""

    def __init__(self, continuing_task=True, maze_map=None):
        self.continuing_task = continuing_task
        self.maze_map = maze_map

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated and not self.continuing_task, truncated, info


for _id, _entry, _steps in ((ANT_ENV, "test_d4rl:SparseGoalEnv", 25), (ADROIT_ENV, "test_d4rl:DenseEnv", 20),
                            (CONTINUING_ENV, "test_d4rl:ContinuingGoalEnv", 25)):
    if _id not in gymnasium.registry:
        gymnasium.register(_id, entry_point=_entry, max_episode_steps=_steps)


def collect(dataset_id, env_id, episodes, seed=0, ref_scores=(0.0, 1.0)):
    """Collects ``episodes`` episodes of a noisy goal-seeking policy (every other one random) (actions sometimes exactly at +-1, to test the
    clipping) into a local Minari dataset; returns the raw transitions the environment produced."""
    rng = np.random.default_rng(seed)
    env = minari.DataCollector(gymnasium.make(env_id))
    raw = {k: [] for k in ("obs", "actions", "rewards", "terminated", "truncated", "next_obs", "episode_end")}
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed * 1000 + episode)
        done = False
        while not done:
            pos = obs["achieved_goal"] if isinstance(obs, dict) else obs[:2]
            target = SparseGoalEnv.goal if isinstance(obs, dict) else np.zeros(2)
            gain = 2.0 if episode % 2 == 0 else 0.0  # odd episodes act at random and mostly time out
            action = np.clip(gain * (target - pos) + rng.normal(0, 0.8, 2), -1, 1).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            for k, v in (("obs", obs), ("actions", action), ("rewards", reward), ("terminated", terminated),
                         ("truncated", truncated), ("next_obs", next_obs), ("episode_end", done)):
                raw[k].append(v)
            obs = next_obs
    env.create_dataset(dataset_id, eval_env=env_id, algorithm_name="noisy goal seeking", ref_min_score=ref_scores[0],
                       ref_max_score=ref_scores[1], author="fqlcore tests", author_email="none",
                       code_permalink="none", description="a test dataset")
    env.close()
    return raw


@pytest.fixture(scope="module")
def minari_dir(tmp_path_factory):
    """A Minari datasets directory holding the two test datasets; MINARI_DATASETS_PATH points at it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gymnasium's checker on float64 observations
            raw = {"ant": collect(ANT_ID, ANT_ENV, 12, ref_scores=ANT_REFS),
                   "adroit": collect(ADROIT_ID, ADROIT_ENV, 6, ref_scores=(-30.0, -2.0)),
                   "continuing": collect(CONTINUING_ID, CONTINUING_ENV, 8, seed=1)}
        yield raw


def flat(o):
    return np.concatenate([o["achieved_goal"], o["observation"]]) if isinstance(o, dict) else np.asarray(o)


def test_antmaze_like_conversion_rewards_masks_terminals(minari_dir):
    raw = minari_dir["ant"]
    env, dataset, info = d4rl.load(ANT_ID, download=False)
    n = len(raw["actions"])
    assert isinstance(dataset, data.Dataset) and int(dataset.size) == dataset.capacity == n
    assert any(raw["terminated"]) and any(raw["truncated"]), "the test data needs both kinds of episode end"
    np.testing.assert_allclose(np.asarray(dataset.rewards), np.asarray(raw["rewards"]) - 1.0)  # antmaze: reward - 1
    assert set(np.unique(np.asarray(dataset.rewards))) <= {-1.0, 0.0}
    np.testing.assert_array_equal(np.asarray(dataset.masks), 1.0 - np.asarray(raw["terminated"], np.float32))
    np.testing.assert_array_equal(np.asarray(dataset.terminals), np.asarray(raw["episode_end"], np.float32))
    np.testing.assert_allclose(np.asarray(dataset.observations), np.stack([flat(o) for o in raw["obs"]]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(dataset.next_observations), np.stack([flat(o) for o in raw["next_obs"]]),
                               rtol=1e-6)
    actions = np.stack(raw["actions"])
    assert (np.abs(actions) == 1.0).any(), "the test data needs actions at the bounds"
    np.testing.assert_allclose(np.asarray(dataset.actions), np.clip(actions, -1 + 1e-5, 1 - 1e-5))
    assert info["termination"] == "sparse-reward" and info["terminated_rows"] == sum(raw["terminated"])
    assert info["source"] == "minari" and info["minari_id"] == ANT_ID and info["kind"] == "antmaze"
    assert info["dataset_version"] == 0 and info["minari_version"] and info["reward_shift"] == -1.0
    assert info["transitions"] == n and info["episodes"] == 12
    # the environment flattens its observations like the dataset, and keeps its own (unshifted) reward
    obs, _ = env.reset(seed=0)
    assert obs.shape == dataset.observation_shape == (4,) and env.observation_space.shape == (4,)
    _, reward, *_ = env.step(np.zeros(2, np.float32))
    assert reward in (0.0, 1.0)
    assert d4rl.reward_transform("antmaze")(np.float32(0.0)) == -1.0


def test_adroit_like_conversion_and_normalized_score(minari_dir):
    raw = minari_dir["adroit"]
    env, dataset, info = d4rl.load(ADROIT_ID, download=False, capacity=len(raw["actions"]) + 50)
    n = len(raw["actions"])
    assert int(dataset.size) == n and dataset.capacity == n + 50
    np.testing.assert_allclose(np.asarray(dataset.rewards)[:n], raw["rewards"], rtol=1e-6)  # dense, unchanged
    assert np.all(np.asarray(dataset.masks)[:n] == 1.0), "a truncation is no termination: keep bootstrapping"
    np.testing.assert_array_equal(np.asarray(dataset.terminals)[:n], np.asarray(raw["episode_end"], np.float32))
    assert np.asarray(dataset.terminals)[:n].sum() == 6
    assert info["kind"] == "adroit" and info["reward_shift"] == 0.0
    assert (info["ref_min_score"], info["ref_max_score"]) == (-30.0, -2.0)
    np.testing.assert_allclose(d4rl.normalized_score(info, [-30.0, -2.0, -16.0]), [0.0, 100.0, 50.0])
    ds = minari.load_dataset(ADROIT_ID)
    np.testing.assert_allclose(d4rl.normalized_score(info, [-10.0]), 100 * minari.get_normalized_score(ds, np.array([-10.0])))
    with pytest.raises(ValueError, match="no reference scores"):
        d4rl.normalized_score({"ref_min_score": None, "ref_max_score": 1.0}, [0.0])
    assert d4rl.reward_transform("adroit")(-3.0) == -3.0
    obs, _ = d4rl.make_env(ADROIT_ID).reset(seed=1)
    assert obs.shape == (3,)


def test_evaluation_runs_on_the_recovered_environment(minari_dir):
    import jax.numpy as jnp
    from fqlcore import evaluate as ev
    goal = jnp.asarray(SparseGoalEnv.goal, jnp.float32)
    policy = lambda o, k: jnp.clip(4.0 * (goal - o[:, :2]), -1, 1)  # noqa: E731  (an expert)
    result = ev.evaluate(policy, d4rl.make_env_fn(ANT_ID), num_episodes=4, seed=0)
    assert result["success"] == 1.0 and result["return"] == 1.0  # one sparse reward, then the episode ends


def test_normalized_scores_use_the_datasets_references_not_0_and_1(minari_dir):
    """With references -5 and 20, a success (return 1) scores 24 and a failure (return 0) 20: 100 x success would be
    100 and 0. The references come from the dataset's metadata, as Minari's own get_normalized_score reads them."""
    _, _, info = d4rl.load(ANT_ID, download=False)
    assert (info["ref_min_score"], info["ref_max_score"]) == ANT_REFS
    np.testing.assert_allclose(d4rl.normalized_score(info, [0.0, 1.0, 20.0, -5.0]), [20.0, 24.0, 100.0, 0.0])
    ds = minari.load_dataset(ANT_ID)
    returns = np.array([0.0, 1.0, 7.5])
    np.testing.assert_allclose(d4rl.normalized_score(info, returns), 100 * minari.get_normalized_score(ds, returns))
    assert "not the success rate" in info["score_caveat"] and "report success" in info["score_caveat"]
    with pytest.raises(ValueError, match="equal"):
        d4rl.normalized_score({"ref_min_score": 2.0, "ref_max_score": 2.0}, [1.0])


def test_continuing_antmaze_data_terminates_at_the_goal_by_the_sparse_reward_rule(minari_dir):
    """Minari's AntMaze data never terminates: the episode runs on at the goal. The default rule ends the task at
    every goal row (mask 0 exactly where the stored reward is 1, as D4RL's terminals), keeps every row, and leaves the
    terminals at the episode ends; the "stored" rule keeps Minari's flags (mask 1 everywhere)."""
    raw = minari_dir["continuing"]
    rewards = np.asarray(raw["rewards"], np.float32)
    assert not any(raw["terminated"]) and any(raw["truncated"]), "continuing data: only time limits end episodes"
    ends = np.flatnonzero(raw["episode_end"])
    per_episode = [rewards[a:b + 1].sum() for a, b in zip(np.r_[0, ends[:-1] + 1], ends)]
    assert max(per_episode) >= 2, "the test data needs an episode that stays at the goal for several steps"
    _, dataset, info = d4rl.load(CONTINUING_ID, download=False)
    n = len(rewards)
    assert int(dataset.size) == n and info["termination"] == "sparse-reward"
    np.testing.assert_array_equal(np.asarray(dataset.masks), 1.0 - rewards)
    np.testing.assert_array_equal(np.asarray(dataset.rewards), rewards - 1.0)
    np.testing.assert_array_equal(np.asarray(dataset.terminals), np.asarray(raw["episode_end"], np.float32))
    assert info["terminated_rows"] == int(rewards.sum()) > 0
    _, stored, info_stored = d4rl.load(CONTINUING_ID, download=False, termination="stored")
    assert np.all(np.asarray(stored.masks) == 1.0) and info_stored["termination"] == "stored"
    assert info_stored["terminated_rows"] == 0
    for field in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(np.asarray(getattr(stored, field)), np.asarray(getattr(dataset, field)))
    with pytest.raises(ValueError, match="unknown termination rule 'goal'.*sparse-reward.*stored"):
        d4rl.load(CONTINUING_ID, download=False, termination="goal")
    with pytest.raises(ValueError, match="needs the sparse goal reward"):
        d4rl.load(ADROIT_ID, download=False, termination="sparse-reward")  # dense rewards: no goal signal


def test_termination_rules_one_episode():
    rewards, stored = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0]), np.array([0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(d4rl.terminations(rewards, stored, "sparse-reward"), rewards == 1)
    np.testing.assert_array_equal(d4rl.terminations(rewards, stored, "stored"), np.zeros(6, bool))
    np.testing.assert_array_equal(d4rl.terminations(np.zeros(3), [0, 0, 1], "sparse-reward"), [False, False, True])
    assert d4rl.default_termination("antmaze") == "sparse-reward"
    assert d4rl.default_termination("adroit") == d4rl.default_termination("other") == "stored"


def test_score_caveats_name_what_breaks_the_comparison_with_d4rl():
    pen = d4rl.score_caveat({"name": "pen-cloned-v1", "kind": "adroit", "max_episode_steps": 200})
    assert "200 steps" in pen and "had 100" in pen and "#303" in pen and "longer episodes" in pen
    assert "pen-human-v1 had 100" in d4rl.score_caveat({"name": "D4RL/pen/human-v2", "max_episode_steps": 200})
    assert "had 100" in d4rl.score_caveat({"name": "x", "minari_id": "D4RL/pen/human-v2", "max_episode_steps": 200})
    assert d4rl.score_caveat({"name": "mine/pen/human-v0", "max_episode_steps": 200}) == ""  # not the paper's
    assert d4rl.score_caveat({"name": "pen-cloned-v1", "max_episode_steps": 100}) == ""
    assert d4rl.score_caveat({"name": "door-cloned-v1", "kind": "adroit", "max_episode_steps": 200}) == ""
    assert d4rl.score_caveat({"name": "antmaze-large-play-v2", "kind": "antmaze", "max_episode_steps": 1000,
                              "ref_min_score": 0.0, "ref_max_score": 1.0}) == ""
    assert "#304" in d4rl.score_caveat({"name": "antmaze-umaze-diverse-v2", "eval_maze_differs": True})
    assert d4rl.D4RL_TIME_LIMITS["antmaze-umaze-v2"] == 700 and d4rl.D4RL_TIME_LIMITS["relocate-human-v1"] == 200
    assert d4rl.paper_name("D4RL/antmaze/medium-play-v1") == "antmaze-medium-play-v2"
    assert d4rl.paper_name("fqltest/pen/dense-v0") is None


def test_load_records_the_time_limit_and_an_evaluation_maze_unlike_the_data(minari_dir):
    _, _, info = d4rl.load(ADROIT_ID, download=False)
    assert info["max_episode_steps"] == 20 and info["eval_maze_differs"] is False
    assert info["score_caveat"] == "", "not one of the paper's datasets, and no reason known"
    data_map, eval_map = [[1, 1, 1], [1, 0, 1], [1, 1, 1]], [[1, 1, 1], [1, "g", 1], [1, 1, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dataset_id, other in (("fqltest/antmaze/samemaze-v0", eval_map), ("fqltest/antmaze/flipped-v0",
                                                                              [[1, 0, 1], [1, "g", 1], [1, 1, 1]])):
            env = minari.DataCollector(gymnasium.make(CONTINUING_ENV, maze_map=data_map))
            env.reset(seed=0)
            while not env.step(np.zeros(2, np.float32))[3]:  # one episode, to its time limit
                pass
            eval_spec = dataclasses.replace(gymnasium.spec(CONTINUING_ENV), kwargs={"maze_map": other})
            env.create_dataset(dataset_id, eval_env=eval_spec, algorithm_name="one step", author="fqlcore tests",
                               author_email="none", code_permalink="none", description="a maze pair")
            env.close()
    _, _, same = d4rl.load("fqltest/antmaze/samemaze-v0", download=False)
    _, _, flipped = d4rl.load("fqltest/antmaze/flipped-v0", download=False)
    assert same["eval_maze_differs"] is False, "a goal mark is no wall"
    assert flipped["eval_maze_differs"] is True and "#304" in flipped["score_caveat"]


def test_the_papers_names_map_to_minari_ids():
    names = d4rl.valid_names()
    assert len(names) == 18 and len(set(d4rl.DATASETS.values())) == 18
    assert d4rl.minari_id("antmaze-umaze-v2") == "D4RL/antmaze/umaze-v1"
    assert d4rl.minari_id("antmaze-medium-play-v2") == "D4RL/antmaze/medium-play-v1"
    assert d4rl.minari_id("antmaze-large-diverse-v2") == "D4RL/antmaze/large-diverse-v1"
    assert d4rl.minari_id("pen-human-v1") == "D4RL/pen/human-v2"
    assert d4rl.minari_id("door-cloned-v1") == "D4RL/door/cloned-v2"
    assert d4rl.minari_id("relocate-expert-v1") == "D4RL/relocate/expert-v2"
    assert d4rl.minari_id("D4RL/hammer/human-v2") == "D4RL/hammer/human-v2"  # a Minari id passes through
    assert {d4rl.kind_of(d4rl.minari_id(n)) for n in names if n.startswith("antmaze")} == {"antmaze"}
    assert {d4rl.kind_of(d4rl.minari_id(n)) for n in names if not n.startswith("antmaze")} == {"adroit"}
    assert d4rl.kind_of("mine/point/goal-v0") == "other"


def test_unknown_names_list_the_valid_ones():
    for bad in ("antmaze-umaze-v0", "pen-human", "halfcheetah-medium-v2", "D4RL/pen", 3):
        with pytest.raises(ValueError, match="Valid names") as e:
            d4rl.load(bad, download=False)
        assert "antmaze-umaze-v2" in str(e.value) and "relocate-expert-v1" in str(e.value)
    with pytest.raises(ValueError, match="Did you mean 'antmaze-umaze-v2'"):
        d4rl.minari_id("antmaze-umaze-v1")


def test_a_missing_dataset_says_how_to_download_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="minari download D4RL/pen/human-v2"):
        d4rl.load("pen-human-v1", download=False)

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(minari, "download_dataset", offline)
    with pytest.raises(FileNotFoundError, match="could not be downloaded.*no network.*minari download D4RL/antmaze"):
        d4rl.load("antmaze-large-play-v2")
    assert not os.listdir(tmp_path)


def test_antmaze_episodes_end_at_the_goal_as_in_d4rl(minari_dir):
    assert gymnasium.make(CONTINUING_ENV).unwrapped.continuing_task is True
    env = d4rl.make_env(CONTINUING_ID)
    assert env.unwrapped.continuing_task is False, "evaluation and online episodes end at the goal"
    assert d4rl.make_env(CONTINUING_ID, continuing_task=True).unwrapped.continuing_task is True
    assert d4rl.make_env(ADROIT_ID).unwrapped.__class__ is DenseEnv  # other kinds: untouched

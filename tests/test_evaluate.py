"""Evaluation protocol: success at the last step, means over episodes, parallel workers, frames, and the reported
number (mean at exactly 800K/900K/1M, then mean ± std over seeds with tasks averaged per seed first)."""
import numpy as np
import pytest

import gymnasium

from fqlcore import evaluate as ev  # noqa: E402


class FakeEnv(gymnasium.Env):
    """Episodes of 3..7 steps; reports success at step 1 (a distractor) and, at the last step, iff the action > 0.
    The observation holds a per-episode value v in [0, 1) drawn at reset."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = gymnasium.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, report_success=True):
        self.report_success = report_success

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.v, self.T, self.t = self.np_random.uniform(), 3 + int(self.np_random.integers(5)), 0
        return np.array([self.v, 0.0]), {}

    def step(self, action):
        self.t += 1
        last = self.t >= self.T
        info = {"success": bool(action[0] > 0) if last else self.t == 1} if self.report_success else {}
        return np.array([self.v, self.t]), -1.0, False, last, info

    def render(self):
        return np.full((4, 4, 3), self.t, np.uint8)


def threshold_policy(observations, key):
    return np.where(observations[:, :1] > 0.3, 1.0, -1.0)


def expected(num_episodes, seed=0):
    rows = []
    for i in range(num_episodes):
        env = FakeEnv()
        obs, _ = env.reset(seed=ev.episode_seed(seed, i))
        rows.append((float(obs[0] > 0.3), env.T))
    success, length = np.array(rows).T
    return success, length


def test_success_is_the_last_steps_and_means_are_over_episodes():
    success, length = expected(50)
    result = ev.evaluate(threshold_policy, FakeEnv, details=True)  # 50 episodes by default
    assert len(result["episodes"]["success"]) == 50
    np.testing.assert_array_equal(result["episodes"]["success"], success)  # not the step-1 success
    np.testing.assert_array_equal(result["episodes"]["length"], length)
    assert result["success"] == pytest.approx(success.mean()) and 0 < result["success"] < 1
    assert result["length"] == pytest.approx(length.mean()) and result["return"] == pytest.approx(-length.mean())
    assert set(result) == {"success", "return", "length", "episodes"}


def test_parallel_workers_give_the_same_episodes_with_batched_policy_calls():
    batches = []

    def policy(observations, key):
        batches.append((observations.shape, observations.dtype))
        return threshold_policy(observations, key)

    one = ev.evaluate(threshold_policy, FakeEnv, num_episodes=7, workers=1, details=True)
    three = ev.evaluate(policy, FakeEnv, num_episodes=7, workers=3, details=True)
    for k in ("success", "length", "return"):
        np.testing.assert_array_equal(one["episodes"][k], three["episodes"][k])
    assert set(batches) == {((3, 2), np.dtype(np.float32))}  # one call for all environments, float32 observations
    assert len(batches) < 7 * 3  # far fewer calls than environment steps


def test_frames_of_the_first_episodes():
    result = ev.evaluate(threshold_policy, FakeEnv, num_episodes=4, workers=2, record_frames=2, details=True)
    frames = result["frames"]
    assert len(frames) == 2
    for f, n in zip(frames, result["episodes"]["length"][:2]):
        assert f.shape == (n + 1, 4, 4, 3) and f.dtype == np.uint8  # the reset frame, then one per step
        np.testing.assert_array_equal(f[:, 0, 0, 0], np.arange(n + 1))


def test_environment_without_success_is_an_error():
    with pytest.raises(KeyError, match="success"):
        ev.evaluate(threshold_policy, lambda: FakeEnv(report_success=False), num_episodes=1)


def _rows(values_by_step, seed=0):
    rows = []
    for step, value in values_by_step.items():
        rows.append({"step": step, "seed": seed, "success": value})
        rows.append({"step": step, "seed": seed, "critic_loss": 1.0})  # training logs are ignored
    return rows


def test_reported_score_is_the_mean_at_800k_900k_1m_never_the_best():
    values = {s: 0.0 for s in range(0, 1_000_001, 100_000)}
    values.update({500_000: 1.0, 800_000: 0.2, 900_000: 0.4, 1_000_000: 0.6})
    assert ev.reported_score(_rows(values)) == pytest.approx(0.4)
    assert ev.reported_score(_rows(values), steps=ev.D4RL_STEPS) == pytest.approx(1.0)  # the 500K evaluation
    missing = {k: v for k, v in values.items() if k != 900_000}
    with pytest.raises(ValueError, match="900000"):
        ev.reported_score(_rows(missing))
    with pytest.raises(ValueError, match="two evaluations"):
        ev.reported_score(_rows(values) + _rows({800_000: 0.9}))
    two_seeds = _rows(values, seed=0) + _rows({**values, 800_000: 0.8}, seed=1)
    with pytest.raises(ValueError, match="per_seed_scores"):
        ev.reported_score(two_seeds)
    assert ev.per_seed_scores(two_seeds) == pytest.approx({0: 0.4, 1: 0.6})


def test_summarize_over_seeds_and_categories():
    cell = ev.summarize([0.4, 0.6])
    assert (cell.mean, cell.std, cell.num_seeds) == (pytest.approx(0.5), pytest.approx(0.1), 2)
    assert cell.format() == "50 ± 10"
    assert ev.summarize({0: 0.4, 1: 0.6}).mean == pytest.approx(0.5)
    # a category averages its tasks within each seed first: per-seed means are 0.5 and 0.5, so the std is 0
    category = ev.summarize({"task1": [1.0, 0.0], "task2": [0.0, 1.0]})
    assert category.mean == pytest.approx(0.5) and category.std == pytest.approx(0.0)
    assert ev.summarize({"task1": {0: 1.0, 1: 0.0}, "task2": {1: 1.0, 0: 0.0}}).std == pytest.approx(0.0)
    assert ev.summarize(np.array([[1.0, 0.0], [0.0, 1.0]])).std == pytest.approx(0.0)


def test_ogbench_cube_single_with_a_random_policy():
    import jax
    from fqlcore.envs import ogbench as og

    policy = jax.jit(lambda o, k: jax.random.uniform(k, (o.shape[0], 5), minval=-1, maxval=1))
    result = ev.evaluate(policy, og.make_env_fn("cube-single-play-singletask-task2-v0"), num_episodes=2, workers=2)
    assert result["length"] == 200 and result["success"] == 0.0 and result["return"] == -200.0

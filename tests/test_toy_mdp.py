"""The point task of chapter 4: dynamics, dataset conventions, exact values of a policy and dynamic programming."""
import jax.numpy as jnp
import numpy as np

from fqlcore import toy


def test_point_step_and_dataset():
    obs = toy.point_observation(jnp.array([0.9, -0.2]), jnp.array([0, 4]))
    next_obs, reward = toy.point_step(obs, jnp.array([[1.0], [-0.5]]))
    np.testing.assert_allclose(next_obs, [[1.0, 0.2], [-0.45, 1.0]], atol=1e-6)  # clipped at 1; k advances
    np.testing.assert_allclose(reward, [0.0, 1 - 0.45**2], atol=1e-6)
    ds = toy.point_dataset(2000, seed=0)
    last = np.isclose(np.asarray(ds.observations[:, 1]), (toy.POINT_HORIZON - 1) / toy.POINT_HORIZON)
    np.testing.assert_array_equal(np.asarray(ds.masks), 1.0 - last)
    np.testing.assert_allclose(ds.rewards, toy.point_step(ds.observations, ds.actions)[1], atol=1e-6)
    noisy = toy.point_dataset(2000, seed=0, reward_noise=1.0)
    assert 0.9 < float(jnp.std(noisy.rewards - ds.rewards)) < 1.1


def test_point_q_value_closed_form():
    # pi(s) = -x halves the position each step: Q = sum_j gamma^j (1 - x1^2 / 4^j) from k = 0
    x, a = 0.3, 0.7
    x1 = min(x + a / 2, 1.0)
    closed = sum(toy.POINT_DISCOUNT**j * (1 - x1**2 / 4**j) for j in range(toy.POINT_HORIZON))
    q = toy.point_q_value(lambda o, k: -o[..., :1], toy.point_observation(jnp.array([x]), 0), jnp.array([[a]]))
    np.testing.assert_allclose(q, [closed], rtol=1e-5)
    # at the last step only the immediate reward counts
    q_last = toy.point_q_value(lambda o, k: -o[..., :1], toy.point_observation(jnp.array([x]), 4), jnp.array([[a]]))
    np.testing.assert_allclose(q_last, [1 - x1**2], rtol=1e-5)


def test_point_optimal_values_dominate_a_policy():
    grid = np.linspace(-1, 1, 9)
    positions, q = toy.point_optimal_values(grid)
    assert q.shape == (toy.POINT_HORIZON, len(positions), 9)
    x = np.linspace(-1, 1, 21)
    obs = toy.point_observation(jnp.asarray(x), 0)
    greedy_home = lambda o, k: jnp.clip(jnp.round(-2 * o[..., :1] * 4) / 4, -1, 1)  # a grid action towards 0
    v_pi = np.asarray(toy.point_q_value(greedy_home, obs, greedy_home(obs, None)))
    v_star = np.interp(x, positions, q[0].max(axis=1))
    assert np.all(v_star >= v_pi - 1e-3)
    np.testing.assert_allclose(v_star, v_pi, atol=1e-2)  # moving home on the grid is optimal here

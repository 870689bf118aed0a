"""The flow-matching pieces: the path, the loss, the Euler sampler, and flow BC on a bimodal distribution."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fqlcore import data, flow, train
from fqlcore.agents import bc


@pytest.mark.parametrize("num_steps", [1, 3, 10])
def test_euler_is_exact_on_a_straight_line_field(num_steps):
    # v(x, t) = (target - x) / (1 - t) moves every point on a straight line at constant speed: Euler is exact there,
    # but only if step i is evaluated at t = i / num_steps with step size 1 / num_steps.
    target = jnp.array([[0.3, -0.7], [1.5, 2.0]])
    noise = jnp.array([[1.0, 1.0], [-2.0, 0.5]])
    out = flow.euler_sample(lambda s, x, t: (target - x) / (1.0 - t), None, noise, num_steps)
    np.testing.assert_allclose(out, target, atol=1e-5)


def test_euler_matches_the_closed_form_of_a_linear_field():
    # dx/dt = -x: Euler with N steps gives (1 - 1/N)^N x0 exactly (the ODE's solution is e^-1 x0).
    x0 = jnp.array([[2.0, -1.0]])
    for n in (2, 10):
        np.testing.assert_allclose(flow.euler_sample(lambda s, x, t: -x, None, x0, n), (1 - 1 / n) ** n * x0, rtol=1e-6)


def test_euler_is_differentiable_through_every_step():
    grad = jax.grad(lambda z: flow.euler_sample(lambda s, x, t: -x, None, z, 10).sum())(jnp.ones((1, 2)))
    np.testing.assert_allclose(grad, 0.9**10 * np.ones((1, 2)), rtol=1e-6)


def test_path_and_loss_are_zero_for_the_true_velocity():
    x0, x1 = jnp.zeros((4, 3)), jnp.ones((4, 3))
    np.testing.assert_allclose(flow.interpolate(x0, x1, 0.25), 0.25 * np.ones((4, 3)))
    # For a single data point x1 the optimal field is (x1 - x) / (1 - t); the loss then vanishes.
    loss = flow.flow_matching_loss(lambda s, x, t: (x1 - x) / (1 - t), None, x1, jax.random.PRNGKey(0))
    assert float(loss) < 1e-8


def test_unknown_time_distribution_is_rejected():
    with pytest.raises(ValueError, match="logit_normal"):
        flow.sample_times(jax.random.PRNGKey(0), (3,), "gaussian")


def test_flow_bc_keeps_both_modes_of_a_1d_bimodal_distribution():
    rng = np.random.default_rng(0)
    n, left_mass = 8192, 0.3
    left = rng.random(n) < left_mass
    actions = np.where(left, -0.5, 0.5) + 0.08 * rng.normal(size=n)
    obs = np.zeros((n, 1), np.float32)
    dataset = data.from_arrays(obs, actions[:, None], np.zeros(n), obs, np.ones(n))
    result = train.train(bc, bc.Config(hidden_dims=(64, 64), lr=1e-3), dataset, 1500, chunk_size=500, progress=False)
    samples = np.asarray(bc.act(result.state(0), jnp.zeros((4000, 1)), jax.random.PRNGKey(1)))[:, 0]
    near_left, near_right = np.abs(samples + 0.5) < 0.25, np.abs(samples - 0.5) < 0.25
    assert near_left.mean() + near_right.mean() > 0.9, "samples should sit on the modes, not between them"
    assert abs(near_left.mean() / (near_left.mean() + near_right.mean()) - left_mass) < 0.1

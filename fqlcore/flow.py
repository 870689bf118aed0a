"""Flow matching with the linear (rectified-flow) path, and the Euler sampler that turns a velocity field into actions.

Path: x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I) noise and x1 data, whose velocity is x1 - x0. A network v(s, x_t, t)
regressed onto that velocity (the conditional flow-matching loss) transports noise to the data distribution when
integrated from t = 0 to t = 1.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

VelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (observations, x, t) -> velocity


def interpolate(x0, x1, t):
    """x_t on the straight line from noise x0 (t = 0) to data x1 (t = 1); ``t`` broadcasts over the last axis."""
    return (1.0 - t) * x0 + t * x1


def sample_times(key, shape, distribution: str = "uniform"):
    """Flow times for the loss. The paper uses uniform; the others are the book's ablations."""
    if distribution == "uniform":
        return jax.random.uniform(key, shape)
    if distribution == "beta":  # Beta(1, 1.5): more weight near t = 0
        return jax.random.beta(key, 1.0, 1.5, shape)
    if distribution == "logit_normal":  # sigmoid of N(0, 1): more weight near t = 0.5
        return jax.nn.sigmoid(jax.random.normal(key, shape))
    raise ValueError(f"unknown flow-time distribution {distribution!r}: expected 'uniform', 'beta' or 'logit_normal'")


def flow_matching_loss(velocity_fn: VelocityFn, observations, actions, key, time_distribution: str = "uniform"):
    """Mean over batch and action dimensions of ||v(s, x_t, t) - (x1 - x0)||^2 / action_dim."""
    noise_key, time_key = jax.random.split(key)
    x0 = jax.random.normal(noise_key, actions.shape)
    t = sample_times(time_key, actions.shape[:-1] + (1,), time_distribution)
    velocity = velocity_fn(observations, interpolate(x0, actions, t), t)
    return jnp.mean((velocity - (actions - x0)) ** 2)


def euler_sample(velocity_fn: VelocityFn, observations, noise, num_steps: int):
    """Integrate dx/dt = v(s, x, t) from x(0) = noise with ``num_steps`` Euler steps of size 1/num_steps, t = i/num_steps.

    Differentiable: gradients flow through every step (backpropagation through time), which is what FBRAC pays for.
    The result is *not* clipped; callers clip to the action box where the method says so. The loop is unrolled: XLA
    fuses across steps, and its cost analysis then counts every step's FLOPs.
    """
    dt = 1.0 / num_steps

    def step(i, x):
        t = jnp.full(x.shape[:-1] + (1,), i * dt, x.dtype)
        return x + dt * velocity_fn(observations, x, t)

    return jax.lax.fori_loop(0, num_steps, step, noise, unroll=True)

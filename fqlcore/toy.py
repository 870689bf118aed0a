"""The small tasks of the book's early chapters: 2D point clouds for flow matching, and a multimodal offline bandit.

The bandit is the book's running example of the offline-RL tug-of-war. The context s ~ U(-1, 1) is one number, the
action a is 2D, and the behaviour policy picks one of four modes (corners of a square) uniformly. Only one mode is
good, and which one depends on the sign of s: copying the data averages over good and bad modes, a Gaussian averages
the modes into the empty middle, and the best policy picks the good mode for each s.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fqlcore import data

MODES = np.array([[0.6, 0.6], [-0.6, -0.6], [0.6, -0.6], [-0.6, 0.6]], np.float32)
MODE_WIDTH = 0.1  # std of the behaviour policy around each mode
REWARD_WIDTH = 0.2  # how far from a mode the reward falls off


def mode_values(observations):
    """Reward at the centre of each mode, shape (*batch, 4): mode 0 is best for s > 0, mode 1 for s <= 0."""
    s = observations[..., 0:1]
    good = jnp.where(s > 0, jnp.array([1.0, 0.2]), jnp.array([0.2, 1.0]))
    return jnp.concatenate([good, jnp.full(s.shape[:-1] + (2,), 0.4)], axis=-1)


def bandit_reward(observations, actions):
    """A bump of height mode_values(s)[k] around each mode k; nearly zero between the modes."""
    sq_dist = jnp.sum((actions[..., None, :] - MODES) ** 2, axis=-1)
    return jnp.sum(mode_values(observations) * jnp.exp(-sq_dist / (2 * REWARD_WIDTH**2)), axis=-1)


def bandit_dataset(num_transitions: int = 10_000, seed: int = 0) -> data.Dataset:
    """Offline data of the behaviour policy: single-step episodes (mask 0), next observation = observation."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (num_transitions, 1)).astype(np.float32)
    modes = rng.integers(0, len(MODES), num_transitions)
    actions = np.clip(MODES[modes] + MODE_WIDTH * rng.normal(size=(num_transitions, 2)), -1, 1).astype(np.float32)
    rewards = np.asarray(bandit_reward(jnp.asarray(obs), jnp.asarray(actions)))
    ones = np.ones(num_transitions, np.float32)
    return data.from_arrays(obs, actions, rewards, obs, masks=0 * ones, terminals=ones)


def best_bandit_return() -> float:
    """The value of always picking the good mode's centre."""
    return 1.0


def bandit_return(act_fn, key, num_contexts: int = 2_000) -> float:
    """Mean reward of ``act_fn(observations, key) -> actions`` on fresh contexts."""
    obs_key, act_key = jax.random.split(key)
    obs = jax.random.uniform(obs_key, (num_contexts, 1), minval=-1, maxval=1)
    return float(jnp.mean(bandit_reward(obs, act_fn(obs, act_key))))


def nearest_mode(actions):
    """Index of the closest mode for each action, and its distance."""
    dist = jnp.linalg.norm(actions[..., None, :] - MODES, axis=-1)
    return jnp.argmin(dist, axis=-1), jnp.min(dist, axis=-1)


# 2D distributions for flow matching (chapter 2).
def two_moons(key, n: int, noise: float = 0.05):
    k_side, k_angle, k_noise = jax.random.split(key, 3)
    angle = jax.random.uniform(k_angle, (n,)) * jnp.pi
    upper = jax.random.bernoulli(k_side, 0.5, (n,))
    x = jnp.where(upper, jnp.cos(angle), 1 - jnp.cos(angle))
    y = jnp.where(upper, jnp.sin(angle), 0.5 - jnp.sin(angle))
    points = jnp.stack([x - 0.5, y - 0.25], axis=-1)
    return points + noise * jax.random.normal(k_noise, (n, 2))


def eight_gaussians(key, n: int, radius: float = 2.0, std: float = 0.1):
    k_mode, k_noise = jax.random.split(key)
    angles = 2 * jnp.pi * jax.random.randint(k_mode, (n,), 0, 8) / 8
    centres = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)
    return centres + std * jax.random.normal(k_noise, (n, 2))


def checkerboard(key, n: int, size: float = 4.0):
    """Uniform on the black squares of a 4x4 board centred at the origin."""
    k_x, k_y, k_row = jax.random.split(key, 3)
    x = jax.random.uniform(k_x, (n,), minval=-size / 2, maxval=size / 2)
    cell = size / 4
    row = jax.random.randint(k_row, (n,), 0, 2) * 2  # even offsets
    col_parity = jnp.floor((x + size / 2) / cell).astype(jnp.int32) % 2
    y = -size / 2 + (row + col_parity) * cell + jax.random.uniform(k_y, (n,)) * cell
    return jnp.stack([x, y], axis=-1)

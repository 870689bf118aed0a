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


# A multi-step offline task (chapter 4): a point on a line, short episodes, returns computable exactly.
POINT_HORIZON = 5  # steps per episode
POINT_STEP = 0.5  # how far the point moves for action +-1
POINT_DISCOUNT = 0.9


def point_observation(x, k, horizon: int = POINT_HORIZON):
    """Observation (position x, elapsed time k / horizon), shape (*batch, 2)."""
    x = jnp.asarray(x, jnp.float32)
    return jnp.stack([x, jnp.broadcast_to(jnp.asarray(k, jnp.float32) / horizon, x.shape)], axis=-1)


def point_step(observations, actions, horizon: int = POINT_HORIZON):
    """Deterministic dynamics x' = clip(x + 0.5 a, -1, 1), reward 1 - x'^2 (stay near the origin); (next_obs, reward)."""
    x, k = observations[..., 0], observations[..., 1] * horizon
    next_x = jnp.clip(x + POINT_STEP * jnp.clip(actions[..., 0], -1, 1), -1, 1)
    return point_observation(next_x, jnp.round(k) + 1, horizon), 1.0 - next_x**2


def point_dataset(num_transitions: int = 10_000, seed: int = 0, horizon: int = POINT_HORIZON,
                  reward_noise: float = 0.0) -> data.Dataset:
    """Transitions from states spread over the whole task (x ~ U(-1, 1), any step k) with uniform random actions.

    mask is 0 at the last step of an episode (k = horizon - 1): the return stops there. ``reward_noise`` adds
    Gaussian noise of that std to the stored rewards (the true expected reward is unchanged).
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, num_transitions).astype(np.float32)
    k = rng.integers(0, horizon, num_transitions)
    obs = np.asarray(point_observation(x, k, horizon))
    actions = rng.uniform(-1, 1, (num_transitions, 1)).astype(np.float32)
    next_obs, rewards = (np.asarray(v) for v in point_step(jnp.asarray(obs), jnp.asarray(actions), horizon))
    rewards = rewards + reward_noise * rng.normal(size=num_transitions).astype(np.float32)
    last = (k == horizon - 1).astype(np.float32)
    return data.from_arrays(obs, actions, rewards, next_obs, masks=1.0 - last, terminals=last)


def point_q_value(policy_fn, observations, actions, key=None, num_rollouts: int = 1, horizon: int = POINT_HORIZON,
                  discount: float = POINT_DISCOUNT):
    """Q^pi(s, a) by rollouts: take ``actions`` in ``observations``, then follow ``policy_fn(obs, key) -> actions``
    to the end of the episode, summing discounted rewards; averaged over ``num_rollouts`` (1 is exact for a
    deterministic policy, since the dynamics are deterministic)."""
    key = jax.random.PRNGKey(0) if key is None else key
    steps_left = horizon - jnp.round(observations[..., 1] * horizon).astype(jnp.int32)  # >= 1

    def rollout(key):
        obs, total = point_step(observations, actions, horizon)
        for i in range(1, horizon):  # at most horizon - 1 more steps; stop counting when the episode is over
            key, k = jax.random.split(key)
            next_obs, r = point_step(obs, policy_fn(obs, k), horizon)
            total = total + jnp.where(i < steps_left, discount**i * r, 0.0)
            obs = next_obs
        return total

    return jnp.mean(jax.vmap(rollout)(jax.random.split(key, num_rollouts)), axis=0)


def point_optimal_values(action_grid, horizon: int = POINT_HORIZON, discount: float = POINT_DISCOUNT,
                         num_positions: int = 2001):
    """Q*(x, k, a) for actions restricted to ``action_grid``, by dynamic programming on a fine grid of positions.

    Returns (positions, q) with q of shape (horizon, num_positions, len(action_grid)); interpolate in x between rows.
    """
    positions = np.linspace(-1, 1, num_positions)
    grid = np.asarray(action_grid, np.float64).reshape(-1)
    next_x = np.clip(positions[:, None] + POINT_STEP * grid[None, :], -1, 1)
    reward = 1.0 - next_x**2
    q = np.zeros((horizon, num_positions, len(grid)))
    value_next = np.zeros(num_positions)
    for k in reversed(range(horizon)):
        q[k] = reward + (discount * np.interp(next_x, positions, value_next) if k < horizon - 1 else 0.0)
        value_next = q[k].max(axis=1)
    return positions, q

"""What every agent shares: its state pytree, one Adam step, and the Polyak-averaged target network.

Every agent module follows one protocol: a frozen ``Config`` dataclass, ``init(key, example_batch, config) -> state``,
``update(state, batch) -> (state, metrics)`` and ``act(state, observations, key) -> actions``. All are pure functions,
so ``fqlcore.train`` can scan over updates and vmap over seeds.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


class AgentState(flax.struct.PyTreeNode):
    params: dict  # every trained network, by name
    target_params: dict  # slow copies (Polyak averages) of the networks that need one
    opt_state: Any
    rng: jax.Array
    step: jax.Array
    config: Any = flax.struct.field(pytree_node=False)
    observation_shape: tuple = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)

    def batch_shape(self, observations) -> tuple:
        """The leading axes of ``observations`` that are not the observation itself."""
        return observations.shape[: observations.ndim - len(self.observation_shape)]


def create(key, params: dict, target_names, config, example_batch) -> AgentState:
    """An agent's first state: its networks' ``params``, target copies of those named in ``target_names`` (the
    critics; equal to the online ones at the start), Adam's state over all of them, and the shapes ``act`` needs
    later, read from ``example_batch``."""
    observations = example_batch["observations"]
    observation_shape = tuple(observations.shape[1:])
    return AgentState(params=params, target_params={k: params[k] for k in target_names},
                      opt_state=optax.adam(config.lr).init(params), rng=key, step=jnp.zeros((), jnp.int32),
                      config=config, observation_shape=observation_shape, action_dim=example_batch["actions"].shape[-1])


def apply_gradients(state: AgentState, grads: dict, tau: float) -> AgentState:
    """One Adam step on all networks together, and target <- tau * online + (1 - tau) * target with the online
    parameters as they were before this step's Adam update, as the paper's public code does (its target lags one step)."""
    updates, opt_state = optax.adam(state.config.lr).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    target_params = {k: optax.incremental_update(state.params[k], v, tau) for k, v in state.target_params.items()}
    return state.replace(params=params, target_params=target_params, opt_state=opt_state, step=state.step + 1)


def next_key(state: AgentState):
    """Splits the state's key: returns (state with a fresh key, key to use now)."""
    rng, key = jax.random.split(state.rng)
    return state.replace(rng=rng), key


def mean_heads(q):
    return jnp.mean(q, axis=0)


def aggregate_heads(q, how: str):
    if how == "mean":
        return jnp.mean(q, axis=0)
    if how == "min":
        return jnp.min(q, axis=0)
    raise ValueError(f"unknown q_agg {how!r}: expected 'mean' or 'min'")

"""IFQL: IQL's value learning with a flow behaviour policy, steered only at acting time (the FQL paper's IDQL variant).

IDQL (Hansen-Estruch et al., 2023) observed that an expressive behaviour model needs no policy-extraction loss at all:
sample several candidate actions from it and execute the one the critic likes best. With a flow as the behaviour model
this is IFQL, the FQL paper's baseline for "the flow is trained by plain BC and never sees Q". It keeps IQL's safety
(Q is only trained on dataset actions) and the flow's multimodality, at the cost of N flow samples (each a 10-step
Euler solve) and N critic calls per action, and of a policy that can only be as good as the best of N behaviour samples.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fqlcore import flow as flowlib
from fqlcore.agents import base, fql, iql
from fqlcore.nets import VelocityField


@dataclasses.dataclass(frozen=True)
class Config:
    num_samples: int = 32  # N flow actions per state at acting time; the argmax of min-over-heads Q is executed
    expectile: float = 0.9
    hidden_dims: tuple = (512, 512, 512, 512)
    lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    flow_steps: int = 10
    critic_layer_norm: bool = True
    flow_time: str = "uniform"


def init(key, example_batch: dict, config=Config()) -> base.AgentState:
    """A flow v(s, x, t), V(s) and the two-head Q(s, a); the target critic. Shared with FAWAC."""
    obs, actions = example_batch["observations"], example_batch["actions"]
    k_flow, k_value, k_state = jax.random.split(key, 3)
    flow_params = VelocityField(config.hidden_dims, actions.shape[-1]).init(k_flow, obs, actions,
                                                                            jnp.zeros(actions.shape[:-1] + (1,)))
    params = {"flow": flow_params, **iql.init_value_networks(k_value, obs, actions, config)}
    return base.create(k_state, params, ["critic"], config, example_batch)


def flow_velocity(state: base.AgentState, params):
    """v(s, x, t) of the flow in ``params["flow"]`` (IFQL, FAWAC, FBRAC)."""
    field = VelocityField(state.config.hidden_dims, state.action_dim)
    return lambda s, x, t: field.apply(params["flow"], s, x, t)


def sample_flow(state: base.AgentState, observations, key):
    """The flow policy (IFQL's candidates, FAWAC's and FBRAC's actions): Euler from fresh noise, clipped to [-1, 1]."""
    noise = jax.random.normal(key, state.batch_shape(observations) + (state.action_dim,))
    return fql.flow_actions(state, observations, noise)


def losses(params, state: base.AgentState, batch: dict, key):
    value_loss, metrics, _ = iql.value_learning(params, state, batch)
    bc_flow_loss = flowlib.flow_matching_loss(flow_velocity(state, params), batch["observations"], batch["actions"], key,
                                              state.config.flow_time)
    return value_loss + bc_flow_loss, {**metrics, "bc_flow_loss": bc_flow_loss}


def update(state: base.AgentState, batch: dict):
    state, key = base.next_key(state)
    grads, metrics = jax.grad(losses, has_aux=True)(state.params, state, batch, key)
    return base.apply_gradients(state, grads, state.config.tau), metrics


def act(state: base.AgentState, observations, key):
    """N flow samples per state (Euler, clipped to [-1, 1]); the one whose MINIMUM over the two critic heads is largest
    (the public code's rule: a candidate only one head likes is not trusted). Stochastic, online and at evaluation."""
    batch_shape, n = state.batch_shape(observations), state.config.num_samples
    axis = len(batch_shape)  # the new axis of candidates, between the batch axes and the observation's axes
    repeated = jnp.broadcast_to(jnp.expand_dims(observations, axis), batch_shape + (n,) + state.observation_shape)
    candidates = sample_flow(state, repeated, key)
    q = jnp.min(iql.value_networks(state.config)["critic"].apply(state.params["critic"], repeated, candidates), axis=0)
    best = jnp.argmax(q, axis=-1)
    return jnp.take_along_axis(candidates, best[..., None, None], axis=axis)[..., 0, :]

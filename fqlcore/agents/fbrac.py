"""FBRAC: behaviour-regularized actor-critic with the flow itself as the actor (a reconstruction from the FQL paper).

The most direct way to make a flow policy maximize Q: keep the flow-matching loss as the behaviour regularizer and
add -Q(s, a) where a is the flow's action, differentiated through every step of the Euler solver (backpropagation
through time). FQL exists because this is the approach that does not work well: the gradient through 10 chained
network calls is expensive and badly conditioned, and the Q term pulls on the same network that must stay a faithful
behaviour model. FQL moves the Q term onto a separate one-step policy and only distills the flow into it.

Not in the paper's public code. Choices: FQL's critic (``fql.critic_loss``: target heads aggregated by ``q_agg`` at
a' = the flow's clipped action from fresh noise, without gradient); actor loss = alpha * bc_flow - Q(s, clip(flow(s, z)))
with Q the mean of the heads, i.e. alpha weighs the BC term as it weighs FQL's distillation term (large: stay near the
data); optional ``normalize_q_loss`` as in FQL (off in the paper). Acts like the flow BC policy: Euler from fresh noise,
clipped, online and at evaluation alike. Per task (``configs.method_config``): alpha from the paper's Table 6; discount
and ``q_agg`` as FQL's for the task (the paper: "same as FQL (Table 5)").
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fqlcore import flow as flowlib
from fqlcore.agents import base, fql, ifql

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Config:
    alpha: float = 10.0  # weight of the BC flow-matching loss against -Q
    hidden_dims: tuple = (512, 512, 512, 512)
    lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    flow_steps: int = 10  # Euler steps, all of them backpropagated through for the Q term
    q_agg: str = "mean"  # TD target only, as in FQL; the actor's Q is the mean of the heads
    normalize_q_loss: bool = False
    critic_layer_norm: bool = True
    flow_time: str = "uniform"


def init(key, example_batch: dict, config: Config = Config()) -> base.AgentState:
    obs, actions = example_batch["observations"], example_batch["actions"]
    nets = fql.networks(config, actions.shape[-1])
    k_flow, k_critic, k_state = jax.random.split(key, 3)
    params = {"flow": nets["flow"].init(k_flow, obs, actions, jnp.zeros(actions.shape[:-1] + (1,))),
              "critic": nets["critic"].init(k_critic, obs, actions)}
    return base.create(k_state, params, ["critic"], config, example_batch)


def losses(params, state: base.AgentState, batch: dict, key):
    config, nets = state.config, fql.networks(state.config, state.action_dim)
    obs, actions = batch["observations"], batch["actions"]
    k_next, k_flow, k_noise = jax.random.split(key, 3)

    next_noise = jax.random.normal(k_next, actions.shape)
    next_actions = fql.flow_actions(state, batch["next_observations"], next_noise, sg(params))
    critic_loss, q_data = fql.critic_loss(params, state, batch, next_actions)

    bc_flow_loss = flowlib.flow_matching_loss(ifql.flow_velocity(state, params), obs, actions, k_flow, config.flow_time)
    policy_actions = fql.flow_actions(state, obs, jax.random.normal(k_noise, actions.shape), params)  # through the solver
    q_policy = base.mean_heads(nets["critic"].apply(sg(params["critic"]), obs, policy_actions))
    q_loss = -jnp.mean(q_policy)
    if config.normalize_q_loss:
        q_loss = q_loss * sg(1.0 / jnp.mean(jnp.abs(q_policy)))
    actor_loss = config.alpha * bc_flow_loss + q_loss

    metrics = {"critic_loss": critic_loss, "q_mean": jnp.mean(q_data), "bc_flow_loss": bc_flow_loss, "q_loss": q_loss,
               "actor_loss": actor_loss, "mse_to_data": jnp.mean((policy_actions - actions) ** 2)}
    return critic_loss + actor_loss, metrics


def update(state: base.AgentState, batch: dict):
    state, key = base.next_key(state)
    grads, metrics = jax.grad(losses, has_aux=True)(state.params, state, batch, key)
    return base.apply_gradients(state, grads, state.config.tau), metrics


act = ifql.sample_flow  # Euler sampling of the flow from fresh noise, clipped to [-1, 1]

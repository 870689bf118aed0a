"""Behaviour cloning, the two policies the book compares: a Gaussian (one mode) and a flow (any number of modes).

``Config(policy="flow")`` trains v_theta(s, x, t) by flow matching and acts by Euler integration from fresh noise;
``Config(policy="gaussian")`` maximizes the log-likelihood of a Gaussian and acts with its mean.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fqlcore import flow as flowlib
from fqlcore.agents import base
from fqlcore.nets import GaussianActor, VelocityField


@dataclasses.dataclass(frozen=True)
class Config:
    policy: str = "flow"  # "flow" or "gaussian"
    hidden_dims: tuple = (512, 512, 512, 512)
    lr: float = 3e-4
    flow_steps: int = 10
    flow_time: str = "uniform"

    def __post_init__(self):
        if self.policy not in ("flow", "gaussian"):
            raise ValueError(f"unknown BC policy {self.policy!r}: expected 'flow' or 'gaussian'")


def network(config: Config, action_dim: int):
    if config.policy == "flow":
        return VelocityField(config.hidden_dims, action_dim)
    return GaussianActor(config.hidden_dims, action_dim)


def init(key, example_batch: dict, config: Config = Config()) -> base.AgentState:
    obs, actions = example_batch["observations"], example_batch["actions"]
    net = network(config, actions.shape[-1])
    k_net, k_state = jax.random.split(key)
    if config.policy == "flow":
        params = net.init(k_net, obs, actions, jnp.zeros(actions.shape[:-1] + (1,)))
    else:
        params = net.init(k_net, obs)
    return base.create(k_state, {"actor": params}, [], config, example_batch)


def gaussian_log_prob(mean, log_std, actions):
    return jnp.sum(-0.5 * ((actions - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def losses(params, state: base.AgentState, batch: dict, key):
    net = network(state.config, state.action_dim)
    if state.config.policy == "flow":
        velocity = lambda s, x, t: net.apply(params["actor"], s, x, t)
        loss = flowlib.flow_matching_loss(velocity, batch["observations"], batch["actions"], key, state.config.flow_time)
        return loss, {"bc_flow_loss": loss}
    mean, log_std = net.apply(params["actor"], batch["observations"])
    loss = -jnp.mean(gaussian_log_prob(mean, log_std, batch["actions"]))
    return loss, {"bc_nll": loss, "mse_to_data": jnp.mean((mean - batch["actions"]) ** 2)}


def update(state: base.AgentState, batch: dict):
    state, key = base.next_key(state)
    grads, metrics = jax.grad(losses, has_aux=True)(state.params, state, batch, key)
    return base.apply_gradients(state, grads, tau=0.0), metrics


def flow_actions(state: base.AgentState, observations, noise, flow_steps: int | None = None):
    """The flow policy's deterministic map from noise z to an action (Euler, clipped), e.g. to plot z -> a."""
    net = network(state.config, state.action_dim)
    velocity = lambda s, x, t: net.apply(state.params["actor"], s, x, t)
    steps = state.config.flow_steps if flow_steps is None else flow_steps
    return jnp.clip(flowlib.euler_sample(velocity, observations, noise, steps), -1, 1)


def act(state: base.AgentState, observations, key):
    if state.config.policy == "gaussian":
        return network(state.config, state.action_dim).apply(state.params["actor"], observations)[0]
    return flow_actions(state, observations, jax.random.normal(key, state.batch_shape(observations) + (state.action_dim,)))

"""FAWAC: advantage-weighted regression with a flow policy (a reconstruction from the FQL paper's description).

AWR is the simplest way to turn a behaviour model into a better policy without querying Q off the data: imitate the
dataset actions, each weighted by exp(alpha * advantage). With a Gaussian that re-weighting still averages the
surviving modes; with a flow it can keep them apart, so FAWAC asks whether an expressive policy is enough to fix AWR.
The FQL paper's answer is that it is not: a weighted regression only moves probability mass between dataset actions,
weakly (the weights are clipped and most samples carry little signal), which is why FQL maximizes Q directly instead.

Not in the paper's public code. Choices, made to match the conventions of the public code's IQL and IFQL: IQL's value
learning (expectile 0.9, ``iql.value_learning``) supplies the advantage A = min over the online critic's heads of
Q(s, a) - V(s); the flow-matching loss of each sample is weighted by min(exp(alpha * A), 100) with alpha the paper's
AWR inverse temperature (Table 6); the policy acts by Euler sampling the flow from fresh noise (10 steps, clipped to
[-1, 1]), online and at evaluation alike.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fqlcore import flow as flowlib
from fqlcore.agents import base, ifql, iql


@dataclasses.dataclass(frozen=True)
class Config:
    alpha: float = 10.0  # AWR inverse temperature: weights min(exp(alpha * (Q - V)), 100), as IQL's
    expectile: float = 0.9
    hidden_dims: tuple = (512, 512, 512, 512)
    lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    flow_steps: int = 10
    critic_layer_norm: bool = True
    flow_time: str = "uniform"


def init(key, example_batch: dict, config: Config = Config()) -> base.AgentState:
    """The same networks as IFQL: a flow, V(s) and the two-head Q(s, a)."""
    return ifql.init(key, example_batch, config)


def weighted_flow_matching_loss(velocity_fn, observations, actions, weights, key, time_distribution: str = "uniform"):
    """mean_i w_i * (flow-matching loss of sample i), each sample with its own noise and time."""
    keys = jax.random.split(key, actions.shape[0])
    per_sample = jax.vmap(lambda s, a, k: flowlib.flow_matching_loss(velocity_fn, s[None], a[None], k, time_distribution))
    return jnp.mean(weights * per_sample(observations, actions, keys))


def losses(params, state: base.AgentState, batch: dict, key):
    value_loss, metrics, advantage = iql.value_learning(params, state, batch)
    weights = iql.awr_weights(advantage, state.config.alpha)
    actor_loss = weighted_flow_matching_loss(ifql.flow_velocity(state, params), batch["observations"], batch["actions"],
                                             weights, key, state.config.flow_time)
    return value_loss + actor_loss, {**metrics, "actor_loss": actor_loss, "awr_weight_mean": jnp.mean(weights)}


def update(state: base.AgentState, batch: dict):
    state, key = base.next_key(state)
    grads, metrics = jax.grad(losses, has_aux=True)(state.params, state, batch, key)
    return base.apply_gradients(state, grads, state.config.tau), metrics


act = ifql.sample_flow  # the flow from fresh noise: 10 Euler steps, clipped to [-1, 1] (a stochastic policy)

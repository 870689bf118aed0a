"""Implicit Q-Learning (Kostrikov, Nair, Levine, ICLR 2022), the in-sample baseline of the FQL paper.

Offline, a critic bootstrapped on the policy's own actions chases the errors it makes on actions the data never tried.
IQL never queries Q at an action outside the dataset: V(s) is an upper expectile of Q(s, a) over the *dataset's*
actions (an implicit max over the actions the data supports), Q is regressed on r + gamma * V(s'), and the policy is
extracted afterwards by advantage-weighted regression (AWR), which only re-weights dataset actions. The price: AWR with
a Gaussian actor can only pick among what it imitates, and a Gaussian averages separate good modes into one.

The value learning here (``value_learning``, ``awr_weights``) is reused by IFQL and FAWAC.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fqlcore.agents import base, bc, fql
from fqlcore.nets import Critic, GaussianActor, ValueFunction

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Config:
    expectile: float = 0.9  # tau of the expectile regression: 0.5 is SARSA's mean, -> 1 the max over dataset actions
    # AWR temperature: weights exp((Q - V) / awr_temperature), clipped at 100. 0.1 is the inverse temperature
    # ("alpha" / beta) of 10 that the FQL repository's IQL uses by default on OGBench.
    awr_temperature: float = 0.1
    hidden_dims: tuple = (512, 512, 512, 512)
    lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    critic_layer_norm: bool = True  # on the critic and the value function, as in FQL


MAX_AWR_WEIGHT = 100.0


def value_networks(config) -> dict:
    return {"value": ValueFunction(config.hidden_dims, layer_norm=config.critic_layer_norm),
            "critic": Critic(config.hidden_dims, layer_norm=config.critic_layer_norm)}


def init_value_networks(key, observations, actions, config) -> dict:
    """Parameters of V(s) and the two-head Q(s, a), for any agent whose config has IQL's fields."""
    nets = value_networks(config)
    k_value, k_critic = jax.random.split(key)
    return {"value": nets["value"].init(k_value, observations),
            "critic": nets["critic"].init(k_critic, observations, actions)}


def init(key, example_batch: dict, config: Config = Config()) -> base.AgentState:
    obs, actions = example_batch["observations"], example_batch["actions"]
    k_actor, k_value, k_state = jax.random.split(key, 3)
    params = {"actor": GaussianActor(config.hidden_dims, actions.shape[-1]).init(k_actor, obs),
              **init_value_networks(k_value, obs, actions, config)}
    return base.create(k_state, params, ["critic"], config, example_batch)


def expectile_loss(diff, expectile: float):
    """Asymmetric squared error: weight ``expectile`` where diff = target - prediction > 0, 1 - expectile elsewhere."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def value_learning(params, state: base.AgentState, batch: dict):
    """IQL's value and critic losses, summed; returns (loss, metrics, advantage of the dataset actions, no gradient).

    V(s) <- expectile of min over the target heads of Q(s, a); Q(s, a) <- r + gamma * mask * V(s').
    """
    config, nets = state.config, value_networks(state.config)
    obs = batch["observations"]
    q_target = jnp.min(nets["critic"].apply(state.target_params["critic"], obs, batch["actions"]), axis=0)
    v = nets["value"].apply(params["value"], obs)
    value_loss = jnp.mean(expectile_loss(sg(q_target) - v, config.expectile))
    next_v = nets["value"].apply(params["value"], batch["next_observations"])
    critic_loss, q_data = fql.td_loss(params, state, batch, next_v)  # the target is stop-gradient inside
    advantage = sg(q_target - v)
    metrics = {"value_loss": value_loss, "critic_loss": critic_loss, "v_mean": jnp.mean(v), "q_mean": jnp.mean(q_data),
               "adv_mean": jnp.mean(advantage)}
    return value_loss + critic_loss, metrics, advantage


def awr_weights(advantage, temperature: float):
    """exp(A / temperature), clipped at 100 so that one lucky sample cannot dominate a batch."""
    return jnp.minimum(jnp.exp(advantage / temperature), MAX_AWR_WEIGHT)


def losses(params, state: base.AgentState, batch: dict, key):
    del key  # IQL's losses are deterministic
    value_loss, metrics, advantage = value_learning(params, state, batch)
    weights = awr_weights(advantage, state.config.awr_temperature)
    mean, log_std = GaussianActor(state.config.hidden_dims, state.action_dim).apply(params["actor"], batch["observations"])
    actor_loss = -jnp.mean(weights * bc.gaussian_log_prob(mean, log_std, batch["actions"]))
    metrics = {**metrics, "actor_loss": actor_loss, "awr_weight_mean": jnp.mean(weights),
               "mse_to_data": jnp.mean((mean - batch["actions"]) ** 2)}
    return value_loss + actor_loss, metrics


def update(state: base.AgentState, batch: dict):
    state, key = base.next_key(state)
    grads, metrics = jax.grad(losses, has_aux=True)(state.params, state, batch, key)
    return base.apply_gradients(state, grads, state.config.tau), metrics


def act(state: base.AgentState, observations, key):
    """The Gaussian's mean (deterministic, as the paper evaluates Gaussian baselines); already inside [-1, 1] by tanh."""
    del key
    return GaussianActor(state.config.hidden_dims, state.action_dim).apply(state.params["actor"], observations)[0]

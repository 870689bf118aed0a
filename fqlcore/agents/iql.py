"""Implicit Q-Learning (Kostrikov, Nair, Levine, ICLR 2022), the in-sample baseline of the FQL paper.

Offline, a critic bootstrapped on the policy's own actions chases the errors it makes on actions the data never tried.
IQL never queries Q at an action outside the dataset: V(s) is an upper expectile of Q(s, a) over the *dataset's*
actions (an implicit max over the actions the data supports), Q is regressed on r + gamma * V(s'), and the policy is
extracted afterwards by advantage-weighted regression (AWR), which only re-weights dataset actions. The price: AWR with
a Gaussian actor can only pick among what it imitates, and a Gaussian averages separate good modes into one.

As in the paper's public code, the policy is N(mean(s), I): an unsquashed mean and a standard deviation fixed at 1, so
the AWR loss is a weighted squared error to the dataset actions; evaluation acts with the mean clipped to [-1, 1].

The value learning here (``value_learning``, ``awr_weights``) is reused by IFQL and FAWAC.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from fqlcore.agents import base
from fqlcore.nets import MLP, Critic, ValueFunction

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Config:
    # AWR inverse temperature ("alpha" in the paper's tables and code): weights min(exp(alpha * (Q - V)), 100).
    alpha: float = 10.0
    expectile: float = 0.9  # tau of the expectile regression: 0.5 is SARSA's mean, -> 1 the max over dataset actions
    hidden_dims: tuple = (512, 512, 512, 512)  # every network; the paper used 4 x 256 on state-based manipulation
    lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    critic_layer_norm: bool = True  # on the critic and the value function, as in FQL (never on the actor)


MAX_AWR_WEIGHT = 100.0
ACTOR_INIT_SCALE = 0.01  # the mean's output layer starts small, as in the public code


def actor(config, action_dim: int) -> MLP:
    """The mean of the policy N(mean(s), I): no tanh, no learned standard deviation (the public code's IQL)."""
    return MLP(config.hidden_dims, action_dim, final_init_scale=ACTOR_INIT_SCALE)


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
    params = {"actor": actor(config, actions.shape[-1]).init(k_actor, obs),
              **init_value_networks(k_value, obs, actions, config)}
    return base.create(k_state, params, ["critic"], config, example_batch)


def expectile_loss(diff, expectile: float):
    """Asymmetric squared error: weight ``expectile`` where diff = target - prediction > 0, 1 - expectile elsewhere."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def value_learning(params, state: base.AgentState, batch: dict):
    """IQL's value and critic losses, summed; returns (loss, metrics, advantage of the dataset actions, no gradient).

    V(s) <- expectile of min over the TARGET heads of Q(s, a); Q(s, a) <- r + gamma * mask * V(s'), the squared error
    summed over the two heads and averaged over the batch. The advantage min_heads Q(s, a) - V(s) uses the ONLINE
    critic, as the public code's AWR does (only V's regression target uses the target critic).
    """
    config, nets = state.config, value_networks(state.config)
    obs = batch["observations"]
    q_target = jnp.min(nets["critic"].apply(state.target_params["critic"], obs, batch["actions"]), axis=0)
    v = nets["value"].apply(params["value"], obs)
    value_loss = jnp.mean(expectile_loss(sg(q_target) - v, config.expectile))
    next_v = nets["value"].apply(params["value"], batch["next_observations"])
    td_target = sg(batch["rewards"] + config.discount * batch["masks"] * next_v)
    q_data = nets["critic"].apply(params["critic"], obs, batch["actions"])
    critic_loss = jnp.mean(jnp.sum((q_data - td_target) ** 2, axis=0))
    advantage = sg(jnp.min(q_data, axis=0) - v)
    metrics = {"value_loss": value_loss, "critic_loss": critic_loss, "v_mean": jnp.mean(v), "q_mean": jnp.mean(q_data),
               "adv_mean": jnp.mean(advantage)}
    return value_loss + critic_loss, metrics, advantage


def awr_weights(advantage, alpha: float):
    """exp(alpha * A), clipped at 100 so that one lucky sample cannot dominate a batch."""
    return jnp.minimum(jnp.exp(alpha * advantage), MAX_AWR_WEIGHT)


def unit_gaussian_log_prob(mean, actions):
    """log N(actions; mean, I): with the standard deviation fixed at 1, AWR is a weighted squared error."""
    return jnp.sum(-0.5 * (actions - mean) ** 2, axis=-1) - 0.5 * mean.shape[-1] * math.log(2 * math.pi)


def losses(params, state: base.AgentState, batch: dict, key):
    del key  # IQL's losses are deterministic
    value_loss, metrics, advantage = value_learning(params, state, batch)
    weights = awr_weights(advantage, state.config.alpha)
    mean = actor(state.config, state.action_dim).apply(params["actor"], batch["observations"])
    actor_loss = -jnp.mean(weights * unit_gaussian_log_prob(mean, batch["actions"]))
    metrics = {**metrics, "actor_loss": actor_loss, "awr_weight_mean": jnp.mean(weights),
               "mse_to_data": jnp.mean((mean - batch["actions"]) ** 2)}
    return value_loss + actor_loss, metrics


def update(state: base.AgentState, batch: dict):
    state, key = base.next_key(state)
    grads, metrics = jax.grad(losses, has_aux=True)(state.params, state, batch, key)
    return base.apply_gradients(state, grads, state.config.tau), metrics


def act(state: base.AgentState, observations, key):
    """Evaluation: the Gaussian's mean clipped to [-1, 1] (the public code samples at temperature 0)."""
    del key
    return jnp.clip(actor(state.config, state.action_dim).apply(state.params["actor"], observations), -1, 1)


def explore(state: base.AgentState, observations, key):
    """Online fine-tuning: a sample of N(mean, I), clipped to [-1, 1] (the public code samples at temperature 1)."""
    mean = actor(state.config, state.action_dim).apply(state.params["actor"], observations)
    return jnp.clip(mean + jax.random.normal(key, mean.shape), -1, 1)

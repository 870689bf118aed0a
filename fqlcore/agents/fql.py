"""Flow Q-Learning (Park, Li, Levine, ICML 2025), exactly as the book's appendix (``book/method.md``) pins it.

Three networks: a BC flow field v_theta(s, x, t) trained only by flow matching (it stays an expressive behaviour model),
a one-step policy mu_omega(s, z) trained to match the flow's noise-to-action map (distillation) while maximizing Q,
and a two-head critic. No gradient ever runs through the Euler solver.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fqlcore import flow as flowlib
from fqlcore.agents import base
from fqlcore.nets import Critic, OneStepPolicy, VelocityField, WithEncoder

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Config:
    alpha: float = 10.0  # distillation weight: large stays near the data, small maximizes Q
    hidden_dims: tuple = (512, 512, 512, 512)
    lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    flow_steps: int = 10
    q_agg: str = "mean"  # how the TD target combines the two target heads; the actor always uses the mean
    normalize_q_loss: bool = False
    critic_layer_norm: bool = True
    flow_time: str = "uniform"  # flow-time distribution of the BC loss (the book's ablation)
    encoder: str | None = None  # pixels: e.g. "impala_small", one encoder per network (fqlcore.pixels)


def networks(config: Config, action_dim: int) -> dict:
    nets = {"flow": VelocityField(config.hidden_dims, action_dim),
            "onestep": OneStepPolicy(config.hidden_dims, action_dim),
            "critic": Critic(config.hidden_dims, layer_norm=config.critic_layer_norm)}
    if getattr(config, "encoder", None) is None:
        return nets
    from fqlcore import pixels
    return {name: WithEncoder(pixels.encoder(config.encoder), net) for name, net in nets.items()}


def init(key, example_batch: dict, config: Config = Config()) -> base.AgentState:
    obs, actions = example_batch["observations"], example_batch["actions"]
    nets = networks(config, actions.shape[-1])
    k_flow, k_one, k_critic, k_state = jax.random.split(key, 4)
    params = {"flow": nets["flow"].init(k_flow, obs, actions, jnp.zeros(actions.shape[:-1] + (1,))),
              "onestep": nets["onestep"].init(k_one, obs, actions),
              "critic": nets["critic"].init(k_critic, obs, actions)}
    return base.create(k_state, params, ["critic"], config, example_batch)


def flow_actions(state: base.AgentState, observations, noise, params=None):
    """The BC flow's action for noise z: 10 Euler steps, clipped to [-1, 1] (the distillation target)."""
    params = state.params if params is None else params
    field = networks(state.config, state.action_dim)["flow"]
    velocity = lambda s, x, t: field.apply(params["flow"], s, x, t)
    if isinstance(field, WithEncoder):  # pixels: encode once, then integrate on the features
        observations = field.apply(params["flow"], observations, method="encode")
        velocity = lambda s, x, t: field.apply(params["flow"], s, x, t, method="on_features")
    return jnp.clip(flowlib.euler_sample(velocity, observations, noise, state.config.flow_steps), -1.0, 1.0)


def td_loss(params, state: base.AgentState, batch: dict, next_q):
    """Both critic heads regressed on r + gamma * mask * next_q (no gradient through the target); (loss, Q(s, a)).

    Shared by the baselines, which differ only in what ``next_q`` is (IQL: V(s'); ReBRAC: a penalized min).
    """
    critic = networks(state.config, state.action_dim)["critic"]
    target_q = batch["rewards"] + state.config.discount * batch["masks"] * next_q
    q_data = critic.apply(params["critic"], batch["observations"], batch["actions"])
    return jnp.mean((q_data - sg(target_q)) ** 2), q_data


def critic_loss(params, state: base.AgentState, batch: dict, next_actions):
    """TD regression toward r + gamma * mask * agg(Q_target(s', a')) for next actions a' chosen by the caller."""
    critic = networks(state.config, state.action_dim)["critic"]
    next_q = base.aggregate_heads(critic.apply(state.target_params["critic"], batch["next_observations"], next_actions),
                                  state.config.q_agg)
    return td_loss(params, state, batch, next_q)


def losses(params, state: base.AgentState, batch: dict, key):
    config, nets = state.config, networks(state.config, state.action_dim)
    obs, actions = batch["observations"], batch["actions"]
    k_next, k_flow, k_noise = jax.random.split(key, 3)

    # Critic: TD regression toward r + gamma * mask * agg(Q_target(s', clip(mu(s', z')))).
    next_noise = jax.random.normal(k_next, actions.shape)
    next_actions = jnp.clip(nets["onestep"].apply(sg(params["onestep"]), batch["next_observations"], next_noise), -1, 1)
    critic_td, q_data = critic_loss(params, state, batch, next_actions)

    # Actor: BC flow matching + alpha * distillation + Q maximization (critic frozen here).
    velocity = lambda s, x, t: nets["flow"].apply(params["flow"], s, x, t)
    bc_flow_loss = flowlib.flow_matching_loss(velocity, obs, actions, k_flow, config.flow_time)
    noise = jax.random.normal(k_noise, actions.shape)
    target_actions = sg(flow_actions(state, obs, noise, params))
    onestep_actions = nets["onestep"].apply(params["onestep"], obs, noise)
    distill_loss = jnp.mean((onestep_actions - target_actions) ** 2)  # mu's raw output: no clip here
    policy_actions = jnp.clip(onestep_actions, -1, 1)
    q_policy = base.mean_heads(nets["critic"].apply(sg(params["critic"]), obs, policy_actions))
    q_loss = -jnp.mean(q_policy)
    if config.normalize_q_loss:
        q_loss = q_loss * sg(1.0 / jnp.mean(jnp.abs(q_policy)))
    actor_loss = bc_flow_loss + config.alpha * distill_loss + q_loss

    metrics = {"critic_loss": critic_td, "q_mean": jnp.mean(q_data), "bc_flow_loss": bc_flow_loss,
               "distill_loss": distill_loss, "q_loss": q_loss, "actor_loss": actor_loss,
               "mse_to_data": jnp.mean((policy_actions - actions) ** 2)}
    return critic_td + actor_loss, metrics


def update(state: base.AgentState, batch: dict):
    state, key = base.next_key(state)
    grads, metrics = jax.grad(losses, has_aux=True)(state.params, state, batch, key)
    return base.apply_gradients(state, grads, state.config.tau), metrics


def act(state: base.AgentState, observations, key):
    """The stochastic one-step policy: fresh noise z ~ N(0, I) at every call, output clipped to [-1, 1]."""
    noise = jax.random.normal(key, state.batch_shape(observations) + (state.action_dim,))
    onestep = networks(state.config, state.action_dim)["onestep"]
    return jnp.clip(onestep.apply(state.params["onestep"], observations, noise), -1, 1)

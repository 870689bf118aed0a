"""ReBRAC (Tarasov et al., NeurIPS 2023): TD3+BC revisited, the strongest Gaussian-free baseline of the FQL paper.

Behaviour-regularized actor-critic in its simplest form: a deterministic actor maximizes Q while a squared distance
to the dataset action keeps it where the critic was trained, and the critic's target is penalized for next actions
that stray from the data. ReBRAC's point was that this plain recipe, with the design choices that had been scattered
across papers (LayerNorm critic, deep networks, decoupled actor and critic penalties, delayed actor updates, a
Q-scale-free actor loss), is as strong as far more elaborate methods. It is FQL's closest relative: FQL keeps the
"maximize Q, stay near the data" objective but measures "near" with an expressive flow instead of a squared distance
to one dataset action, which a deterministic (unimodal) actor cannot satisfy when the data has several modes.

Conventions of the FQL repository's ReBRAC (and ReBRAC's own code), kept because the per-task alphas assume them:
the actor is tanh of an MLP whose output layer starts at scale 0.01 (no LayerNorm on the actor); the BC penalties are
*sums* over action dimensions (not means); both the actor's Q and the TD target take the *min* of the two heads, and
the actor's Q term is divided by mean |Q| (no gradient). The actor and the targets move on every second update, the
2nd, 4th, ... (the public loop counts updates from 1 and updates the actor when the count is even); on the other steps
the actor's loss is masked to zero (one Adam over all networks, as everywhere in ``fqlcore``) and the targets stay.
Online, the actor explores with N(0, 0.2^2) noise clipped at +-0.5 (``explore``); evaluation uses the plain actor.
"""
from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp

from fqlcore.agents import base, fql
from fqlcore.nets import MLP, Critic

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Config:
    alpha_actor: float = 0.0  # weight of sum((mu(s) - a)^2) in the actor loss (per task: configs.method_config)
    # Weight of sum((a' - a'_data)^2) subtracted from the TD target, with a'_data the dataset's next action in the
    # episode (``batch["next_actions"]``, which ``data.sample`` provides). A batch without it skips the penalty, with a
    # warning at init when alpha_critic > 0.
    alpha_critic: float = 0.0
    hidden_dims: tuple = (512, 512, 512, 512)
    lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    actor_freq: int = 2  # the actor and the targets move every actor_freq updates (TD3's delayed policy update)
    actor_noise: float = 0.2  # std of TD3's target policy smoothing noise, and of the online exploration noise
    actor_noise_clip: float = 0.5
    critic_layer_norm: bool = True


ACTOR_INIT_SCALE = 0.01  # the actor's output layer starts small: tanh(~0), actions near 0 (the public code's value)


def networks(config: Config, action_dim: int) -> dict:
    return {"actor": MLP(config.hidden_dims, action_dim, final_init_scale=ACTOR_INIT_SCALE),
            "critic": Critic(config.hidden_dims, layer_norm=config.critic_layer_norm)}


def init(key, example_batch: dict, config: Config = Config()) -> base.AgentState:
    obs, actions = example_batch["observations"], example_batch["actions"]
    if config.alpha_critic > 0 and "next_actions" not in example_batch:
        warnings.warn(f"ReBRAC: alpha_critic={config.alpha_critic} but the batches have no 'next_actions'; the critic "
                      "penalty is skipped (only the actor's BC penalty is used)", stacklevel=2)
    nets = networks(config, actions.shape[-1])
    k_actor, k_critic, k_state = jax.random.split(key, 3)
    params = {"actor": nets["actor"].init(k_actor, obs), "critic": nets["critic"].init(k_critic, obs, actions)}
    return base.create(k_state, params, ["critic", "actor"], config, example_batch)


def actor_actions(state: base.AgentState, actor_params, observations):
    """The deterministic policy: tanh of an MLP (the mode of the public code's tanh-squashed Gaussian)."""
    return jnp.tanh(networks(state.config, state.action_dim)["actor"].apply(actor_params, observations))


def losses(params, state: base.AgentState, batch: dict, key, actor_weight):
    config, critic = state.config, networks(state.config, state.action_dim)["critic"]
    obs, actions, next_obs = batch["observations"], batch["actions"], batch["next_observations"]

    # Critic: TD target from the target actor with clipped smoothing noise, min of the target heads, minus the penalty.
    next_actions = actor_actions(state, state.target_params["actor"], next_obs)
    noise = jnp.clip(config.actor_noise * jax.random.normal(key, next_actions.shape), -config.actor_noise_clip,
                     config.actor_noise_clip)
    next_actions = jnp.clip(next_actions + noise, -1.0, 1.0)
    next_q = jnp.min(critic.apply(state.target_params["critic"], next_obs, next_actions), axis=0)
    if "next_actions" in batch:
        next_q = next_q - config.alpha_critic * jnp.sum((next_actions - batch["next_actions"]) ** 2, axis=-1)
    critic_loss, q_data = fql.td_loss(params, state, batch, next_q)

    # Actor: -lambda * Q + alpha_actor * ||mu(s) - a||^2 with lambda = 1 / mean|Q| (no gradient), critic frozen.
    policy_actions = actor_actions(state, params["actor"], obs)
    q_policy = jnp.min(critic.apply(sg(params["critic"]), obs, policy_actions), axis=0)
    bc_loss = jnp.mean(jnp.sum((policy_actions - actions) ** 2, axis=-1))
    q_loss = -jnp.mean(q_policy) * sg(1.0 / jnp.mean(jnp.abs(q_policy)))
    actor_loss = q_loss + config.alpha_actor * bc_loss

    metrics = {"critic_loss": critic_loss, "q_mean": jnp.mean(q_data), "actor_loss": actor_loss, "q_loss": q_loss,
               "bc_loss": bc_loss, "mse_to_data": jnp.mean((policy_actions - actions) ** 2)}
    return critic_loss + actor_weight * actor_loss, metrics


def is_actor_step(step, actor_freq: int):
    """Whether update number ``step`` (counted from 0) moves the actor and the targets: the public loop counts from 1
    and moves them when the count is a multiple of actor_freq, so the first update trains the critic only."""
    return (step + 1) % actor_freq == 0


def update(state: base.AgentState, batch: dict):
    state, key = base.next_key(state)
    full_update = is_actor_step(state.step, state.config.actor_freq).astype(jnp.float32)  # traced: no recompilation
    grads, metrics = jax.grad(losses, has_aux=True)(state.params, state, batch, key, full_update)
    return base.apply_gradients(state, grads, state.config.tau * full_update), metrics


def act(state: base.AgentState, observations, key):
    """Evaluation: the actor's tanh output, deterministic (the public code samples at temperature 0: no noise)."""
    del key
    return actor_actions(state, state.params["actor"], observations)


def explore(state: base.AgentState, observations, key):
    """Online fine-tuning: the actor's action plus N(0, actor_noise^2) noise clipped at +-actor_noise_clip, then clipped
    to [-1, 1] (the public code samples at temperature 1)."""
    actions = actor_actions(state, state.params["actor"], observations)
    noise = jnp.clip(state.config.actor_noise * jax.random.normal(key, actions.shape), -state.config.actor_noise_clip,
                     state.config.actor_noise_clip)
    return jnp.clip(actions + noise, -1.0, 1.0)

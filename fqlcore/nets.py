"""The networks FQL needs, as Flax Linen modules (pure functions of their parameters).

Conventions from the paper's code: GELU MLPs with Xavier-uniform kernels; LayerNorm *after* the activation, used on the
critic only; the flow time enters as a raw scalar concatenated to the input.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

xavier_uniform = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


class MLP(nn.Module):
    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False
    # Scale of the output layer's variance-scaling (fan_avg, uniform) init: the public code starts its Gaussian and
    # deterministic actors (IQL, ReBRAC) at 0.01, so that they begin near a = 0 instead of at a random action.
    final_init_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        for width in self.hidden_dims:
            x = nn.gelu(nn.Dense(width, kernel_init=xavier_uniform)(x))
            if self.layer_norm:
                x = nn.LayerNorm()(x)
        final_init = nn.initializers.variance_scaling(self.final_init_scale, "fan_avg", "uniform")
        return nn.Dense(self.output_dim, kernel_init=final_init)(x)


class VelocityField(nn.Module):
    """v_theta(s, x, t): the velocity that carries noise x at time 0 to an action at time 1."""
    hidden_dims: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, observations, x, t):
        t = jnp.asarray(t, x.dtype)
        if t.ndim == x.ndim - 1:  # one time per sample, given without the trailing axis
            t = t[..., None]
        t = jnp.broadcast_to(t, x.shape[:-1] + (1,))
        return MLP(self.hidden_dims, self.action_dim)(jnp.concatenate([observations, x, t], axis=-1))


class OneStepPolicy(nn.Module):
    """mu_omega(s, z): maps noise to an action in a single network call."""
    hidden_dims: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, observations, z):
        return MLP(self.hidden_dims, self.action_dim)(jnp.concatenate([observations, z], axis=-1))


class Critic(nn.Module):
    """An ensemble of ``num_heads`` independent Q(s, a) heads; returns shape (num_heads, *batch)."""
    hidden_dims: Sequence[int]
    num_heads: int = 2
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations, actions):
        heads = nn.vmap(MLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                        axis_size=self.num_heads)
        q = heads(self.hidden_dims, 1, self.layer_norm)(jnp.concatenate([observations, actions], axis=-1))
        return q[..., 0]


class ValueFunction(nn.Module):
    """V(s), for IQL-style value learning."""
    hidden_dims: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations):
        return MLP(self.hidden_dims, 1, self.layer_norm)(observations)[..., 0]


class GaussianActor(nn.Module):
    """Gaussian BC's policy (``agents.bc``): a tanh-squashed mean and a state-independent learned log-std. The paper's
    IQL and ReBRAC do not use it (``agents.iql``: N(mean, I) with an unsquashed mean; ``agents.rebrac``: tanh(MLP))."""
    hidden_dims: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, observations):
        mean = jnp.tanh(MLP(self.hidden_dims, self.action_dim)(observations))
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return mean, jnp.broadcast_to(jnp.clip(log_std, -5.0, 2.0), mean.shape)


class WithEncoder(nn.Module):
    """``net(encoder(observations), *rest)``: a network that first encodes its observation (pixels: an IMPALA encoder).

    The encoder's parameters live inside this network's, so each network (and a target copy) has its own encoder.
    """
    encoder: nn.Module
    net: nn.Module

    def __call__(self, observations, *args):
        return self.net(self.encoder(observations), *args)

    def encode(self, observations):
        return self.encoder(observations)

    def on_features(self, features, *args):
        """The network on already encoded observations (the flow encodes once, not at every Euler step)."""
        return self.net(features, *args)

"""Pixel-based tasks: the small IMPALA encoder, random-shift augmentation and frame stacking (the book's appendix,
``book/method.md``, A.4).

- ``ImpalaEncoder`` / ``ENCODERS``: the paper code's encoders. ``impala_small`` (the one every visual task uses) is
  three conv stacks of 16, 32, 32 channels, each a 3x3 conv, a 3x3 max-pool of stride 2 and ONE residual block (two
  ReLU-conv pairs), then ReLU, flatten and a dense layer of 512 with GELU. It takes uint8 images and divides by 255
  itself, so observations stay uint8 until here. FQL gives the critic, the BC flow and the one-step policy their own
  encoder (``fql.Config(encoder="impala_small")``); the critic's lives in ``params["critic"]``, so the target critic
  has its own Polyak-averaged copy.
- ``random_shift`` / ``augment``: with probability ``p_aug`` (0.5) a batch is augmented; then every image gets its own
  shift (edge-pad by 3 pixels, crop back at a random offset), the same offset for s and s' of a sample.
- ``stack_frames`` / ``sample``: a batch of ``frame_stack`` (3) consecutive frames concatenated along channels,
  repeating the episode's first frame where the history runs past its start. The dataset stores single frames (uint8);
  stacks are built at sampling time, inside jit, from the ``terminals`` that mark each episode's last transition.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fqlcore import data
from fqlcore.nets import MLP, xavier_uniform

PADDING = 3  # pixels of edge padding for the random shift
P_AUG = 0.5  # probability that a batch is augmented
FRAME_STACK = 3


class ResnetStack(nn.Module):
    """conv 3x3 -> max-pool 3x3 / 2 -> ``num_blocks`` residual blocks (relu, conv, relu, conv, + input)."""
    features: int
    num_blocks: int

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(nn.Conv, self.features, (3, 3), strides=1, padding="SAME", kernel_init=xavier_uniform)
        x = conv()(x)
        x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
        for _ in range(self.num_blocks):
            x = x + conv()(nn.relu(conv()(nn.relu(x))))
        return x


class ImpalaEncoder(nn.Module):
    """IMPALA-style image encoder (Espeholt et al., 2018) as in FQL's code: uint8 (..., H, W, C) -> (..., 512)."""
    stack_sizes: Sequence[int] = (16, 32, 32)
    num_blocks: int = 2
    mlp_dims: Sequence[int] = (512,)

    @nn.compact
    def __call__(self, images):
        x = images.astype(jnp.float32) / 255.0
        batch_shape = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        for features in self.stack_sizes:
            x = ResnetStack(features, self.num_blocks)(x)
        x = nn.relu(x).reshape(batch_shape + (-1,))
        *hidden, last = self.mlp_dims  # an MLP whose last layer is activated too (GELU, as every MLP here)
        return nn.gelu(MLP(tuple(hidden), last)(x))


ENCODERS = {
    "impala": ImpalaEncoder,
    "impala_small": functools.partial(ImpalaEncoder, num_blocks=1),  # the paper's visual tasks
    "impala_debug": functools.partial(ImpalaEncoder, stack_sizes=(4, 4), num_blocks=1, mlp_dims=(32,)),  # tests
}


def encoder(name: str) -> nn.Module:
    """A fresh (unbound) encoder module by name, e.g. ``encoder("impala_small")``."""
    try:
        return ENCODERS[name]()
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}: expected one of {sorted(ENCODERS)}") from None


# ----------------------------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------------------------

def shift_offsets(key, batch_size: int, padding: int = PADDING):
    """(batch_size, 2) crop offsets (row, column) in [0, 2 * padding]: offset ``padding`` is no shift."""
    return jax.random.randint(key, (batch_size, 2), 0, 2 * padding + 1)


def shift(images, offsets, padding: int = PADDING):
    """Edge-pads each image (N, H, W, C) by ``padding`` and crops it back to (H, W) at its own ``offsets[i]``."""
    def one(image, offset):
        padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode="edge")
        return jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), image.shape)

    return jax.vmap(one)(images, offsets)


def random_shift(images, key, padding: int = PADDING):
    """Every image gets its own random shift of up to ``padding`` pixels in each direction."""
    return shift(images, shift_offsets(key, images.shape[0], padding), padding)


def augment(batch: dict, key, p_aug: float = P_AUG, padding: int = PADDING) -> dict:
    """With probability ``p_aug`` shifts every image of the batch (s and s' of a sample by the same offset)."""
    k_apply, k_offsets = jax.random.split(key)
    offsets = shift_offsets(k_offsets, batch["observations"].shape[0], padding)
    apply = jax.random.uniform(k_apply) < p_aug
    out = dict(batch)
    for name in ("observations", "next_observations"):
        out[name] = jnp.where(apply, shift(batch[name], offsets, padding), batch[name])
    return out


# ----------------------------------------------------------------------------------------------------------------
# Frame stacking and sampling
# ----------------------------------------------------------------------------------------------------------------

def history(terminals, idx, frame_stack: int = FRAME_STACK):
    """(frame_stack, batch) row indices: row ``idx - i`` for i = frame_stack - 1, ..., 0, but never before the start of
    ``idx``'s episode (row j starts an episode when j == 0 or ``terminals[j - 1]`` is set): the first frame repeats."""
    rows = [idx]
    current = idx
    for _ in range(frame_stack - 1):
        previous = jnp.maximum(current - 1, 0)
        same_episode = (current > 0) & (terminals[previous] == 0)
        current = jnp.where(same_episode, previous, current)
        rows.append(current)
    return jnp.stack(rows[::-1])


def stack_frames(dataset: data.Dataset, idx, frame_stack: int = FRAME_STACK):
    """(observations, next_observations) of rows ``idx`` with ``frame_stack`` frames concatenated along channels.

    s_t = [o_{t-k+1}, ..., o_t] and s_{t+1} = [o_{t-k+2}, ..., o_t, o_{t+1}], with o_{t+1} the row's next observation.
    """
    rows = history(dataset.terminals, idx, frame_stack)
    frames = [dataset.observations[r] for r in rows]
    observations = jnp.concatenate(frames, axis=-1)
    next_observations = jnp.concatenate(frames[1:] + [dataset.next_observations[idx]], axis=-1)
    return observations, next_observations


def sample(dataset: data.Dataset, key, batch_size: int, frame_stack: int | None = FRAME_STACK,
           p_aug: float | None = P_AUG) -> dict:
    """``data.sample`` for pixel datasets (runs inside jit): frame-stacked, then augmented with probability ``p_aug``.

    ``functools.partial(pixels.sample, frame_stack=3, p_aug=0.5)`` has ``data.sample``'s signature.
    """
    k_idx, k_aug = jax.random.split(key)
    idx = jax.random.randint(k_idx, (batch_size,), 0, dataset.size)
    batch = data.rows(dataset, idx)
    if frame_stack is not None and frame_stack > 1:
        batch["observations"], batch["next_observations"] = stack_frames(dataset, idx, frame_stack)
    if p_aug:
        batch = augment(batch, k_aug, p_aug)
    return batch

"""Pixel tasks (book/method.md, A.4): random shifts, augmentation probability, frame stacking, and a pixel FQL update."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fqlcore import data, nets, pixels
from fqlcore.agents import fql

H = W = 16  # tiny frames keep the test fast; the shapes of the code do not depend on 64


def coordinate_images(n, h=H, w=W):
    """Images whose pixel (i, j) holds (i, j, sample): a shift is read off the top-left pixel of the crop."""
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.stack([i, j, np.zeros_like(i)], -1)[None].repeat(n, 0)
    img[..., 2] = np.arange(n)[:, None, None]
    return jnp.asarray(img, jnp.uint8)


def test_shift_is_within_padding_and_edge_padded():
    images = coordinate_images(64)
    offsets = pixels.shift_offsets(jax.random.PRNGKey(0), 64)
    assert offsets.min() >= 0 and offsets.max() <= 2 * pixels.PADDING
    shifted = np.asarray(pixels.shift(images, offsets))
    assert shifted.shape == images.shape and shifted.dtype == np.uint8
    for n in range(64):
        dy, dx = np.asarray(offsets[n]) - pixels.PADDING  # the crop starts dy, dx pixels from the original corner
        # the centre of the crop is the original image moved by (dy, dx): edge padding clamps at the borders
        rows, cols = np.clip(np.arange(H) + dy, 0, H - 1), np.clip(np.arange(W) + dx, 0, W - 1)
        np.testing.assert_array_equal(shifted[n, :, :, 0], np.broadcast_to(rows[:, None], (H, W)))
        np.testing.assert_array_equal(shifted[n, :, :, 1], np.broadcast_to(cols[None, :], (H, W)))
        assert (shifted[n, :, :, 2] == n).all()  # no mixing between samples
    assert len({tuple(o) for o in np.asarray(offsets)}) > 10  # every image gets its own offset


def test_augment_uses_the_same_offset_for_s_and_next_s():
    obs = coordinate_images(32)
    batch = {"observations": obs, "next_observations": obs, "actions": jnp.zeros((32, 2))}
    for seed in range(20):
        out = pixels.augment(batch, jax.random.PRNGKey(seed), p_aug=1.0)
        np.testing.assert_array_equal(out["observations"], out["next_observations"])
        dy = np.asarray(out["observations"][:, H // 2, W // 2, 0], int) - H // 2
        dx = np.asarray(out["observations"][:, H // 2, W // 2, 1], int) - W // 2
        assert np.abs(dy).max() <= 3 and np.abs(dx).max() <= 3


def test_about_half_of_the_batches_are_augmented():
    obs = coordinate_images(16)
    batch = {"observations": obs, "next_observations": obs}
    aug = jax.jit(jax.vmap(lambda k: (pixels.augment(batch, k)["observations"] != obs).any()))
    changed = np.asarray(aug(jax.random.split(jax.random.PRNGKey(1), 400)))
    assert 0.4 < np.mean(changed) < 0.6, np.mean(changed)
    never = pixels.augment(batch, jax.random.PRNGKey(0), p_aug=0.0)
    np.testing.assert_array_equal(never["observations"], obs)


def frame_dataset(episode_lengths=(5, 4, 6)):
    """Single-channel frames whose value is the row index + 1; terminals mark each episode's last transition."""
    n = sum(episode_lengths)
    frames = (np.arange(n) + 1).astype(np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
    next_frames = frames + 100  # distinct, so the test sees where s' comes from
    terminals = np.zeros(n, np.float32)
    terminals[np.cumsum(episode_lengths) - 1] = 1
    return data.from_arrays(frames, np.zeros((n, 2)), np.zeros(n), next_frames, np.ones(n), terminals), terminals


def test_frame_stack_repeats_the_first_frame_at_an_episode_start():
    dataset, _ = frame_dataset((5, 4, 6))  # episodes start at rows 0, 5, 9
    idx = jnp.arange(15)
    obs, next_obs = pixels.stack_frames(dataset, idx, 3)
    assert obs.shape == (15, 4, 4, 3) and obs.dtype == jnp.uint8
    got = np.asarray(obs[:, 0, 0, :]) - 1  # the row each stacked frame came from
    expected = {0: [0, 0, 0], 1: [0, 0, 1], 2: [0, 1, 2], 4: [2, 3, 4], 5: [5, 5, 5], 6: [5, 5, 6], 9: [9, 9, 9],
                10: [9, 9, 10], 14: [12, 13, 14]}
    for row, rows in expected.items():
        assert list(got[row]) == rows, (row, got[row])
    # s' = [o_{t-1}, o_t, o'_t]: the stack shifted by one, ending in the row's own next observation
    np.testing.assert_array_equal(next_obs[:, 0, 0, :2], obs[:, 0, 0, 1:])
    np.testing.assert_array_equal(np.asarray(next_obs[:, 0, 0, 2]), np.arange(15) + 101)


def test_sample_stacks_and_stays_uint8():
    dataset, _ = frame_dataset()
    batch = jax.jit(lambda k: pixels.sample(dataset, k, 32))(jax.random.PRNGKey(0))
    assert batch["observations"].shape == (32, 4, 4, 3) and batch["observations"].dtype == jnp.uint8
    assert batch["next_observations"].shape == (32, 4, 4, 3) and batch["actions"].shape == (32, 2)


def test_encoder_shapes_and_names():
    images = jnp.zeros((2, 64, 64, 9), jnp.uint8)
    small = pixels.encoder("impala_small")
    params = jax.eval_shape(small.init, jax.random.PRNGKey(0), images)  # shapes only: no compilation
    assert jax.eval_shape(small.apply, params, images).shape == (2, 512)
    convs = [k for k in jax.tree_util.tree_leaves_with_path(params) if "Conv" in jax.tree_util.keystr(k[0])]
    assert len(convs) == 2 * 3 * 3  # 3 stacks x (1 conv + 1 block of 2 convs), kernel and bias each
    with pytest.raises(ValueError, match="impala_small"):
        pixels.encoder("resnet")


def test_pixel_fql_update_runs_under_jit_with_uint8_observations():
    n, k = 64, 3
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, 24, 24, 3), np.uint8)  # small frames: compiling the convolutions dominates
    terminals = np.zeros(n, np.float32)
    terminals[[31, 63]] = 1
    dataset = data.from_arrays(frames, rng.uniform(-1, 1, (n, 2)), -np.ones(n), np.roll(frames, -1, 0), np.ones(n),
                               terminals)
    assert dataset.observations.dtype == jnp.uint8
    batch = jax.jit(lambda key: pixels.sample(dataset, key, 8, frame_stack=k))(jax.random.PRNGKey(0))
    config = fql.Config(hidden_dims=(16,), encoder="impala_debug")
    state = jax.jit(fql.init, static_argnums=2)(jax.random.PRNGKey(0), batch, config)  # eager init is slow on CPU
    # one encoder per network, the critic's inside params["critic"], so the target critic has its own copy
    for name in ("flow", "onestep", "critic"):
        assert "encoder" in state.params[name]["params"], name
    assert "encoder" in state.target_params["critic"]["params"]

    @jax.jit
    def step(state, key):
        return fql.update(state, pixels.sample(dataset, key, 8, frame_stack=k))

    for key in jax.random.split(jax.random.PRNGKey(1), 2):
        state, metrics = step(state, key)
    assert int(state.step) == 2
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    actions = jax.jit(fql.act)(state, batch["observations"], jax.random.PRNGKey(2))
    assert actions.shape == (8, 2) and float(jnp.abs(actions).max()) <= 1.0


def test_no_encoder_keeps_the_state_networks():
    config = fql.Config(hidden_dims=(8,))
    assert config.encoder is None
    assert not any(isinstance(net, nets.WithEncoder) for net in fql.networks(config, 2).values())
    assert all(isinstance(net, nets.WithEncoder)
               for net in fql.networks(dataclasses.replace(config, encoder="impala_small"), 2).values())

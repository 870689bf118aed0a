"""Datasets: validation with clear errors, .npz round trips, sampling and appending inside jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fqlcore import data


def arrays(n=10, obs=3, act=2):
    rng = np.random.default_rng(0)
    return dict(observations=rng.normal(size=(n, obs)), actions=rng.uniform(-1, 1, (n, act)), rewards=rng.normal(size=n),
                next_observations=rng.normal(size=(n, obs)), masks=np.ones(n), terminals=np.zeros(n))


@pytest.mark.parametrize("field,bad,message", [
    ("rewards", np.zeros(9), r"rewards has shape \(9,\) but actions has 10 rows"),
    ("next_observations", np.zeros((10, 4)), "differ"),
    ("actions", np.zeros(10), r"actions must have shape \(N, action_dim\)"),
    ("actions", np.full((10, 2), np.nan), "NaN"),
    ("masks", np.ones((10, 2)), r"masks must have shape \(N,\)"),
])
def test_wrong_shapes_and_values_are_named(field, bad, message):
    with pytest.raises(ValueError, match=message):
        data.from_arrays(**{**arrays(), field: bad})


def test_next_actions_stay_inside_the_episode():
    terminals = np.zeros(10)
    terminals[3] = 1  # an episode in rows 0-3, and one still running in rows 4-9 (as an online buffer has)
    ds = data.from_arrays(**{**arrays(), "terminals": terminals}, capacity=12)  # 2 free rows, never read
    batch = jax.jit(data.rows)(ds, jnp.arange(10))
    actions = np.asarray(ds.actions)
    expected = actions[[1, 2, 3, 3, 5, 6, 7, 8, 9, 9]]  # the next row's action; an episode's last row keeps its own
    np.testing.assert_array_equal(batch["next_actions"], expected)
    np.testing.assert_array_equal(batch["actions"], actions[:10])
    sampled = data.sample(ds, jax.random.PRNGKey(0), 64)
    assert sampled["next_actions"].shape == (64, 2)


def test_npz_round_trip_and_errors(tmp_path):
    ds = data.from_arrays(**arrays())
    data.save_npz(ds, tmp_path / "d.npz")
    again = data.load_npz(tmp_path / "d.npz")
    for f in data.FIELDS:
        np.testing.assert_array_equal(getattr(ds, f), getattr(again, f))
    with pytest.raises(FileNotFoundError, match="no dataset file"):
        data.load_npz(tmp_path / "missing.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="corrupt"):
        data.load_npz(tmp_path / "corrupt.npz")
    np.savez(tmp_path / "partial.npz", observations=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="lacks the fields"):
        data.load_npz(tmp_path / "partial.npz")


def test_an_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "checkpoint.npz"
    data.write_npz(path, {"step": np.array(1)})

    class Interrupted:  # Ctrl-C in the middle of writing the second array
        def __array__(self, *args, **kwargs):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        data.write_npz(path, {"step": np.array(2), "params": Interrupted()})
    assert int(data.read_npz(path, "checkpoint", "")["step"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]  # no temporary file left behind


def test_sampling_only_sees_valid_rows_and_append_fills_them():
    ds = data.from_arrays(**arrays(n=4), capacity=8)
    assert ds.capacity == 8 and int(ds.size) == 4
    batch = jax.jit(data.sample, static_argnums=2)(ds, jax.random.PRNGKey(0), 1000)
    assert float(jnp.abs(batch["observations"]).sum(-1).min()) > 0, "padding rows (zeros) must never be sampled"
    transition = {f: np.asarray(getattr(ds, f))[0] for f in data.FIELDS}
    grown = jax.jit(data.append)(ds, transition)
    assert int(grown.size) == 5 and data.has_room(grown)
    np.testing.assert_array_equal(grown.observations[4], ds.observations[0])

"""Offline datasets as pytrees of device arrays, sampled inside jit (no host round trip per update).

A ``Dataset`` has a fixed capacity and a ``size``: the first ``size`` rows are valid. Offline, size == capacity; for
offline-to-online fine-tuning new transitions are written into the free rows by ``append`` without changing shapes,
so the jitted update never recompiles.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
import zipfile

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

FIELDS = ("observations", "actions", "rewards", "next_observations", "masks", "terminals")
ACTION_LIMIT = 1.0 - 1e-5  # dataset actions are clipped to [-1 + 1e-5, 1 - 1e-5] on load (the paper's convention)


@flax.struct.dataclass
class Dataset:
    observations: jax.Array  # (capacity, *obs_shape)
    actions: jax.Array  # (capacity, action_dim), inside [-1, 1]
    rewards: jax.Array  # (capacity,)
    next_observations: jax.Array  # (capacity, *obs_shape)
    masks: jax.Array  # (capacity,) 0 where the episode truly terminated (no bootstrapping), else 1
    terminals: jax.Array  # (capacity,) 1 at the last transition of every stored episode (for bookkeeping)
    size: jax.Array  # () int32: rows [0, size) are valid

    @property
    def capacity(self) -> int:
        return self.actions.shape[0]

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return self.observations.shape[1:]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[-1]


def _numeric(name: str, x) -> np.ndarray:
    """``x`` as a real-valued array, or an error naming the field."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{name} has dtype {x.dtype}; expected real numbers (float, int or bool): convert the field, "
                         "e.g. np.asarray(x, np.float32)")
    return x


def _finite(name: str, x: np.ndarray) -> None:
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN or inf value(s): clean the dataset (drop or fix those rows) "
                         "before training")


def from_arrays(observations, actions, rewards, next_observations, masks, terminals=None, capacity=None) -> Dataset:
    """Validates every field, clips actions, and puts the arrays on the device; ``capacity`` > N leaves room for
    ``append``. A bad field is refused here, by name, rather than found later as a NaN loss."""
    observations, next_observations = _numeric("observations", observations), _numeric("next_observations", next_observations)
    actions = _numeric("actions", actions)
    n = len(actions)
    if actions.ndim != 2:
        raise ValueError(f"actions must have shape (N, action_dim), got {actions.shape}")
    if n == 0:
        raise ValueError("the dataset is empty: expected at least one transition")
    terminals = np.zeros(n, np.float32) if terminals is None else terminals
    columns = {"observations": observations, "next_observations": next_observations, "rewards": _numeric("rewards", rewards),
               "masks": _numeric("masks", masks), "terminals": _numeric("terminals", terminals)}
    for name, column in columns.items():
        if column.ndim == 0 or len(column) != n:
            raise ValueError(f"{name} has shape {column.shape} but actions has {n} rows: every field needs one row per "
                             "transition")
    if observations.ndim < 2:
        raise ValueError(f"observations must have shape (N, obs_dim) (states) or (N, height, width, channels) (pixels), "
                         f"got {observations.shape}: reshape 1-D observations to (N, 1)")
    pixels = observations.dtype == np.uint8
    if observations.shape != next_observations.shape or pixels != (next_observations.dtype == np.uint8):
        raise ValueError(f"observations {observations.shape} {observations.dtype} and next_observations "
                         f"{next_observations.shape} {next_observations.dtype} differ: both must be uint8 pixels or both "
                         "real-valued states, of one shape")
    if pixels and observations.ndim != 4:
        raise ValueError(f"observations are uint8 with shape {observations.shape}: uint8 is read as pixels, which need "
                         "(N, height, width, channels); store state observations as float32")
    for name in ("rewards", "masks", "terminals"):
        if columns[name].ndim != 1:
            raise ValueError(f"{name} must have shape (N,), got {columns[name].shape}")
    for name, column in {"actions": actions, **columns}.items():
        _finite(name, column)
    for name in ("masks", "terminals"):
        if not np.all((columns[name] == 0) | (columns[name] == 1)):
            raise ValueError(f"{name} must be 0 or 1 (masks: 0 where the episode truly ended, no bootstrapping), found "
                             f"{np.unique(columns[name][(columns[name] != 0) & (columns[name] != 1)])[:5]}")
    outside = np.abs(actions) > 1.0
    if np.any(outside):
        warnings.warn(f"{int(outside.sum())} action value(s) lie outside [-1, 1] (largest |a| = "
                      f"{float(np.abs(actions).max()):.4g}); they are clipped to [-{ACTION_LIMIT}, {ACTION_LIMIT}]. "
                      "If your actions have another range, rescale them to [-1, 1] first.", stacklevel=2)
    capacity = n if capacity is None else capacity
    if capacity < n:
        raise ValueError(f"capacity {capacity} is smaller than the {n} transitions given")

    def pad(x, dtype):
        out = np.zeros((capacity,) + x.shape[1:], dtype)
        out[:n] = x
        return jnp.asarray(out)

    obs_dtype = np.uint8 if pixels else np.float32
    return Dataset(observations=pad(observations, obs_dtype), actions=pad(np.clip(actions, -ACTION_LIMIT, ACTION_LIMIT), np.float32),
                   rewards=pad(columns["rewards"], np.float32), next_observations=pad(next_observations, obs_dtype),
                   masks=pad(columns["masks"], np.float32), terminals=pad(columns["terminals"], np.float32),
                   size=jnp.asarray(n, jnp.int32))


@contextlib.contextmanager
def replacing(path, mode: str = "wb"):
    """A file of this writer's own beside ``path`` that replaces ``path`` only once the block has finished, so a crash,
    Ctrl-C, a full disk or a second writer leaves the old file or a whole new one, never half of one. Every file
    fqlcore writes whole (datasets, checkpoints, manifests, histories) goes through here."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from the rest of a shared group
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_npz(path, arrays: dict, compress: bool = False) -> None:
    """Writes arrays to ``path`` atomically (``replacing``)."""
    with replacing(path) as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)


def read_npz(path, what: str, fix: str) -> dict:
    """Every array of an .npz file, without pickle; a file that is not one (a text file, an .npy, a truncated or
    pickled one) raises an error naming ``what`` it should hold and how to ``fix`` it."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{what} {path!r} is not an .npz file (a zip archive of numpy arrays): it is truncated, or of "
                         f"another format; {fix}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"{what} {path!r} holds object (pickled) arrays, which fqlcore never loads: store plain "
                             f"numeric arrays; {fix}") from None
        raise ValueError(f"{what} {path!r} is unreadable ({e}); {fix}") from e
    except Exception as e:  # a damaged archive
        raise ValueError(f"{what} {path!r} is unreadable ({e}); {fix}") from e


def save_npz(dataset: Dataset, path) -> None:
    """Writes the valid rows to ``path`` atomically."""
    n = int(dataset.size)
    write_npz(path, {f: np.asarray(getattr(dataset, f))[:n] for f in FIELDS})


def load_npz(path, capacity=None) -> Dataset:
    """Reads a transition file with the fields of ``FIELDS`` (``terminals`` optional)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no dataset file at {path!r}: pass the path of an .npz with fields {FIELDS}")
    arrays = read_npz(path, "dataset file", f"expected an .npz with fields {FIELDS}: is it corrupt or of another format?")
    missing = [k for k in FIELDS[:-1] if k not in arrays]
    if missing:
        raise ValueError(f"{path!r} lacks the fields {missing}; expected {FIELDS} (terminals optional)")
    return from_arrays(**{k: arrays.get(k) for k in FIELDS}, capacity=capacity)


def sample(dataset: Dataset, key, batch_size: int) -> dict:
    """A uniform batch of valid rows, as a dict of arrays (runs inside jit)."""
    return rows(dataset, jax.random.randint(key, (batch_size,), 0, dataset.size))


def rows(dataset: Dataset, idx) -> dict:
    """The transitions at ``idx``, plus ``next_actions``: the action the dataset took next in the same episode (ReBRAC's
    critic penalty needs it), or the row's own action at an episode's last transition, where there is none."""
    batch = {f: getattr(dataset, f)[idx] for f in FIELDS}
    following = jnp.where(batch["terminals"] > 0, idx, jnp.minimum(idx + 1, dataset.size - 1))
    batch["next_actions"] = dataset.actions[following]
    return batch


def append(dataset: Dataset, transition: dict) -> Dataset:
    """Writes one transition into row ``size``. Called outside jit on a full dataset it raises; inside jit it cannot
    raise, so the caller checks ``has_room`` first (as ``fqlcore.online`` does)."""
    i = dataset.size
    if not isinstance(i, jax.core.Tracer) and int(i) >= dataset.capacity:
        raise ValueError(f"the dataset is full ({dataset.capacity} rows): make it with a larger capacity "
                         "(data.from_arrays(..., capacity=N))")
    updated = {f: getattr(dataset, f).at[i].set(jnp.asarray(transition[f], getattr(dataset, f).dtype)) for f in FIELDS}
    return dataset.replace(**updated, size=i + 1)


def fingerprint(dataset: Dataset, rows: int | None = None) -> str:
    """A hash of the first ``rows`` rows (default: the valid ones) of every field: resuming a run with another
    dataset of the same shape is refused by comparing these."""
    n = int(dataset.size) if rows is None else rows
    h = hashlib.blake2b(digest_size=16)
    for f in FIELDS:
        h.update(np.ascontiguousarray(np.asarray(getattr(dataset, f)[:n])).tobytes())
    return f"{n}:{h.hexdigest()}"


def has_room(dataset: Dataset) -> bool:
    return int(dataset.size) < dataset.capacity

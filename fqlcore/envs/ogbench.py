"""OGBench singletask datasets and environments, with the paper's conventions.

Three entry points:

- ``load(name)``: an OGBench singletask dataset such as ``cube-single-play-singletask-task2-v0`` as
  ``(env, train, val, info)``, with ``train`` and ``val`` ``fqlcore.data.Dataset`` s. Rewards, masks and terminals are
  OGBench's own (its loader relabels each file for the task): reward = -(number of unsolved subtasks), mask = 0 where
  the task is solved, terminal = 1 at the last transition of every episode. ``info["source"]`` says where the data
  came from: ``"published"`` (OGBench's files, downloaded) or ``"regenerated"`` (made here by ``generate``).
- ``generate(dataset_name)``: regenerates a manipulation dataset (cube, scene, puzzle, and their ``visual-`` variants)
  with OGBench's own scripted oracles, the settings of the published files (``fqlcore/reference/
  ogbench_manipulation_generation.csv``), in OGBench's ``.npz`` format, into its own directory with a
  ``manifest.json``: never into OGBench's download directory, so a regenerated file is never mistaken for a
  published one. Locomotion datasets (antmaze, humanoidmaze, antsoccer, pointmaze) need trained expert policies and can
  only be downloaded.
- ``make_env(name)``: an evaluation environment.

Success timing. ogbench >= 1.2 registers its singletask environments with ``success_timing="pre"`` (success, reward
and termination computed from the state before the action); the paper used ogbench 1.1.0, which computed them after
the action. Every environment made here (the one ``load`` returns, ``make_env``'s, and so evaluation and online
interaction) passes ``success_timing="post"`` whenever the installed ogbench accepts the argument. The dataset
labels do not depend on it: OGBench's loader computes the reward and mask of a transition (s, a, s') from s.

MuJoCo chooses its headless GL backend when it is first imported; unless ``MUJOCO_GL`` is already set, importing
this module sets it to ``egl`` where there is an NVIDIA GPU and to ``osmesa`` where the OSMesa library is installed
(Debian: ``apt-get install -y libosmesa6``).
"""
from __future__ import annotations

import contextlib
import csv
import ctypes.util
import dataclasses
import datetime
import difflib
import glob
import hashlib
import importlib.metadata
import io
import json
import multiprocessing
import os
import platform
import shutil
import socket
import sys
import time
import traceback
import warnings
import zipfile
from importlib import resources

import numpy as np

from fqlcore import runlock

OGBENCH_DOWNLOAD_DIR = "~/.ogbench/data"  # ogbench.utils.DEFAULT_DATASET_DIR: published files only, never written here
REGEN_DIR_ENV = "FQL_REGEN_DIR"
DEFAULT_REGEN_DIR = "~/.fqlcore/regenerated-ogbench"
DATASET_URL = "https://rail.eecs.berkeley.edu/datasets/ogbench"
SUCCESS_TIMING = "post"  # the paper's (ogbench 1.1.0) timing; see the module docstring
MANIFEST = "manifest.json"
GENERATOR_VERSION = 1
# The command printed in error messages and stored in manifests; the project CLI may point it at its own subcommand.
GENERATE_COMMAND = "python -m fqlcore.envs.ogbench generate {dataset}"
STEPS_PER_SECOND_PER_CORE = 600  # measured oracle + environment speed, for time estimates only
SOURCES = ("auto", "published", "regenerated")
NUM_TASKS = 5

_LOCOMOTION = (
    [f"pointmaze-{m}-{t}-v0" for m in ("medium", "large", "giant", "teleport") for t in ("navigate", "stitch")]
    + [f"{v}antmaze-{m}-{t}-v0" for v in ("", "visual-") for m in ("medium", "large", "giant", "teleport")
       for t in ("navigate", "stitch", "explore")]
    + [f"{v}humanoidmaze-{m}-{t}-v0" for v in ("", "visual-") for m in ("medium", "large", "giant")
       for t in ("navigate", "stitch")]
    + [f"antsoccer-{m}-{t}-v0" for m in ("arena", "medium") for t in ("navigate", "stitch")]
)
LOCOMOTION_DATASETS = tuple(_LOCOMOTION)


def _setup_rendering() -> None:
    if "MUJOCO_GL" in os.environ or "mujoco" in sys.modules:
        return
    if glob.glob("/dev/nvidia[0-9]*"):
        os.environ["MUJOCO_GL"] = "egl"
    elif ctypes.util.find_library("OSMesa"):
        os.environ["MUJOCO_GL"] = "osmesa"


_setup_rendering()


@contextlib.contextmanager
def _quiet():
    """Hides gymnasium's float32-cast warnings, which ogbench's action_space property triggers on every access."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered.*")
        warnings.filterwarnings("ignore", message=".*is not within the observation space.*")
        yield


def _import_ogbench():
    try:
        with _quiet():
            import ogbench  # noqa: F401  (registers the environments with gymnasium)
    except ImportError as e:
        raise ImportError("OGBench is not installed: pip install 'fqlcore[ogbench]' (ogbench, mujoco, gymnasium)") from e
    return ogbench


# ----------------------------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------------------------

def _read_generation_table() -> dict:
    text = resources.files("fqlcore").joinpath("reference", "ogbench_manipulation_generation.csv").read_text()
    table = {}
    for row in csv.DictReader(io.StringIO(text)):
        table[row["dataset"]] = dict(
            dataset=row["dataset"], env=row["env"], dataset_type=row["dataset_type"],
            num_episodes=int(row["num_episodes"]), max_episode_steps=int(row["max_episode_steps"]),
            p_random_action=float(row["p_random_action"]), noise=float(row["noise"]),
            noise_smoothing=float(row["noise_smoothing"]), min_norm=float(row["min_norm"]))
    return table


GENERATION_TABLE = _read_generation_table()  # published manipulation dataset -> how OGBench generated it
MANIPULATION_DATASETS = tuple(GENERATION_TABLE)
DATASETS = MANIPULATION_DATASETS + LOCOMOTION_DATASETS


@dataclasses.dataclass(frozen=True)
class TaskName:
    name: str  # cube-single-play-singletask-task2-v0
    dataset: str  # cube-single-play-v0: the files shared by all tasks of the environment
    env_id: str  # cube-single-singletask-task2-v0: the gymnasium id
    task: int | None  # 1..5, or None for the environment's default task
    kind: str  # "manipulation" or "locomotion"


def valid_names() -> list[str]:
    """Every OGBench singletask dataset name this module knows (``-singletask-v0`` is the default task)."""
    names = []
    for dataset in DATASETS:
        base = dataset[: -len("-v0")]
        names.append(f"{base}-singletask-v0")
        names.extend(f"{base}-singletask-task{i}-v0" for i in range(1, NUM_TASKS + 1))
    return names


def _unknown_name_error(name, why: str) -> ValueError:
    close = difflib.get_close_matches(str(name), valid_names(), n=3, cutoff=0.75)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"unknown OGBench singletask dataset {name!r}: {why}.{hint} Valid names are "
        f"'<dataset without -v0>-singletask-task<1-{NUM_TASKS}>-v0' (or '-singletask-v0' for the default task), e.g. "
        f"'cube-single-play-singletask-task2-v0', for the datasets: {', '.join(DATASETS)}.")


def parse_name(name: str) -> TaskName:
    """Splits a singletask name into its dataset and gymnasium id, as ``ogbench.make_env_and_datasets`` does."""
    if not isinstance(name, str) or "singletask" not in name.split("-"):
        raise _unknown_name_error(name, "a singletask name contains '-singletask-'")
    splits = name.split("-")
    pos = splits.index("singletask")
    if pos < 2 or splits[-1] != "v0":
        raise _unknown_name_error(name, "expected '<env>-<dataset type>-singletask[-taskN]-v0'")
    dataset = "-".join(splits[:pos] + splits[-1:])
    env_id = "-".join(splits[: pos - 1] + splits[pos:])
    middle = splits[pos + 1: -1]
    task = None
    if middle:
        valid = [f"task{i}" for i in range(1, NUM_TASKS + 1)]
        if len(middle) != 1 or middle[0] not in valid:
            raise _unknown_name_error(name, f"the task must be one of {', '.join(valid)}")
        task = int(middle[0][len("task"):])
    if dataset not in DATASETS:
        raise _unknown_name_error(name, f"there is no OGBench dataset {dataset!r}")
    kind = "manipulation" if dataset in GENERATION_TABLE else "locomotion"
    return TaskName(name=name, dataset=dataset, env_id=env_id, task=task, kind=kind)


def _dataset_name(name: str) -> str:
    """A dataset name (``cube-single-play-v0``) from a dataset or a singletask name."""
    if isinstance(name, str) and "singletask" in name.split("-"):
        return parse_name(name).dataset
    if name in DATASETS:
        return name
    close = difflib.get_close_matches(str(name), DATASETS, n=3, cutoff=0.75)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown OGBench dataset {name!r}.{hint} Known datasets: {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------------------------------------------
# Environments
# ----------------------------------------------------------------------------------------------------------------

def success_timing_kwargs(env_id: str, success_timing: str | None = SUCCESS_TIMING) -> dict:
    """``{"success_timing": ...}`` where the installed ogbench registers ``env_id`` with that argument (>= 1.2), else {}.

    ogbench < 1.2 has no such argument and always computes success after the action, i.e. ``"post"``.
    """
    if success_timing is None:
        return {}
    if success_timing not in ("pre", "post"):
        raise ValueError(f"success_timing must be 'pre' or 'post', got {success_timing!r}")
    import gymnasium

    _import_ogbench()
    try:
        spec = gymnasium.spec(env_id)
    except Exception as e:
        raise ValueError(f"{env_id!r} is not a registered environment (is ogbench installed and imported?)") from e
    if "success_timing" in spec.kwargs:
        return {"success_timing": success_timing}
    if success_timing == "pre":
        raise ValueError(f"the installed ogbench ({_ogbench_version()}) has no success_timing argument: it always uses "
                         "'post'; install ogbench>=1.2 for 'pre'")
    return {}


def make_env(name: str, *, success_timing: str | None = SUCCESS_TIMING, frame_stack: int | None = None, **env_kwargs):
    """An OGBench environment for evaluation or online interaction.

    ``name`` is a singletask dataset name (``cube-single-play-singletask-task2-v0``) or a registered gymnasium id
    (``cube-single-singletask-task2-v0``). ``success_timing`` defaults to the paper's ``"post"`` (None keeps the
    registered value). ``frame_stack=k`` concatenates the last k frames along the channel axis (pixel tasks; the
    episode's first frame repeats where the history runs past its start). Other keyword arguments go to
    ``gymnasium.make`` (e.g. ``width``/``height`` of the rendered frames).
    """
    import gymnasium

    _import_ogbench()
    if isinstance(name, str) and "singletask" in name.split("-") and name not in gymnasium.registry:
        env_id = parse_name(name).env_id
    else:
        env_id = name
    if env_id not in gymnasium.registry:
        raise _unknown_name_error(name, "it is neither a singletask dataset name nor a registered environment id")
    with _quiet():
        env = gymnasium.make(env_id, **success_timing_kwargs(env_id, success_timing), **env_kwargs)
        # ogbench's spaces are properties that rebuild (and, for pixels, render) on every access: cache them once
        env.action_space, env.observation_space = env.action_space, env.observation_space
    if frame_stack is not None and frame_stack > 1:
        env = FrameStack(env, frame_stack)
    return env


def make_env_fn(name: str, **kwargs):
    """A picklable zero-argument function that makes ``make_env(name, **kwargs)`` (for ``fqlcore.evaluate``)."""
    import functools

    return functools.partial(make_env, name, **kwargs)


try:
    from gymnasium import Wrapper as _Wrapper
except ImportError:  # the ogbench extra is not installed: FrameStack is unusable, the rest of the module imports
    _Wrapper = object


class FrameStack(_Wrapper):
    """Concatenates the last ``k`` image observations along the channel (last) axis."""

    def __init__(self, env, k: int):
        import gymnasium

        super().__init__(env)
        space = env.observation_space
        if len(space.shape) != 3:
            raise ValueError(f"frame stacking needs image observations (H, W, C), got shape {space.shape}")
        self.k = k
        self._frames = []
        low = np.concatenate([space.low] * k, axis=-1)
        high = np.concatenate([space.high] * k, axis=-1)
        self.observation_space = gymnasium.spaces.Box(low=low, high=high, dtype=space.dtype)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._frames = [obs] * self.k
        return np.concatenate(self._frames, axis=-1), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frames = self._frames[1:] + [obs]
        return np.concatenate(self._frames, axis=-1), reward, terminated, truncated, info


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------

def regenerated_dir(path=None) -> str:
    """The root of regenerated datasets: ``path``, else ``$FQL_REGEN_DIR``, else ``~/.fqlcore/regenerated-ogbench``."""
    path = path if path is not None else os.environ.get(REGEN_DIR_ENV) or DEFAULT_REGEN_DIR
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def regenerated_paths(dataset: str, regen_dir=None) -> dict:
    """Where ``generate`` puts a dataset: ``<root>/<dataset>/<dataset>.npz``, ``...-val.npz`` and ``manifest.json``."""
    folder = os.path.join(regenerated_dir(regen_dir), dataset)
    return {"dir": folder, "train": os.path.join(folder, f"{dataset}.npz"),
            "val": os.path.join(folder, f"{dataset}-val.npz"), "manifest": os.path.join(folder, MANIFEST)}


def _published_dir(data_dir=None) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir if data_dir is not None else OGBENCH_DOWNLOAD_DIR)))


def _download(dataset: str, data_dir: str) -> None:
    """Downloads the published files with ogbench's own downloader (OSError when there is no network)."""
    ogbench = _import_ogbench()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(previous or 60.0)  # fail instead of hanging on a dead network
    try:
        ogbench.download_datasets([dataset], data_dir)
    finally:
        socket.setdefaulttimeout(previous)


def regeneration_minutes(dataset: str, cores: int | None = None) -> float:
    """The time ``generate`` needs for the published size of ``dataset`` (its training episodes and the 10% more of the
    validation file) on ``cores`` cores (default: this machine's), from the oracles' measured speed per core."""
    s = GENERATION_TABLE[dataset]
    rows = s["num_episodes"] * 1.1 * s["max_episode_steps"]
    per_second = STEPS_PER_SECOND_PER_CORE if not dataset.startswith("visual-") else 5
    return rows / (per_second * (cores or os.cpu_count() or 1)) / 60


def generate_command(dataset: str, **options) -> str:
    command = GENERATE_COMMAND.format(dataset=dataset)
    for k, v in options.items():
        if v is not None:
            command += f" --{k.replace('_', '-')} {v}"
    return command


def _locomotion_message(task: TaskName, data_dir: str, error=None) -> str:
    files = f"{task.dataset}.npz and {task.dataset}-val.npz"
    why = f" and could not be downloaded ({error})" if error is not None else ""
    return (f"{task.name!r} needs the published OGBench files {files}, which are not in {data_dir}{why}. "
            f"Locomotion datasets were collected with trained expert policies, so they cannot be regenerated here: "
            f"download them. On a machine with network: python -c \"import ogbench; "
            f"ogbench.download_datasets(['{task.dataset}'], '{data_dir}')\" (or fetch {DATASET_URL}/{task.dataset}.npz "
            f"and {DATASET_URL}/{task.dataset}-val.npz), then copy both files into {data_dir} or pass data_dir=...")


def _missing_message(task: TaskName, data_dir: str, regen_dir: str, error=None) -> str:
    if task.kind == "locomotion":
        return _locomotion_message(task, data_dir, error)
    why = f" and could not be downloaded ({error})" if error is not None else ""
    regenerated = regenerated_paths(task.dataset, regen_dir)
    if os.path.exists(regenerated["manifest"]):
        return (f"no published data for {task.name!r}: the published files {task.dataset}.npz / -val.npz are not in "
                f"{data_dir}{why}. A regenerated copy (made here with OGBench's oracles, not the published files) is in "
                f"{regenerated['dir']}: pass source='regenerated' (or 'auto') to train on it.")
    minutes = regeneration_minutes(task.dataset)
    return (f"no data for {task.name!r}: the published files {task.dataset}.npz / -val.npz are not in {data_dir}{why}, "
            f"and there is no regenerated copy in {regenerated_paths(task.dataset, regen_dir)['dir']}. Regenerate it with "
            f"OGBench's scripted oracles (about {minutes:.0f} min on this machine's {os.cpu_count()} cores): "
            f"{generate_command(task.dataset)}"
            + (f" --out-dir {regen_dir}" if regen_dir != regenerated_dir() else "")
            + f" ; or, with network, load(..., source='published') downloads the published files into {data_dir}.")


def read_manifest(dataset: str, regen_dir=None) -> dict:
    """The manifest of a regenerated dataset; FileNotFoundError (with the command that makes it) when there is none."""
    paths = regenerated_paths(dataset, regen_dir)
    if not os.path.exists(paths["manifest"]):
        leftover = os.path.isdir(paths["dir"]) and bool(os.listdir(paths["dir"]))
        extra = (" (files are there but no manifest: an interrupted or older generation)" if leftover else "")
        raise FileNotFoundError(
            f"no regenerated {dataset} in {paths['dir']}{extra}. Make it with: {generate_command(dataset)}"
            + (" --overwrite" if leftover else "")
            + (f" --out-dir {regenerated_dir(regen_dir)}" if regenerated_dir(regen_dir) != regenerated_dir() else ""))
    try:
        with open(paths["manifest"]) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"the manifest {paths['manifest']} is unreadable ({e}); regenerate with --overwrite") from e
    if manifest.get("source") != "regenerated" or manifest.get("dataset") != dataset:
        raise ValueError(f"{paths['manifest']} does not describe a regenerated {dataset} (source "
                         f"{manifest.get('source')!r}, dataset {manifest.get('dataset')!r})")
    for key in ("train", "val"):
        path = paths[key]
        expected = manifest["files"][os.path.basename(path)]["bytes"]
        if not os.path.exists(path) or os.path.getsize(path) != expected:
            raise ValueError(f"{path} is missing or has another size than its manifest says ({expected} bytes): the "
                             f"file is corrupt or was replaced; regenerate with: {generate_command(dataset)} --overwrite")
    return manifest


def _ogbench_make(task: TaskName, **kwargs):
    ogbench = _import_ogbench()
    env_kwargs = success_timing_kwargs(task.env_id)
    try:
        with _quiet():
            return ogbench.make_env_and_datasets(task.name, compact_dataset=False, **kwargs, **env_kwargs)
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError) as e:
        where = kwargs.get("dataset_path") or kwargs.get("dataset_dir")
        raise ValueError(f"could not read the {task.dataset} files in {where} ({type(e).__name__}: {e}): a file is "
                         "truncated or corrupt; delete it and download or regenerate it") from e


def _to_dataset(arrays: dict, capacity=None):
    from fqlcore import data

    return data.from_arrays(observations=arrays["observations"], actions=arrays["actions"], rewards=arrays["rewards"],
                            next_observations=arrays["next_observations"], masks=arrays["masks"],
                            terminals=arrays["terminals"], capacity=capacity)


def load_arrays(name: str, data_dir=None, source: str = "auto", *, regen_dir=None):
    """Like ``load``, but the datasets stay OGBench's numpy dicts (observations, actions, next_observations, rewards,
    masks, terminals), e.g. to stream pixel datasets instead of putting them on the device."""
    task = parse_name(name)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    data_dir = _published_dir(data_dir)
    regen_root = regenerated_dir(regen_dir)
    published = [os.path.join(data_dir, f"{task.dataset}.npz"), os.path.join(data_dir, f"{task.dataset}-val.npz")]
    paths = regenerated_paths(task.dataset, regen_root)
    if source == "auto":  # the published files whenever they can be had; a regenerated copy only when they cannot
        source = "published"
        if not all(os.path.exists(p) for p in published):
            try:
                _download(task.dataset, data_dir)
            except OSError as e:
                if not (task.kind == "manipulation" and os.path.exists(paths["manifest"])):
                    raise FileNotFoundError(_missing_message(task, data_dir, regen_root, e)) from e
                warnings.warn(f"OGBench's published {task.dataset} could not be downloaded ({e}); using the "
                              f"regenerated copy in {paths['dir']}", stacklevel=2)
                source = "regenerated"
    if source == "published":
        if not all(os.path.exists(p) for p in published):
            try:
                _download(task.dataset, data_dir)
            except OSError as e:
                raise FileNotFoundError(_missing_message(task, data_dir, regen_root, e)) from e
        env, train, val = _ogbench_make(task, dataset_dir=data_dir)
        manifest, train_path, val_path = None, published[0], published[1]
    else:
        if task.kind == "locomotion":
            raise ValueError(_locomotion_message(task, data_dir))
        manifest = read_manifest(task.dataset, regen_root)
        env, train, val = _ogbench_make(task, dataset_path=paths["train"])
        train_path, val_path = paths["train"], paths["val"]
        published_episodes = GENERATION_TABLE[task.dataset]["num_episodes"]
        if manifest["episodes"]["train"] != published_episodes:
            warnings.warn(f"{task.dataset} was regenerated with {manifest['episodes']['train']} episodes, not the "
                          f"published {published_episodes}: results are not comparable with the paper's", stacklevel=3)
    timing = getattr(env.unwrapped, "_success_timing", "post")
    info = {"name": task.name, "dataset": task.dataset, "env_id": task.env_id, "task": task.task, "kind": task.kind,
            "source": source, "path": train_path, "val_path": val_path, "success_timing": timing,
            "ogbench_version": _ogbench_version(), "transitions": int(len(train["actions"])),
            "val_transitions": int(len(val["actions"]))}
    if manifest is not None:
        info["manifest"] = manifest  # regenerated data only
    return env, train, val, info


def load(name: str, data_dir=None, source: str = "auto", *, regen_dir=None, capacity: int | None = None):
    """An OGBench singletask dataset as ``(env, train_dataset, val_dataset, info)``.

    Args:
        name: e.g. ``cube-single-play-singletask-task2-v0`` (all five tasks of an environment share its files).
        data_dir: where OGBench's published files are (and are downloaded to); default ``~/.ogbench/data``.
        source: ``"published"`` (ogbench's files; downloads them where there is network), ``"regenerated"`` (made by
            ``generate``, read from ``regen_dir``), or ``"auto"``: the published files (on disk, else downloaded), and
            a regenerated copy only when they cannot be downloaded (with a warning).
        regen_dir: root of regenerated datasets; default ``$FQL_REGEN_DIR`` or ``~/.fqlcore/regenerated-ogbench``.
        capacity: rows of the training ``Dataset`` (room for online transitions); default its size.

    Returns ``env`` (made with ``success_timing="post"``), the datasets as ``fqlcore.data.Dataset`` (actions clipped to
    [-1 + 1e-5, 1 - 1e-5]; rewards, masks and terminals from OGBench's singletask loader), and ``info`` with the
    ``source`` ("published" or "regenerated"), file paths, ``success_timing``, the installed ``ogbench_version``,
    sizes, and, for regenerated data only, its ``manifest`` (with the ogbench version that generated it).

    Raises ValueError for unknown names (listing the valid ones) and FileNotFoundError for missing data (with the
    command that generates it, or download instructions for locomotion datasets).
    """
    env, train, val, info = load_arrays(name, data_dir, source, regen_dir=regen_dir)
    return env, _to_dataset(train, capacity), _to_dataset(val), info


# ----------------------------------------------------------------------------------------------------------------
# Generation (a reconstruction of OGBench's data-generation script for manipulation, which its wheel does not ship)
# ----------------------------------------------------------------------------------------------------------------

def generation_settings(name: str) -> dict:
    """How OGBench generated a published manipulation dataset (a row of the reference CSV)."""
    dataset = _dataset_name(name)
    if dataset not in GENERATION_TABLE:
        raise ValueError(f"{dataset!r} is a locomotion dataset: OGBench collected it with trained expert policies, so "
                         "it cannot be regenerated; download it (see ogbench.download_datasets). Regenerable datasets: "
                         f"{', '.join(MANIPULATION_DATASETS)}")
    return dict(GENERATION_TABLE[dataset])


def _check_output_dir(root: str) -> None:
    real = os.path.realpath(root)
    ogbench_dir = os.path.realpath(os.path.expanduser(OGBENCH_DOWNLOAD_DIR))
    if real == ogbench_dir or real.startswith(ogbench_dir + os.sep):
        raise ValueError(f"refusing to write regenerated data into OGBench's download directory {ogbench_dir}: that is "
                         f"where the published files live. Use another directory (default {DEFAULT_REGEN_DIR} or "
                         f"${REGEN_DIR_ENV}).")
    if os.path.isdir(real):
        published = sorted(f for f in os.listdir(real) if f.endswith(".npz") and
                           (f[: -len(".npz")] in DATASETS or f[: -len("-val.npz")] in DATASETS))
        if published:
            raise ValueError(f"refusing to write regenerated data into {real}: it holds files named like published "
                             f"OGBench datasets ({', '.join(published[:3])}). Use a directory of its own.")


_WORKER: dict = {}


def _p_stack(env_name: str) -> float:
    """The per-episode probability of stacking the target cube (OGBench's script)."""
    if "single" in env_name:
        return 0.0
    if "double" in env_name:
        return np.random.uniform(0.0, 0.25)
    if "triple" in env_name:
        return np.random.uniform(0.05, 0.35)
    if "quadruple" in env_name:
        return np.random.uniform(0.1, 0.5)
    return 0.5


def _make_oracles(env, spec: dict) -> dict:
    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    name, markov = spec["env"], spec["dataset_type"] == "noisy"
    plan = dict(noise=spec["noise"], noise_smoothing=spec["noise_smoothing"])
    mark = dict(min_norm=spec["min_norm"])
    if "cube" in name:
        return {"cube": CubeMarkovOracle(env=env, **mark) if markov else CubePlanOracle(env=env, **plan)}
    if "scene" in name:
        if markov:
            return {"cube": CubeMarkovOracle(env=env, max_step=100, **mark), "button": ButtonMarkovOracle(env=env, **mark),
                    "drawer": DrawerMarkovOracle(env=env, **mark), "window": WindowMarkovOracle(env=env, **mark)}
        return {"cube": CubePlanOracle(env=env, **plan), "button": ButtonPlanOracle(env=env, **plan),
                "drawer": DrawerPlanOracle(env=env, **plan), "window": WindowPlanOracle(env=env, **plan)}
    if "puzzle" in name:
        oracle = (ButtonMarkovOracle(env=env, gripper_always_closed=True, **mark) if markov
                  else ButtonPlanOracle(env=env, gripper_always_closed=True, **plan))
        return {"button": oracle}
    raise ValueError(f"no oracle for {name!r}")


def _init_worker(spec: dict) -> None:
    try:
        import gymnasium

        _import_ogbench()
        with _quiet():
            env = gymnasium.make(spec["env"], terminate_at_goal=False, mode="data_collection",
                                 max_episode_steps=spec["max_episode_steps"])
            action_dim = env.action_space.shape[0]
        _WORKER.update(env=env, oracles=_make_oracles(env, spec), spec=spec, action_dim=action_dim)
    except Exception:  # raised from the first episode instead: a Pool whose initializer raises respawns it forever
        _WORKER["error"] = traceback.format_exc()


def _close_worker() -> None:
    env = _WORKER.pop("env", None)
    _WORKER.clear()
    if env is not None:
        env.close()


def _scene_is_healthy(qpos) -> bool:
    """OGBench's check: the cube stays visible (not too far right, and not far left outside the drawer)."""
    block = np.asarray(qpos)[:, 14:17]
    if (block[:, 1] >= 0.29).any():
        return False
    return not ((block[:, 1] <= -0.3) & ((block[:, 2] < 0.06) | (block[:, 2] > 0.08))).any()


def episode_seeds(seed: int, index: int) -> tuple[int, int]:
    """(environment seed, numpy seed) of episode ``index``: a function of (seed, index) only, so a dataset does not
    depend on how many workers made it."""
    env_seed, np_seed = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(env_seed), int(np_seed)


def _run_episode(index: int) -> dict:
    """One episode of OGBench's data-collection loop; the oracles draw from numpy's global RNG, seeded here."""
    if "error" in _WORKER:
        raise RuntimeError("a data-generation worker could not build the environment "
                           "(on a machine without a display set MUJOCO_GL=osmesa and install libosmesa6, or "
                           f"MUJOCO_GL=egl on a GPU):\n{_WORKER['error']}")
    env, oracles, spec = _WORKER["env"], _WORKER["oracles"], _WORKER["spec"]
    env_seed, np_seed = episode_seeds(spec["seed"], index)
    np.random.seed(np_seed)
    markov = spec["dataset_type"] == "noisy"
    unwrapped = env.unwrapped
    has_buttons = hasattr(unwrapped, "_cur_button_states")
    ob, info = env.reset(seed=env_seed)
    for attempt in range(100):
        if attempt > 0:
            ob, info = env.reset()  # a retried scene episode continues the same random streams
        p_stack = _p_stack(spec["env"])
        xi = np.random.uniform(0, spec["noise"]) if markov else 0.0
        agent = oracles[info["privileged/target_task"]]
        agent.reset(ob, info)
        rows = {"observations": [], "actions": [], "terminals": [], "qpos": [], "qvel": []}
        if has_buttons:
            rows["button_states"] = []
        done = False
        while not done:
            if np.random.rand() < spec["p_random_action"]:
                action = np.random.uniform(-1.0, 1.0, size=_WORKER["action_dim"])  # the action space is [-1, 1]^d
            else:
                action = np.array(agent.select_action(ob, info))
                if markov:
                    action = action + np.random.normal(0, [xi, xi, xi, xi * 3, xi * 10], action.shape)
            action = np.clip(action, -1, 1)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if agent.done:  # the oracle finished its subtask: the environment picks the next one
                agent_ob, agent_info = unwrapped.set_new_target(p_stack=p_stack)
                agent = oracles[agent_info["privileged/target_task"]]
                agent.reset(agent_ob, agent_info)
            rows["observations"].append(ob)
            rows["actions"].append(action)
            rows["terminals"].append(done)
            rows["qpos"].append(info["prev_qpos"])
            rows["qvel"].append(info["prev_qvel"])
            if has_buttons:
                rows["button_states"].append(info["prev_button_states"])
            ob = next_ob
        if "scene" not in spec["env"] or _scene_is_healthy(rows["qpos"]):
            break
    else:
        raise RuntimeError(f"episode {index} of {spec['dataset']}: no healthy scene episode in 100 attempts")
    visual = np.asarray(rows["observations"][0]).dtype == np.uint8
    out = {"observations": np.asarray(rows["observations"], np.uint8 if visual else np.float32),
           "actions": np.asarray(rows["actions"], np.float32),
           "terminals": np.asarray(rows["terminals"], bool),
           "qpos": np.asarray(rows["qpos"], np.float32), "qvel": np.asarray(rows["qvel"], np.float32)}
    if has_buttons:
        out["button_states"] = np.asarray(rows["button_states"], np.int64)
    out["retries"] = attempt
    return out


def _episodes(spec: dict, total: int, workers: int):
    if workers <= 1:
        state = np.random.get_state()  # the oracles seed numpy's global RNG: leave the caller's as it was
        try:
            _init_worker(spec)
            for i in range(total):
                yield _run_episode(i)
        finally:
            _close_worker()
            np.random.set_state(state)
    else:
        _import_ogbench()  # fail here, with the install hint: a Pool whose initializer fails respawns workers forever
        # spawn, not fork: the parent may have initialized JAX (threads), and fork after that can deadlock
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(spec,)) as pool:
            yield from pool.imap(_run_episode, range(total), chunksize=1)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomic(path: str, obj: dict) -> None:
    from fqlcore import data

    with data.replacing(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _ogbench_version() -> str:
    try:
        return importlib.metadata.version("ogbench")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def generate(dataset_name: str, out_dir=None, num_episodes: int | None = None, seed: int = 0,
             workers: int | None = None, *, max_episode_steps: int | None = None, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Regenerates an OGBench manipulation dataset with OGBench's scripted oracles; returns its manifest.

    The process of OGBench's own data-generation script, with the settings of the published file (reference CSV):
    ``play`` datasets follow the plan oracles, ``noisy`` ones the Markov oracles with per-episode noise level
    xi ~ U(0, noise) (action noise scale [xi, xi, xi, 3 xi, 10 xi]) and random actions with probability
    ``p_random_action``; the environment runs with ``terminate_at_goal=False, mode="data_collection"`` and
    ``set_new_target(p_stack=...)`` picks the next subtask whenever the oracle is done; actions are clipped to
    [-1, 1]; scene episodes in which the cube leaves the visible area are retried. ``visual-*`` datasets render 64x64
    frames (slow without a GPU: about 5 steps/s per core with OSMesa).

    Args:
        dataset_name: e.g. ``cube-single-play-v0`` (a singletask name such as ``cube-single-play-singletask-task2-v0``
            means its dataset).
        out_dir: root of regenerated datasets (default ``$FQL_REGEN_DIR`` or ``~/.fqlcore/regenerated-ogbench``);
            files go to ``<out_dir>/<dataset>/``. OGBench's download directory is refused.
        num_episodes: training episodes (default: the published number); the ``-val`` file gets 10% more
            (at least 1).
        seed: episode i is seeded from (seed, i) alone, so the result does not depend on ``workers``.
        workers: processes (default ``os.cpu_count()``); 1 runs in this process.
        max_episode_steps: steps per episode (default: the published 1001); smaller only for tests.
        overwrite: replace an existing regenerated copy.
        progress: show a progress bar and print the speed.

    Writes ``<dataset>.npz`` and ``<dataset>-val.npz`` (observations float32, or uint8 for visual; actions, qpos, qvel
    float32; terminals bool; button_states int64 where the environment has buttons; OGBench's ``.npz`` layout, so
    ``ogbench.load_dataset`` reads them) atomically, then ``manifest.json`` (source "regenerated", episodes, seed,
    versions, the command, the date, sizes and sha256 of the files).
    """
    dataset = _dataset_name(dataset_name)
    settings = generation_settings(dataset)
    default_episodes, default_steps = settings["num_episodes"], settings["max_episode_steps"]
    num_episodes = default_episodes if num_episodes is None else int(num_episodes)
    steps = default_steps if max_episode_steps is None else int(max_episode_steps)
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be at least 1, got {num_episodes}")
    if steps < 2:
        raise ValueError(f"max_episode_steps must be at least 2 (the last step of an episode has no next "
                         f"observation), got {steps}")
    num_val = max(1, num_episodes // 10)
    total = num_episodes + num_val
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    workers = max(1, min(workers, total))
    root = regenerated_dir(out_dir)
    _check_output_dir(root)
    paths = regenerated_paths(dataset, root)
    if not overwrite and any(os.path.exists(paths[k]) for k in ("manifest", "train", "val")):
        raise FileExistsError(f"a regenerated {dataset} already exists in {paths['dir']}; pass overwrite=True "
                              "(--overwrite) to replace it")
    # The new copy is written beside the old one and swapped in at the end: an interrupted run leaves the old, complete
    # dataset as it was. One generation per dataset at a time.
    lock_dir = os.path.join(root, f".{dataset}.lock")
    with _removed_after(lock_dir), runlock.hold(lock_dir, f"lock of the regenerated {dataset}"):
        staging = os.path.join(root, f".{dataset}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        try:
            manifest = _generate_into(staging, dataset, settings, num_episodes, num_val, steps, seed, workers, out_dir,
                                      root, default_episodes, default_steps, progress)
            old = os.path.join(root, f".{dataset}.old-{os.getpid()}")
            if os.path.exists(paths["dir"]):
                os.replace(paths["dir"], old)
            os.replace(staging, paths["dir"])
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    manifest["paths"] = paths
    if progress:
        print(f"wrote {paths['dir']}: {manifest['rows']['train']} + {manifest['rows']['val']} steps in "
              f"{manifest['seconds']:.1f} s ({manifest['steps_per_second']:.0f} steps/s with {workers} "
              f"worker{'s' * (workers > 1)})")
    return manifest


@contextlib.contextmanager
def _removed_after(folder: str):
    """Removes ``folder`` (the lock's, once its lock file is gone) when the block ends, if it is empty."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _generate_into(folder, dataset, settings, num_episodes, num_val, steps, seed, workers, out_dir, root,
                   default_episodes, default_steps, progress) -> dict:
    """Runs the episodes and writes the files and the manifest into ``folder`` (the staging copy)."""
    total = num_episodes + num_val
    paths = {"train": os.path.join(folder, f"{dataset}.npz"), "val": os.path.join(folder, f"{dataset}-val.npz"),
             "manifest": os.path.join(folder, MANIFEST)}
    spec = dict(settings, dataset=dataset, max_episode_steps=steps, seed=int(seed))
    from tqdm.auto import tqdm

    from fqlcore import data

    start = time.perf_counter()
    train, val, retries = None, None, 0
    bar = tqdm(total=total, unit="episode", desc=f"generating {dataset}", disable=not progress, dynamic_ncols=True)
    try:
        for index, episode in enumerate(_episodes(spec, total, workers)):
            retries += episode.pop("retries")
            if train is None:
                train = {k: np.empty((num_episodes * steps,) + v.shape[1:], v.dtype) for k, v in episode.items()}
                val = {k: np.empty((num_val * steps,) + v.shape[1:], v.dtype) for k, v in episode.items()}
            target, row = (train, index) if index < num_episodes else (val, index - num_episodes)
            for k, v in episode.items():
                if len(v) != steps:
                    raise RuntimeError(f"episode {index} has {len(v)} steps, expected {steps}")
                target[k][row * steps: (row + 1) * steps] = v
            bar.update(1)
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    data.write_npz(paths["val"], val, compress=True)
    data.write_npz(paths["train"], train, compress=True)
    published = num_episodes == default_episodes and steps == default_steps
    options = {"num_episodes": num_episodes, "seed": seed,
               "max_episode_steps": None if steps == default_steps else steps, "out_dir": None if out_dir is None else root}
    rows = {"train": num_episodes * steps, "val": num_val * steps}
    manifest = {
        "source": "regenerated",
        "dataset": dataset,
        "env": settings["env"],
        "dataset_type": settings["dataset_type"],
        "episodes": {"train": num_episodes, "val": num_val},
        "steps_per_episode": steps,
        "rows": rows,
        "transitions": {k: v - v // steps for k, v in rows.items()},  # the loader drops each episode's last row
        "seed": int(seed),
        "published_settings": published,
        "settings": {k: settings[k] for k in ("p_random_action", "noise", "noise_smoothing", "min_norm")},
        "generator": "fqlcore.envs.ogbench.generate: OGBench's manipulation data-generation process with its scripted "
                     "oracles (ogbench.manipspace.oracles); not the published files",
        "generator_version": GENERATOR_VERSION,
        "command": generate_command(dataset, **options),
        "ogbench_version": _ogbench_version(),
        "mujoco_version": importlib.metadata.version("mujoco"),
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "workers": workers,
        "seconds": round(seconds, 2),
        "steps_per_second": round((rows["train"] + rows["val"]) / seconds, 1),
        "scene_retries": retries,
        "files": {os.path.basename(paths[k]): {"episodes": manifest_episodes, "rows": rows[k],
                                               "bytes": os.path.getsize(paths[k]), "sha256": _sha256(paths[k])}
                  for k, manifest_episodes in (("train", num_episodes), ("val", num_val))},
    }
    _write_json_atomic(paths["manifest"], manifest)
    return manifest


# ----------------------------------------------------------------------------------------------------------------
# Command line: python -m fqlcore.envs.ogbench generate cube-single-play-v0
# ----------------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fqlcore.envs.ogbench",
                                     description="Regenerate OGBench manipulation datasets with OGBench's oracles.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="regenerate a manipulation dataset (e.g. cube-single-play-v0)")
    g.add_argument("dataset")
    g.add_argument("--num-episodes", type=int, default=None, help="default: the published number")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=None, help="default: all cores")
    g.add_argument("--max-episode-steps", type=int, default=None, help="default: the published 1001")
    g.add_argument("--out-dir", default=None, help=f"default: ${REGEN_DIR_ENV} or {DEFAULT_REGEN_DIR}")
    g.add_argument("--overwrite", action="store_true")
    sub.add_parser("list", help="list the regenerable datasets and their published sizes")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, s in GENERATION_TABLE.items():
            print(f"{name:32s} {s['num_episodes']:5d} episodes x {s['max_episode_steps']} steps, "
                  f"~{regeneration_minutes(name):.0f} min here")
        return 0
    try:
        generate(args.dataset, out_dir=args.out_dir, num_episodes=args.num_episodes, seed=args.seed,
                 workers=args.workers, max_episode_steps=args.max_episode_steps, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from fqlcore.envs import ogbench as _module  # run the importable module, so spawned workers find its functions

    sys.exit(_module.main())

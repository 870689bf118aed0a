"""The paper's D4RL datasets through Minari (the maintained successor of ``d4rl``), with FQL's conventions.

The original ``d4rl`` package (mujoco-py, gym 0.23) is not used. Its datasets live on in Minari as ``D4RL/...``
datasets, collected again with the maintained environments of gymnasium-robotics, so they are *not* the files the paper
trained on: every result made from them is labelled ``source="minari"`` with the Minari id and versions, and must not be
put in a column of the paper's D4RL numbers.

- ``load(name)``: ``(env, dataset, info)`` for one of the 18 paper names (``antmaze-umaze-v2``, ``pen-human-v1``, ...)
  or any Minari dataset id that is on disk (``D4RL/pen/human-v2``, or a small locally collected one).
- ``make_env(name)`` / ``make_env_fn(name)``: the task's environment for evaluation and online interaction.
- ``normalized_score(info, returns)``: ``100 * (return - ref_min) / (ref_max - ref_min)`` with the dataset's reference
  scores (Minari metadata ``ref_min_score`` / ``ref_max_score``).

Conventions (as FQL's public code does with ``d4rl``):

- rewards: antmaze rewards get -1 (the sparse 0/1 goal reward becomes -1/0), offline and online alike
  (``reward_transform``); other datasets keep theirs.
- ``masks = 1 - terminated``, with ``terminated`` from a named rule (``terminations``, its docstring says why):
  ``"sparse-reward"`` for antmaze (a transition that reaches the goal ends the task, as D4RL's terminals did; Minari's
  AntMaze data never sets ``terminations``), ``"stored"`` (Minari's ``terminations`` as recorded) for the others. A
  truncation (time limit) keeps mask 1. ``info["termination"]`` names the rule a dataset was loaded with.
- ``terminals = 1`` at the last transition of every episode (Minari stores episodes, so the boundaries are exact).
- actions are clipped to [-1 + 1e-5, 1 - 1e-5] (``fqlcore.data.from_arrays``).
- goal-conditioned dictionary observations (gymnasium-robotics AntMaze: ``observation``, ``achieved_goal``,
  ``desired_goal``) become D4RL's flat layout ``concat(achieved_goal, observation)`` (the ant's x, y first, then the
  rest of its state; the goal is fixed per task, so it is not part of the observation, as in D4RL). The environments
  made here apply the same flattening (``FlattenGoalObservation``).
- AntMaze environments (evaluation and online) end an episode when the ant reaches the goal, as D4RL's did (its
  normalized scores are success rates): gymnasium-robotics' ``continuing_task=True`` becomes ``False``.

Scores: ``normalized_score`` uses the reference returns stored in the dataset's metadata, never constants. They are
Minari's, not D4RL's: ``score_caveat(info)`` says in one line where a normalized score is not comparable with the
paper's D4RL column (a time limit other than D4RL's, as pen's 200 steps against D4RL's 100; AntMaze references other
than D4RL's 0 and 1; an evaluation maze whose walls differ from the data's); ``load`` puts it in
``info["score_caveat"]``.

Which Minari/gymnasium-robotics packages: ``minari[hdf5]`` reads the files, ``minari[hf]`` (huggingface_hub)
downloads them, and ``gymnasium-robotics`` provides the AntMaze and Adroit environments.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.metadata
import os
import socket
import warnings

import numpy as np

ANTMAZE = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
ADROIT_ENVS = ("pen", "door", "hammer", "relocate")
ADROIT_KINDS = ("human", "cloned", "expert")

# the paper's D4RL names -> Minari dataset ids
DATASETS = {**{f"antmaze-{m}-v2": f"D4RL/antmaze/{m}-v1" for m in ANTMAZE},
            **{f"{e}-{k}-v1": f"D4RL/{e}/{k}-v2" for e in ADROIT_ENVS for k in ADROIT_KINDS}}
SOURCE = "minari"
ANTMAZE_REWARD_SHIFT = -1.0
DOWNLOAD_COMMAND = "minari download {id}"
TERMINATION_RULES = ("sparse-reward", "stored")
# D4RL's time limits (max_episode_steps of its gym registrations: d4rl/locomotion and hand_manipulation_suite)
D4RL_TIME_LIMITS = {**{f"antmaze-{m}-v2": 700 if m.startswith("umaze") else 1000 for m in ANTMAZE},
                    **{f"{e}-{k}-v1": 100 if e == "pen" else 200 for e in ADROIT_ENVS for k in ADROIT_KINDS}}


def valid_names() -> list[str]:
    return list(DATASETS)


def _unknown_name_error(name) -> ValueError:
    close = difflib.get_close_matches(str(name), list(DATASETS) + list(DATASETS.values()), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown D4RL dataset {name!r}.{hint} Valid names are the paper's: {', '.join(DATASETS)}; or a "
                      "Minari dataset id with its namespace, e.g. 'D4RL/pen/human-v2' or a locally collected "
                      "'<namespace>/<name>-v0' (see `minari list local`).")


def minari_id(name: str) -> str:
    """The Minari id of a paper name (``antmaze-umaze-v2`` -> ``D4RL/antmaze/umaze-v1``); a Minari id is returned as is.

    A Minari id has a namespace (``D4RL/pen/human-v2``) and ends in ``-v<version>``.
    """
    if not isinstance(name, str):
        raise _unknown_name_error(name)
    if name in DATASETS:
        return DATASETS[name]
    parts = name.split("/")
    if len(parts) >= 2 and all(parts) and "-v" in parts[-1] and parts[-1].rsplit("-v", 1)[1].isdigit():
        return name
    raise _unknown_name_error(name)


def kind_of(dataset_id: str) -> str:
    """``"antmaze"`` when a component of the Minari id is ``antmaze`` (its reward gets -1), ``"adroit"`` for pen, door,
    hammer and relocate, else ``"other"``. A locally collected dataset chooses its conventions through its namespace,
    e.g. ``mytests/antmaze/goal-v0``."""
    parts = dataset_id.split("/")[:-1] + [dataset_id.split("/")[-1].rsplit("-v", 1)[0]]
    if "antmaze" in parts:
        return "antmaze"
    if any(p in ADROIT_ENVS for p in parts):
        return "adroit"
    return "other"


def reward_transform(kind: str):
    """The reward convention of a dataset kind as a function of the environment's reward: antmaze r - 1, else r.

    Applied to the offline data by ``load`` and passed to ``fqlcore.online.finetune`` for the online transitions.
    """
    if kind == "antmaze":
        return _shift_minus_one
    return _identity


def default_termination(kind: str) -> str:
    """The termination rule ``load`` uses for a dataset kind: ``"sparse-reward"`` for antmaze, else ``"stored"``."""
    return "sparse-reward" if kind == "antmaze" else "stored"


def terminations(rewards, stored, rule: str) -> np.ndarray:
    """Which transitions of an episode end the task (mask 0), by a named rule; the rule is the dataset's MDP.

    ``rewards`` are the environment's (before antmaze's -1), ``stored`` Minari's ``terminations`` of the same episode.

    - ``"sparse-reward"`` (antmaze's default): terminated where the data says so OR where the sparse goal reward is 1,
      i.e. where the next state lies within the goal radius (gymnasium-robotics: 0.45; D4RL: 0.5). This is D4RL's
      AntMaze convention: its relabelling script (D4RL ``scripts/generation/relabel_antmaze_rewards.py``) sets
      ``terminals`` and ``rewards`` from the same test ``||next xy - goal|| <= 0.5``, so every goal row is terminal
      (D4RL issue #199: "a reward/terminal of 1 when the ant is near the goal"), and FQL's code bootstraps with
      ``mask = 1 - terminals``. Minari's AntMaze datasets were collected as a continuing task
      (``continuing_task=True, reset_target=False`` in minari-dataset-generation-scripts): no transition is
      terminated, and after reaching the goal the ant stays there, collecting reward 1 until the time limit (Minari
      issue #296). Their stored flags describe that continuing task, while D4RL's evaluation and ``make_env`` end an
      episode at the goal; this rule makes the data's MDP the evaluated one. Rows after the first goal are kept (as
      in D4RL's files), each terminal. Needs rewards in {0, 1}.
    - ``"stored"``: Minari's ``terminations`` as recorded (Adroit: none; its episodes only truncate).

    Reward rows of 1 refer to the goal the data was collected with (``infos["goal"]``, the observation's
    ``desired_goal``); D4RL relabelled its rewards with the evaluation goal. Where the two differ (Minari's
    play/diverse datasets sample a goal per episode) this rule cannot mend it.
    """
    stored = np.asarray(stored, bool)
    if rule == "stored":
        return stored
    if rule == "sparse-reward":
        rewards = np.asarray(rewards)
        if not np.isin(rewards, (0.0, 1.0)).all():
            found = np.unique(rewards)[:5]
            raise ValueError(f"termination rule 'sparse-reward' needs the sparse goal reward (0 or 1 per step), got "
                             f"values such as {found}; use termination='stored' for dense rewards")
        return stored | (rewards == 1.0)
    raise ValueError(f"unknown termination rule {rule!r}: expected one of {TERMINATION_RULES}")


def _shift_minus_one(reward):
    return reward + ANTMAZE_REWARD_SHIFT


def _identity(reward):
    return reward


# ----------------------------------------------------------------------------------------------------------------
# Observations
# ----------------------------------------------------------------------------------------------------------------

GOAL_KEYS = ("achieved_goal", "observation")


def flatten_observations(observations):
    """D4RL's flat observation from a Minari observation: arrays pass through (as float32); a goal dictionary becomes
    ``concat(achieved_goal, observation)`` along the last axis."""
    if isinstance(observations, dict):
        missing = [k for k in GOAL_KEYS if k not in observations]
        if missing:
            raise ValueError(f"dictionary observations with keys {sorted(observations)} are not supported: expected a "
                             "goal-conditioned layout with 'observation' and 'achieved_goal' (gymnasium-robotics AntMaze)")
        return np.concatenate([np.asarray(observations[k], np.float32) for k in GOAL_KEYS], axis=-1)
    observations = np.asarray(observations)
    return observations if observations.dtype == np.uint8 else observations.astype(np.float32)


try:
    from gymnasium import ObservationWrapper as _ObservationWrapper
except ImportError:  # the d4rl extra is not installed: load() says so
    _ObservationWrapper = object


class FlattenGoalObservation(_ObservationWrapper):
    """An environment's dictionary observations as ``load``'s flat ones (``concat(achieved_goal, observation)``)."""

    def __init__(self, env):
        import gymnasium

        super().__init__(env)
        spaces = env.observation_space.spaces
        lows = [np.broadcast_to(spaces[k].low, spaces[k].shape) for k in GOAL_KEYS]
        highs = [np.broadcast_to(spaces[k].high, spaces[k].shape) for k in GOAL_KEYS]
        self.observation_space = gymnasium.spaces.Box(np.concatenate(lows).astype(np.float32),
                                                      np.concatenate(highs).astype(np.float32), dtype=np.float32)

    def observation(self, observation):
        return flatten_observations(observation)


def _wrap(env):
    import gymnasium

    if isinstance(env.observation_space, gymnasium.spaces.Dict):
        keys = sorted(env.observation_space.spaces)
        if not all(k in keys for k in GOAL_KEYS):
            raise ValueError(f"dictionary observations with keys {keys} are not supported: expected a goal-conditioned "
                             "layout with 'observation' and 'achieved_goal' (gymnasium-robotics AntMaze)")
        return FlattenGoalObservation(env)
    return env


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------

def _import_minari():
    try:
        import minari
    except ImportError as e:
        raise ImportError("Minari is not installed: pip install 'fqlcore[d4rl]' (minari[hdf5,hf], gymnasium-robotics)") from e
    return minari


def datasets_dir() -> str:
    """Where Minari keeps its datasets: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    return os.path.abspath(os.path.expanduser(os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")))


def _is_local(dataset_id: str) -> bool:
    return os.path.isdir(os.path.join(datasets_dir(), dataset_id, "data"))


def _missing_message(name: str, dataset_id: str, error=None) -> str:
    why = f" and could not be downloaded ({type(error).__name__}: {error})" if error is not None else ""
    return (f"the Minari dataset {dataset_id!r} (for {name!r}) is not in {datasets_dir()}{why}. On a machine with "
            f"network, download it with `{DOWNLOAD_COMMAND.format(id=dataset_id)}` (pip install 'minari[hdf5,hf]'), "
            f"then copy {os.path.join('<datasets dir>', dataset_id)} into {datasets_dir()} (or point "
            "MINARI_DATASETS_PATH at the directory that holds it). The original d4rl files are not used.")


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(previous or seconds)  # fail instead of hanging on a dead network
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_minari(name: str, download: bool = True):
    """The ``minari.MinariDataset`` of a paper name or Minari id (downloaded where missing, if ``download``)."""
    dataset_id = minari_id(name)
    minari = _import_minari()
    if not _is_local(dataset_id):
        if not download:
            raise FileNotFoundError(_missing_message(name, dataset_id))
        try:
            with _socket_timeout(60.0):
                minari.download_dataset(dataset_id)
        except Exception as e:  # no network, no huggingface_hub, an unknown remote id
            raise FileNotFoundError(_missing_message(name, dataset_id, e)) from e
    try:
        return minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError as e:
        raise FileNotFoundError(_missing_message(name, dataset_id, e)) from e
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"could not read the Minari dataset {dataset_id!r} in {datasets_dir()} ({type(e).__name__}: "
                         f"{e}): it is truncated or corrupt; delete it and download it again "
                         f"(`{DOWNLOAD_COMMAND.format(id=dataset_id)}`)") from e


def _recover_env(minari_dataset, eval_env: bool = True, **kwargs):
    """The dataset's environment. For AntMaze, an episode ends when the ant reaches the goal, as in D4RL's evaluation
    (whose normalized scores are success rates): gymnasium-robotics' ``continuing_task=True`` (its default, under
    which the episode runs on after the goal) is replaced by ``continuing_task=False`` unless the caller passes it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*reward functions were updated.*")  # adroit v1 notice
        warnings.filterwarnings("ignore", message=".*is out of date.*")  # AntMaze v4, as Minari's data used
        try:
            env = minari_dataset.recover_environment(eval_env=eval_env, **kwargs)
            if (kind_of(minari_dataset.spec.dataset_id) == "antmaze" and "continuing_task" not in kwargs
                    and getattr(env.unwrapped, "continuing_task", False) is True):
                env.close()
                env = minari_dataset.recover_environment(eval_env=eval_env, continuing_task=False, **kwargs)
        except ModuleNotFoundError as e:
            raise ImportError(f"the environment of {minari_dataset.spec.dataset_id!r} needs {e.name!r}: "
                              "pip install gymnasium-robotics (AntMaze and Adroit)") from e
    return _wrap(env)


def to_arrays(minari_dataset, kind: str | None = None, termination: str | None = None) -> dict:
    """The transitions of a ``MinariDataset`` as numpy arrays with FQL's conventions (see the module docstring);
    ``termination`` is a rule of ``terminations`` (default ``default_termination(kind)``)."""
    kind = kind or kind_of(minari_dataset.spec.dataset_id)
    termination = termination or default_termination(kind)
    transform = reward_transform(kind)
    columns = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "masks", "terminals")}
    for episode in minari_dataset.iterate_episodes():
        obs = flatten_observations(episode.observations)
        n = len(episode.actions)
        if len(obs) != n + 1:
            raise ValueError(f"episode {episode.id} has {len(obs)} observations for {n} actions (expected one more)")
        terminals = np.zeros(n, np.float32)
        terminals[-1] = 1.0
        columns["observations"].append(obs[:-1])
        columns["next_observations"].append(obs[1:])
        columns["actions"].append(np.asarray(episode.actions, np.float32).reshape(n, -1))
        rewards = np.asarray(episode.rewards, np.float32)
        terminated = terminations(rewards, episode.terminations, termination)
        columns["rewards"].append(transform(rewards))
        columns["masks"].append(1.0 - terminated.astype(np.float32))
        columns["terminals"].append(terminals)
    if not columns["actions"]:
        raise ValueError(f"the Minari dataset {minari_dataset.spec.dataset_id!r} has no episodes")
    return {k: np.concatenate(v) for k, v in columns.items()}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load(name: str, download: bool = True, *, capacity: int | None = None, extra_capacity: int = 0,
         kind: str | None = None, termination: str | None = None):
    """A D4RL dataset (through Minari) as ``(env, dataset, info)``.

    Args:
        name: a paper name (``antmaze-umaze-v2``, ``pen-human-v1``, ... see ``valid_names()``) or a Minari id
            (``D4RL/pen/human-v2``, or a locally collected dataset such as ``mytests/antmaze/goal-v0``).
        download: fetch a missing dataset with Minari (needs network and ``minari[hf]``); False only reads
            ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``).
        capacity: rows of the ``Dataset`` (room for online transitions, ``fqlcore.online``); default its size plus
            ``extra_capacity`` (e.g. the number of online steps).
        kind: ``"antmaze"``, ``"adroit"`` or ``"other"``; default from the id (``kind_of``).
        termination: the rule that sets the masks (``terminations``): ``"sparse-reward"`` (antmaze's default) or
            ``"stored"`` (the others' default).

    Returns the task's environment (Minari's evaluation environment of the dataset where it has one, else the one that
    collected it; goal dictionaries flattened as the data), the ``fqlcore.data.Dataset`` (conventions in the module
    docstring), and ``info``: ``source`` ("minari", never the paper's D4RL files), ``name``, ``minari_id``,
    ``dataset_version`` (the Minari dataset's version), ``minari_version`` (the installed package) and
    ``minari_version_created`` (the one that wrote the files), ``kind``, ``reward_shift`` (-1 for antmaze, else 0),
    ``ref_min_score`` / ``ref_max_score`` (from the dataset's metadata; None where it has none), ``termination`` (the
    rule's name), ``terminated_rows`` (rows with mask 0), ``max_episode_steps`` (the evaluation environment's time
    limit), ``eval_maze_differs`` (AntMaze: the evaluation maze's walls are not the data's), ``score_caveat``
    (``score_caveat(info)``, "" when none), ``transitions`` and ``episodes``.

    Raises ValueError for an unknown name (listing the valid ones) and FileNotFoundError for a missing dataset (with
    the ``minari download`` command that gets it).
    """
    from fqlcore import data

    dataset_id = minari_id(name)
    ds = load_minari(name, download)
    kind = kind or kind_of(dataset_id)
    if kind not in ("antmaze", "adroit", "other"):
        raise ValueError(f"kind must be 'antmaze', 'adroit' or 'other', got {kind!r}")
    termination = termination or default_termination(kind)
    if termination not in TERMINATION_RULES:
        raise ValueError(f"unknown termination rule {termination!r}: expected one of {TERMINATION_RULES}")
    arrays = to_arrays(ds, kind, termination)
    env = _recover_env(ds, eval_env=True)
    metadata = ds.storage.metadata
    ref = {k: (float(metadata[k]) if metadata.get(k) is not None else None) for k in ("ref_min_score", "ref_max_score")}
    spec = getattr(env, "spec", None)
    info = {"source": SOURCE, "name": name, "minari_id": dataset_id, "dataset_version": int(ds.spec.version or 0),
            "minari_version": _version("minari"), "minari_version_created": metadata.get("minari_version"),
            "kind": kind, "reward_shift": ANTMAZE_REWARD_SHIFT if kind == "antmaze" else 0.0, **ref,
            "termination": termination, "terminated_rows": int((arrays["masks"] == 0).sum()),
            "max_episode_steps": getattr(spec, "max_episode_steps", None),
            "eval_maze_differs": _mazes_differ(getattr(ds, "env_spec", None), spec),
            "transitions": int(len(arrays["actions"])), "episodes": int(ds.total_episodes),
            "path": os.path.join(datasets_dir(), dataset_id)}
    info["score_caveat"] = score_caveat(info)
    capacity = info["transitions"] + int(extra_capacity) if capacity is None else capacity
    return env, data.from_arrays(**arrays, capacity=capacity), info


def make_env(name: str, eval_env: bool = True, **kwargs):
    """The environment of a dataset (its evaluation environment by default), observations flattened as ``load``'s.

    Reads the dataset's metadata from disk (no download); other keyword arguments go to ``gymnasium.make``.
    """
    return _recover_env(load_minari(name, download=False), eval_env=eval_env, **kwargs)


def make_env_fn(name: str, **kwargs):
    """A picklable zero-argument function that makes ``make_env(name, **kwargs)`` (for ``fqlcore.evaluate``)."""
    return functools.partial(make_env, name, **kwargs)


def _maze_walls(spec):
    """The walls of a maze environment's ``maze_map`` keyword (1 = wall; the goal and reset marks ignored), or None."""
    maze = (getattr(spec, "kwargs", None) or {}).get("maze_map")
    return None if maze is None else tuple(tuple(str(cell) == "1" for cell in row) for row in maze)


def _mazes_differ(spec, other) -> bool:
    """True when both environments name a maze (``maze_map``) and their walls differ."""
    walls, other_walls = _maze_walls(spec), _maze_walls(other)
    return walls is not None and other_walls is not None and walls != other_walls


def paper_name(name_or_id: str) -> str | None:
    """The paper's D4RL name of a paper name or of its Minari id (``D4RL/pen/cloned-v2`` -> ``pen-cloned-v1``); None
    for other datasets."""
    if name_or_id in DATASETS:
        return name_or_id
    return next((n for n, i in DATASETS.items() if i == name_or_id), None)


def score_caveat(info: dict) -> str:
    """Why a normalized score of this dataset is not comparable with the paper's D4RL column, in one line ("" when no
    reason is known). ``info`` as ``load``'s (``name``, ``minari_id``, ``kind``, ``max_episode_steps``,
    ``ref_min_score``, ``ref_max_score``, ``eval_maze_differs``; missing keys are skipped). The reasons:

    - a time limit other than D4RL's for the task (``D4RL_TIME_LIMITS``): Minari's pen runs 200 steps where D4RL's ran
      100 (Minari issue #286) and its reference scores were not updated for the longer episodes (Minari issue #303,
      where IQL scores 187 on Minari's pen-cloned against 83 on D4RL's);
    - AntMaze reference scores other than D4RL's 0 and 1: a normalized score is then not the success rate (the paper
      reports success on AntMaze);
    - an evaluation maze whose walls are not the data's (Minari issue #304, umaze-diverse).
    """
    reasons = []
    name = paper_name(str(info.get("name", ""))) or paper_name(str(info.get("minari_id", "")))
    steps, d4rl_steps = info.get("max_episode_steps"), D4RL_TIME_LIMITS.get(name)
    if steps is not None and d4rl_steps is not None and int(steps) != d4rl_steps:
        longer = " (longer episodes collect more reward)" if int(steps) > d4rl_steps else ""
        reasons.append(f"time limit {int(steps)} steps where D4RL's {name} had {d4rl_steps}, reference scores not "
                       "updated for it (Minari issues #286, #303): normalized scores not comparable with D4RL's"
                       + longer)
    lo, hi = info.get("ref_min_score"), info.get("ref_max_score")
    if info.get("kind") == "antmaze" and lo is not None and hi is not None and (lo, hi) != (0.0, 1.0):
        reasons.append(f"AntMaze reference scores {lo:g} and {hi:g}, not D4RL's 0 and 1: the normalized score is not "
                       "the success rate; report success, as the paper does")
    if info.get("eval_maze_differs"):
        reasons.append("the evaluation maze's walls differ from the data's (Minari issue #304)")
    return "; ".join(reasons)


def normalized_score(info: dict, returns):
    """D4RL's normalized score ``100 * (return - ref_min) / (ref_max - ref_min)`` with the dataset's reference scores
    (``info`` from ``load``, or any dict with ``ref_min_score`` and ``ref_max_score``). Returns are the environment's
    own (evaluation does not subtract antmaze's 1)."""
    lo, hi = info.get("ref_min_score"), info.get("ref_max_score")
    if lo is None or hi is None:
        raise ValueError(f"{info.get('minari_id', 'this dataset')!r} has no reference scores (ref_min_score / "
                         "ref_max_score in its Minari metadata): a normalized score is undefined; report returns")
    if hi == lo:
        raise ValueError(f"reference scores are equal ({lo}): a normalized score is undefined")
    return 100.0 * (np.asarray(returns, np.float64) - lo) / (hi - lo)

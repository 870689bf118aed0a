"""OGBench data layer: regenerated datasets (format, manifest, where they live, determinism), loading through
OGBench's own loader, and the errors. No network: downloads are replaced by a failing stub."""
import json
import os
import shutil

import numpy as np
import pytest

import gymnasium
import ogbench  # noqa: F401  (make test installs every extra: a missing one fails, never skips)

from fqlcore.envs import ogbench as og  # noqa: E402

NAME = "cube-single-play-singletask-task2-v0"
DATASET = "cube-single-play-v0"
EPISODES, STEPS = 4, 60
CUBE_CENTER = np.array([0.425, 0.0, 0.0])


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def fail(dataset, data_dir):
        raise OSError("no network in tests")

    monkeypatch.setattr(og, "_download", fail)


@pytest.fixture(scope="module")
def regen(tmp_path_factory):
    root = tmp_path_factory.mktemp("regen")
    manifest = og.generate(DATASET, out_dir=root, num_episodes=EPISODES, seed=0, workers=1, max_episode_steps=STEPS,
                           progress=False)
    return root, manifest


def _raw(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_file_format_is_ogbench(regen):
    root, manifest = regen
    paths = og.regenerated_paths(DATASET, root)
    assert manifest["paths"] == paths and paths["dir"] == os.path.join(str(root), DATASET)
    train, val = _raw(paths["train"]), _raw(paths["val"])
    assert set(train) == {"observations", "actions", "terminals", "qpos", "qvel"}
    assert train["observations"].shape == (EPISODES * STEPS, 28) and train["observations"].dtype == np.float32
    assert train["actions"].shape == (EPISODES * STEPS, 5) and train["actions"].dtype == np.float32
    assert train["terminals"].dtype == bool and train["qpos"].dtype == np.float32 and train["qvel"].dtype == np.float32
    ends = np.flatnonzero(train["terminals"])
    np.testing.assert_array_equal(ends, np.arange(1, EPISODES + 1) * STEPS - 1)  # episode ends only
    assert np.abs(train["actions"]).max() <= 1.0
    assert len(val["actions"]) == STEPS  # max(1, 10% of the episodes)
    # qpos is the state of the stored observation (OGBench stores info["prev_qpos"]): the cube's position agrees
    np.testing.assert_allclose(train["observations"][:, 19:22] / 10 + CUBE_CENTER, train["qpos"][:, 14:17], atol=1e-5)


def test_manifest(regen):
    root, manifest = regen
    with open(og.regenerated_paths(DATASET, root)["manifest"]) as f:
        on_disk = json.load(f)
    assert on_disk["source"] == "regenerated" and on_disk["dataset"] == DATASET
    assert on_disk["episodes"] == {"train": EPISODES, "val": 1} and on_disk["seed"] == 0
    assert on_disk["steps_per_episode"] == STEPS and on_disk["published_settings"] is False
    assert on_disk["ogbench_version"] == og._ogbench_version() and on_disk["date"]
    assert on_disk["command"].startswith(og.generate_command(DATASET)) and "--num-episodes 4" in on_disk["command"]
    for name, entry in on_disk["files"].items():
        assert os.path.getsize(os.path.join(str(root), DATASET, name)) == entry["bytes"]
    assert og.read_manifest(DATASET, root)["files"] == on_disk["files"]


def test_the_regeneration_estimate_counts_the_validation_file_and_the_cores():
    for dataset, s in og.GENERATION_TABLE.items():
        # the rows generate writes at the published size: the episodes and 10% more for validation
        rows = (s["num_episodes"] + max(1, s["num_episodes"] // 10)) * s["max_episode_steps"]
        per_core = 5 if dataset.startswith("visual-") else og.STEPS_PER_SECOND_PER_CORE
        assert og.regeneration_minutes(dataset, 2) == pytest.approx(rows / (2 * per_core) / 60)
        assert og.regeneration_minutes(dataset, 16) == pytest.approx(og.regeneration_minutes(dataset, 2) / 8)


def no_network(dataset, data_dir):
    raise OSError("no network")


def test_auto_takes_published_files_when_they_can_be_downloaded(regen, tmp_path, monkeypatch):
    root, _ = regen
    paths = og.regenerated_paths(DATASET, root)

    def download(dataset, data_dir):  # stands in for OGBench's downloader
        os.makedirs(data_dir, exist_ok=True)
        shutil.copy(paths["train"], os.path.join(data_dir, f"{dataset}.npz"))
        shutil.copy(paths["val"], os.path.join(data_dir, f"{dataset}-val.npz"))

    monkeypatch.setattr(og, "_download", download)
    *_, info = og.load_arrays(NAME, data_dir=tmp_path / "published", regen_dir=root)
    assert info["source"] == "published", "a regenerated copy is never chosen over files that can be downloaded"


def test_load_regenerated_through_ogbench_loader(regen, tmp_path, monkeypatch):
    root, _ = regen
    monkeypatch.setattr(og, "_download", no_network)
    with pytest.warns(UserWarning, match="could not be downloaded"):
        env, train, val, info = og.load(NAME, data_dir=tmp_path / "published", regen_dir=root)  # source="auto"
    assert info["source"] == "regenerated" and info["manifest"]["source"] == "regenerated"
    assert info["path"].startswith(str(root)) and info["success_timing"] == "post"
    assert env.unwrapped._success_timing == "post"
    n = EPISODES * (STEPS - 1)  # OGBench's loader drops the last row of each episode (it has no next observation)
    assert int(train.size) == n == info["transitions"] and train.observations.shape == (n, 28)
    assert int(val.size) == STEPS - 1
    terminals, rewards, masks = (np.asarray(x) for x in (train.terminals, train.rewards, train.masks))
    np.testing.assert_array_equal(np.flatnonzero(terminals), np.arange(1, EPISODES + 1) * (STEPS - 1) - 1)
    obs, next_obs = np.asarray(train.observations), np.asarray(train.next_observations)
    inside = terminals[:-1] == 0
    np.testing.assert_array_equal(next_obs[:-1][inside], obs[1:][inside])
    assert np.abs(np.asarray(train.actions)).max() <= 1 - 1e-5
    # singletask reward = -(unsolved subtasks) of the state s of (s, a, s'); one cube: {-1, 0}; mask 0 iff solved
    assert set(np.unique(rewards)) <= {-1.0, 0.0}
    np.testing.assert_array_equal(masks == 0, rewards == 0)
    raw = _raw(og.regenerated_paths(DATASET, root)["train"])
    goal = env.unwrapped.cur_task_info["goal_xyzs"][0]
    solved = np.linalg.norm(raw["qpos"][~raw["terminals"], 14:17] - goal, axis=-1) <= 0.04
    np.testing.assert_array_equal(rewards, solved.astype(np.float32) - 1)


def test_published_path_reads_ogbench_download_layout(regen, tmp_path):
    """Files laid out as OGBench downloads them are read by the published path, which "auto" prefers."""
    root, _ = regen
    paths = og.regenerated_paths(DATASET, root)
    published = tmp_path / "published"
    published.mkdir()
    shutil.copy(paths["train"], published / f"{DATASET}.npz")
    shutil.copy(paths["val"], published / f"{DATASET}-val.npz")
    env, train, _, info = og.load(NAME, data_dir=published, regen_dir=root)
    assert info["source"] == "published" and "manifest" not in info and info["path"].startswith(str(published))
    assert env.unwrapped._success_timing == "post" and info["ogbench_version"] == og._ogbench_version()
    with pytest.warns(UserWarning):
        _, regenerated, _, _ = og.load(NAME, data_dir=published, source="regenerated", regen_dir=root)
    np.testing.assert_array_equal(np.asarray(train.rewards), np.asarray(regenerated.rewards))


def test_result_does_not_depend_on_workers(regen, tmp_path):
    root, _ = regen
    og.generate(DATASET, out_dir=tmp_path, num_episodes=EPISODES, seed=0, workers=2, max_episode_steps=STEPS,
                progress=False)
    one, two = (_raw(og.regenerated_paths(DATASET, r)["train"]) for r in (root, tmp_path))
    for k in one:
        np.testing.assert_array_equal(one[k], two[k], err_msg=k)
    with pytest.raises(FileExistsError, match="overwrite"):
        og.generate(DATASET, out_dir=tmp_path, num_episodes=1, max_episode_steps=STEPS, progress=False)
    og.generate(DATASET, out_dir=tmp_path, num_episodes=1, seed=1, workers=1, max_episode_steps=STEPS,
                overwrite=True, progress=False)
    other = _raw(og.regenerated_paths(DATASET, tmp_path)["train"])
    assert not np.array_equal(other["actions"], one["actions"][:STEPS])  # another seed, other episodes


def test_a_worker_that_cannot_build_the_environment_fails_the_run():
    # A Pool whose initializer raises respawns its workers forever: the error must reach the caller instead.
    spec = {"env": "no-such-environment-v0", "max_episode_steps": STEPS}
    with pytest.raises(RuntimeError, match="could not build the environment(.|\n)*no-such-environment"):
        list(og._episodes(spec, total=2, workers=2))


def test_refuses_ogbench_download_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for out in ("~/.ogbench/data", "~/.ogbench/data/sub"):
        with pytest.raises(ValueError, match="download directory"):
            og.generate(DATASET, out_dir=out, num_episodes=1, max_episode_steps=STEPS, progress=False)
    assert not os.path.exists(tmp_path / ".ogbench")
    published_like = tmp_path / "mixed"
    published_like.mkdir()
    (published_like / f"{DATASET}.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="published"):
        og.generate(DATASET, out_dir=published_like, num_episodes=1, max_episode_steps=STEPS, progress=False)


def test_regen_dir_default_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(og.REGEN_DIR_ENV, raising=False)
    assert og.regenerated_dir() == str(tmp_path / ".fqlcore" / "regenerated-ogbench")
    monkeypatch.setenv(og.REGEN_DIR_ENV, str(tmp_path / "elsewhere"))
    assert og.regenerated_dir() == str(tmp_path / "elsewhere")
    assert og.OGBENCH_DOWNLOAD_DIR == __import__("ogbench").utils.DEFAULT_DATASET_DIR


@pytest.mark.parametrize("bad", ["cube-single-play-singletask-task9-v0", "cube-singel-play-singletask-task2-v0",
                                 "cube-single-play-v0", "halfcheetah-medium-v2", "cube-single-play-singletask-task2-v1"])
def test_unknown_names(bad):
    with pytest.raises(ValueError, match="Valid names") as e:
        og.load(bad)
    assert "cube-single-play-v0" in str(e.value)  # the valid ones are listed
    if "singel" in bad:
        assert "Did you mean 'cube-single-play-singletask-task2-v0'" in str(e.value)


def test_generate_rejects_unknown_and_locomotion():
    with pytest.raises(ValueError, match="cannot be regenerated"):
        og.generate("antmaze-large-navigate-v0", progress=False)
    with pytest.raises(ValueError, match="unknown OGBench dataset"):
        og.generate("cube-sixfold-play-v0", progress=False)


def test_missing_data_gives_the_command(tmp_path):
    for source in ("auto", "regenerated", "published"):
        with pytest.raises(FileNotFoundError) as e:
            og.load(NAME, data_dir=tmp_path / "published", source=source, regen_dir=tmp_path / "regen")
        assert og.generate_command(DATASET) in str(e.value)


def test_locomotion_without_data(tmp_path):
    name = "antmaze-large-navigate-singletask-task1-v0"
    with pytest.raises(FileNotFoundError, match="cannot be regenerated") as e:
        og.load(name, data_dir=tmp_path)
    assert "download_datasets(['antmaze-large-navigate-v0']" in str(e.value)
    with pytest.raises(ValueError, match="cannot be regenerated"):
        og.load(name, data_dir=tmp_path, source="regenerated")


def test_corrupt_file_is_reported(regen, tmp_path):
    root, _ = regen
    shutil.copytree(os.path.join(str(root), DATASET), tmp_path / DATASET)
    train = og.regenerated_paths(DATASET, tmp_path)["train"]
    with open(train, "r+b") as f:
        f.truncate(os.path.getsize(train) // 2)
    with pytest.raises(ValueError, match="corrupt"):
        og.load(NAME, data_dir=tmp_path / "published", source="regenerated", regen_dir=tmp_path)


def test_make_env_uses_post_success_timing():
    spec = gymnasium.spec("cube-single-singletask-task2-v0")
    env = og.make_env(NAME)
    assert env.unwrapped._success_timing == "post" and env.spec.max_episode_steps == 200
    if "success_timing" in spec.kwargs:  # ogbench >= 1.2 registers "pre"; make_env overrides it
        assert spec.kwargs["success_timing"] == "pre"
        assert og.make_env(NAME, success_timing=None).unwrapped._success_timing == "pre"
    assert og.make_env("cube-single-singletask-task2-v0").unwrapped._success_timing == "post"
    env.close()


def test_puzzle_has_button_states_and_bounded_rewards(tmp_path, monkeypatch):
    monkeypatch.setattr(og, "_download", no_network)
    og.generate("puzzle-3x3-play-v0", out_dir=tmp_path, num_episodes=1, max_episode_steps=30, workers=1, progress=False)
    raw = _raw(og.regenerated_paths("puzzle-3x3-play-v0", tmp_path)["train"])
    assert raw["button_states"].shape == (30, 9) and raw["button_states"].dtype == np.int64
    with pytest.warns(UserWarning):
        _, train, _, info = og.load("puzzle-3x3-play-singletask-task4-v0", data_dir=tmp_path / "p", regen_dir=tmp_path)
    rewards, masks = np.asarray(train.rewards), np.asarray(train.masks)
    assert set(np.unique(rewards)) <= set(np.arange(-9.0, 1.0)) and info["source"] == "regenerated"
    np.testing.assert_array_equal(masks == 0, rewards == 0)


def _can_render():
    return os.environ.get("MUJOCO_GL") in ("egl", "osmesa")


@pytest.mark.skipif(not _can_render(), reason="no headless MuJoCo rendering (apt-get install -y libosmesa6)")
def test_visual_dataset_is_uint8(tmp_path):
    og.generate("visual-cube-single-play-v0", out_dir=tmp_path, num_episodes=1, max_episode_steps=3, workers=1,
                progress=False)
    raw = _raw(og.regenerated_paths("visual-cube-single-play-v0", tmp_path)["train"])
    assert raw["observations"].shape == (3, 64, 64, 3) and raw["observations"].dtype == np.uint8


def test_an_interrupted_overwrite_leaves_the_old_dataset_whole(regen, tmp_path, monkeypatch):
    root, _ = regen
    shutil.copytree(os.path.join(str(root), DATASET), tmp_path / DATASET)
    before = og.read_manifest(DATASET, tmp_path)
    real_episodes = og._episodes

    def interrupted(spec, total, workers):
        yield from list(real_episodes(spec, total, workers))[:1]
        raise KeyboardInterrupt  # Ctrl-C after the first new episode

    monkeypatch.setattr(og, "_episodes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        og.generate(DATASET, out_dir=tmp_path, num_episodes=1, seed=5, workers=1, max_episode_steps=STEPS,
                    overwrite=True, progress=False)
    assert og.read_manifest(DATASET, tmp_path) == before  # the old copy, its files checked against the manifest
    _, dataset, _, info = og.load(NAME, data_dir=tmp_path / "published", source="regenerated", regen_dir=tmp_path)
    assert info["source"] == "regenerated" and int(dataset.size) == before["transitions"]["train"]
    assert sorted(os.listdir(tmp_path)) == [DATASET]  # no staging copy or lock left behind


def test_a_second_generation_of_the_same_dataset_is_refused_while_one_runs(tmp_path):
    from fqlcore import runlock
    with runlock.hold(os.path.join(str(tmp_path), f".{DATASET}.lock")):
        with pytest.raises(ValueError, match=f"in use by process {os.getpid()}"):
            og.generate(DATASET, out_dir=tmp_path, num_episodes=1, workers=1, max_episode_steps=STEPS, progress=False)


def test_asking_for_published_data_names_the_regenerated_copy(regen, tmp_path):
    root, _ = regen
    with pytest.raises(FileNotFoundError) as e:
        og.load(NAME, data_dir=tmp_path / "published", source="published", regen_dir=root)
    message = str(e.value)
    assert "regenerated copy" in message and "source='regenerated'" in message and "there is no regenerated" not in message


def test_files_without_a_manifest_suggest_overwrite(regen, tmp_path):
    root, _ = regen
    shutil.copytree(os.path.join(str(root), DATASET), tmp_path / DATASET)
    os.remove(og.regenerated_paths(DATASET, tmp_path)["manifest"])
    with pytest.raises(FileNotFoundError, match="--overwrite"):
        og.read_manifest(DATASET, tmp_path)

"""reproduce: one CSV row per (seed, evaluation) with provenance; reruns skip finished work; shards split the tasks."""
import csv

import gymnasium
import jax.numpy as jnp
import numpy as np
import pytest

from fqlcore import reproduce, scale as scales, toy

TINY = scales.Scale("ci", hidden_dims=(8,), batch_size=16, offline_steps=20, toy_steps=20, eval_episodes=4, seeds=2)
TASKS = ["cube-single-play-singletask-task1-v0", "cube-single-play-singletask-task2-v0"]


class BanditEnv(gymnasium.Env):
    """The toy bandit as a one-step environment: success when the reward is above 0.5."""
    resets_before_crash = None  # set to simulate a job that dies in the middle of an evaluation
    observation_space = gymnasium.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if BanditEnv.resets_before_crash is not None:
            BanditEnv.resets_before_crash -= 1
            if BanditEnv.resets_before_crash < 0:
                raise RuntimeError("the job died")
        self.obs = self.np_random.uniform(-1, 1, (1,)).astype(np.float32)
        return self.obs, {}

    def step(self, action):
        reward = float(toy.bandit_reward(jnp.asarray(self.obs), jnp.asarray(action)))
        return self.obs, reward, True, False, {"success": reward > 0.5}


class Loader:
    def __init__(self):
        self.calls = 0

    def __call__(self, task):
        self.calls += 1
        return toy.bandit_dataset(500), BanditEnv, {"data_source": "toy", "ogbench_version": "none"}


def run(tmp_path, loader, task=TASKS[0]):
    return reproduce.run_task(task, "fql", 2, TINY, str(tmp_path / "results.csv"), runs_dir=str(tmp_path / "runs"),
                              loader=loader, progress=False)


def test_rows_carry_the_schedule_and_provenance(tmp_path):
    rows = run(tmp_path, Loader())
    with open(tmp_path / "results.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) == 2 * 11  # 2 seeds x evaluations at 0, 2, ..., 20
    assert {(int(r["seed"]), int(r["step"])) for r in written} == {(s, t) for s in (0, 1) for t in range(0, 21, 2)}
    for r in written:
        assert r["commit"] and r["device"] and r["date"] and r["data_source"] == "toy" and r["scale"] == "ci"
        assert 0.0 <= float(r["success"]) <= 1.0 and r["total_steps"] == "20" and r["episodes"] == "4"


def test_a_rerun_resumes_unfinished_runs_and_skips_finished_ones(tmp_path):
    loader = Loader()
    BanditEnv.resets_before_crash = 50  # dies in the middle of the evaluations
    try:
        with pytest.raises(RuntimeError, match="died"):
            run(tmp_path, loader)
    finally:
        BanditEnv.resets_before_crash = None
    path = tmp_path / "results.csv"
    with open(path, newline="") as f:
        assert 0 < len(list(csv.DictReader(f))) < 22
    run(tmp_path, loader)
    with open(path, newline="") as f:
        keys = [(r["seed"], r["step"]) for r in csv.DictReader(f)]
    assert len(keys) == len(set(keys)) == 22, "missing rows are added once, none duplicated"
    run(tmp_path, loader)
    assert loader.calls == 2, "a finished run is not loaded, trained or evaluated again"


def test_the_table_shows_ours_beside_the_paper_and_marks_what_has_not_run(tmp_path):
    run(tmp_path, Loader())
    text = reproduce.table(TASKS, "fql", TINY, str(tmp_path / "results.csv"))
    first, second = text.splitlines()[1:]
    assert TASKS[0] in first and "±" in first.split(TASKS[0])[1] and first.rstrip().endswith("97 ± 2")
    assert "not run" in second and second.rstrip().endswith("97 ± 2")


def test_shards_split_the_tasks_without_overlap():
    tasks = reproduce.suite_tasks("ogbench-state")
    assert len(tasks) == 50
    parts = [reproduce.shard(tasks, f"{k}/3") for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(tasks) and sum(map(len, parts)) == 50
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            reproduce.shard(tasks, bad)


def test_suites_and_unknown_names():
    assert reproduce.suite_tasks("cube-single-play") == [f"cube-single-play-singletask-task{i}-v0" for i in range(1, 6)]
    assert len(reproduce.suite_tasks("ogbench-visual")) == 5
    assert reproduce.suite_tasks(",".join(TASKS)) == TASKS
    with pytest.raises(ValueError, match="unknown suite"):
        reproduce.suite_tasks("cube-single-play-task2")


def test_the_paper_schedule():
    paper = scales.get("paper")
    state = reproduce.schedule(TASKS[1], paper)
    assert (state.steps, state.eval_every, state.report_steps) == (1_000_000, 100_000, (800_000, 900_000, 1_000_000))
    pixel = reproduce.schedule("visual-cube-single-play-singletask-task1-v0", paper)
    assert (pixel.steps, pixel.report_steps) == (500_000, (300_000, 400_000, 500_000))

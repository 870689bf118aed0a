"""reproduce: one CSV row per (seed, evaluation) with provenance; reruns skip finished work; shards split the tasks."""
import csv
import dataclasses
import os
import shutil
import sys

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fqlcore import data, provenance, reproduce, scale as scales, toy

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


def test_run_problems_names_what_keeps_rows_from_a_finished_labelled_run(tmp_path):
    run(tmp_path, Loader())
    rows = reproduce.read_rows(str(tmp_path / "results.csv"))
    assert reproduce.run_problems(rows, TASKS[0], "fql", TINY) == []
    (missing,) = reproduce.run_problems(rows[:-1], TASKS[0], "fql", TINY)
    assert missing.startswith("1 evaluations missing") and "(1, 20)" in missing
    assert reproduce.run_problems([r for r in rows if r["seed"] == "0"], TASKS[0], "fql", TINY) == [
        "1 seeds, expected 2"]
    other = [dict(r, hyperparameters=r["hyperparameters"].replace("alpha=", "alpha=1")) for r in rows]
    (wrong,) = reproduce.run_problems(other, TASKS[0], "fql", TINY)
    assert wrong.startswith("hyperparameters") and "expected" in wrong
    assert any(p.startswith("method") for p in reproduce.run_problems(rows, TASKS[0], "iql", TINY))
    assert any(p.startswith("total_steps") for p in reproduce.run_problems(
        rows, TASKS[0], "fql", dataclasses.replace(TINY, offline_steps=30)))
    mixed = rows[:1] + [dict(r, data_source="published") for r in rows[1:]]
    assert reproduce.run_problems(mixed, TASKS[0], "fql", TINY) == [
        "data_source ['published', 'toy'], expected one label"]
    assert reproduce.run_problems([], TASKS[0], "fql", TINY) == ["no rows"]
    dated = [{"date": "2026-11-29T08:06:34+00:00"}, {"date": "2026-11-29T10:36:34+00:00"}]
    assert reproduce.run_hours(dated[::-1]) == pytest.approx(2.5)


def test_evaluations_in_background_processes_write_the_rows_inline_ones_do(tmp_path):
    inline = reproduce.run_task(TASKS[0], "fql", 2, TINY, str(tmp_path / "inline.csv"), runs_dir=str(tmp_path / "a"),
                                loader=Loader(), progress=False, workers=1)
    timings = {}
    background = reproduce.run_task(TASKS[0], "fql", 2, TINY, str(tmp_path / "background.csv"),
                                    runs_dir=str(tmp_path / "b"), loader=Loader(), progress=False, workers=2,
                                    background_eval=True, timings=timings)

    def scores(rows):
        return {(int(r["seed"]), int(r["step"])): (float(r["success"]), float(r["return"])) for r in rows}

    assert len(background) == 22 and scores(background) == scores(inline)
    with open(tmp_path / "background.csv", newline="") as f:
        assert scores(csv.DictReader(f)) == scores(inline), "every row written once, in the file"
    assert set(timings) == {"load", "compile", "train"} and timings["compile"] < timings["train"]


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


def test_a_run_whose_checkpoint_is_gone_never_lends_its_rows_to_a_new_run(tmp_path):
    BanditEnv.resets_before_crash = 50  # dies after some evaluations past step 0 are written
    try:
        with pytest.raises(RuntimeError, match="died"):
            run(tmp_path, Loader())
    finally:
        BanditEnv.resets_before_crash = None
    path = tmp_path / "results.csv"
    before = path.read_bytes()
    old = list(csv.DictReader(open(path, newline="")))
    assert any(r["step"] != "0" for r in old) and len({r["run_id"] for r in old}) == 1 and old[0]["run_id"]
    shutil.rmtree(tmp_path / "runs")  # runs/ gone, results/ kept
    rows = run(tmp_path, Loader())
    assert path.read_bytes().startswith(before), "the first run's rows are kept as they were"
    assert len(rows) == 22 and {r["run_id"] for r in rows} == {rows[0]["run_id"]} != {old[0]["run_id"]}
    assert len(list(csv.DictReader(open(path, newline="")))) == len(old) + 22, "the new run evaluated every step itself"
    lines = reproduce.table(TASKS[:1], "fql", TINY, str(path)).splitlines()[1:]
    assert [f"[run {old[0]['run_id']}]" in lines[0], f"[run {rows[0]['run_id']}]" in lines[1]] == [True, True]
    assert "not run" in lines[0] and "±" in lines[1], "the table reports each run on its own, never pooled"
    again = run(tmp_path, Loader())
    assert [(r["run_id"], str(r["seed"]), str(r["step"])) for r in again] == \
        [(r["run_id"], str(r["seed"]), str(r["step"])) for r in rows], "the finished run is found and not run again"


def test_rows_record_the_dataset_versions_and_success_timing(tmp_path):
    class TimedLoader(Loader):
        def __call__(self, task):
            dataset, env, source = super().__call__(task)
            return dataset, env, {**source, "success_timing": "post"}

    rows = run(tmp_path, TimedLoader())
    assert {r["dataset_fingerprint"] for r in rows} == {data.fingerprint(toy.bandit_dataset(500))}
    assert {r["success_timing"] for r in rows} == {"post"}
    assert {r["versions"] for r in rows} == {provenance.versions()} and "jax " in rows[0]["versions"]


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
    # The CPU-budget scale keeps the protocol at its own length: 10% evaluations, the mean of 80/90/100%.
    budget = reproduce.schedule(TASKS[1], scales.get("cpu-hour"))
    assert (budget.steps, budget.eval_every, budget.report_steps) == (250_000, 25_000, (200_000, 225_000, 250_000))


def test_provenance_names_the_command_and_the_cpu(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(sys, "argv", ["/somewhere/fqlcore/__main__.py", "reproduce", "--scale", "cpu-hour"])
    assert provenance.command() == "python -m fqlcore reproduce --scale cpu-hour"
    monkeypatch.setattr(sys, "argv", ["benchmarks/throughput.py", "--seconds", "5"])
    assert provenance.command() == "python benchmarks/throughput.py --seconds 5"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=512 --xla_dump_to=/tmp/a b")  # it changes the speed
    assert provenance.command() == ("XLA_FLAGS='--xla_cpu_prefer_vector_width=512 --xla_dump_to=/tmp/a b' "
                                    "python benchmarks/throughput.py --seconds 5")
    if jax.default_backend() == "cpu":
        device = provenance.device()
        assert device.endswith("(cpu)") and f"{len(os.sched_getaffinity(0))} cores" in device


# ----------------------------------------------------------------------------------------------------------------
# D4RL (through Minari) and offline-to-online
# ----------------------------------------------------------------------------------------------------------------

CAVEAT = "Minari's pen episodes last 200 steps, D4RL's 100, with the same reference scores"
MINARI_SOURCE = {"data_source": "minari", "ogbench_version": "", "ref_min_score": 0.0, "ref_max_score": 2.0,
                 "minari_id": "D4RL/pen/human-v2 (minari 0.5.4)", "termination": "stored", "score_caveat": CAVEAT}


class OnlineLoader(Loader):
    """A loader for offline-to-online runs: the bandit dataset with ``online_steps`` free rows."""

    def __call__(self, task, online_steps=0):
        self.calls += 1
        self.online_steps = online_steps
        dataset = toy.bandit_dataset(500)
        return data.from_arrays(*(np.asarray(getattr(dataset, f))[:500] for f in data.FIELDS[:5]),
                                capacity=500 + online_steps), BanditEnv, dict(MINARI_SOURCE)


def test_d4rl_and_offline_to_online_suites():
    antmaze, adroit = reproduce.suite_tasks("d4rl-antmaze"), reproduce.suite_tasks("d4rl-adroit")
    assert antmaze == [f"antmaze-{m}-v2" for m in ("umaze", "umaze-diverse", "medium-play", "medium-diverse",
                                                    "large-play", "large-diverse")]
    assert len(adroit) == 12 and {t.split("-")[0] for t in adroit} == {"pen", "door", "hammer", "relocate"}
    o2o = reproduce.suite_tasks("offline-to-online")
    assert len(o2o) == 15 and "cube-double-play-singletask-v0" in o2o and "relocate-cloned-v1" in o2o
    assert reproduce.suite_mode("offline-to-online") == "offline_to_online" == reproduce.suite_mode(
        "offline-to-online:pen-cloned-v1")
    assert reproduce.suite_mode("d4rl-adroit") == "offline"
    assert reproduce.suite_tasks("offline-to-online:pen-cloned-v1,antmaze-umaze-v2") == ["pen-cloned-v1",
                                                                                         "antmaze-umaze-v2"]
    with pytest.raises(ValueError, match="unknown suite"):
        reproduce.suite_tasks("offline-to-online:pen-human-v1")  # not a fine-tuning task of the paper
    assert reproduce.metric_of("pen-human-v1") == "normalized_score"
    assert reproduce.metric_of("antmaze-umaze-v2") == reproduce.metric_of(TASKS[0]) == "success"


def test_pixel_tasks_run_the_papers_four_seeds_at_its_scale():
    paper, cpu = scales.get("paper"), scales.get("cpu-hour")
    assert reproduce.paper_seeds("visual-cube-single-play-singletask-task1-v0", paper) == 4
    assert reproduce.paper_seeds("cube-single-play-singletask-task1-v0", paper) == 8
    assert reproduce.paper_seeds("visual-cube-single-play-singletask-task1-v0", cpu) == cpu.seeds


def test_the_papers_d4rl_and_offline_to_online_schedules():
    paper = scales.get("paper")
    d4rl = reproduce.schedule("pen-human-v1", paper)
    assert (d4rl.steps, d4rl.eval_every, d4rl.report_steps, d4rl.total_steps) == (500_000, 100_000, (500_000,), 500_000)
    o2o = reproduce.schedule("antmaze-umaze-v2", paper, mode="offline_to_online")
    assert (o2o.steps, o2o.online_steps, o2o.eval_every, o2o.report_steps) == (1_000_000, 1_000_000, 100_000,
                                                                               (2_000_000,))
    ci = reproduce.schedule("cube-double-play-singletask-v0", scales.get("ci"), mode="offline_to_online")
    assert (ci.steps, ci.online_steps, ci.total_steps) == (5_000, 5_000, 10_000)


def test_d4rl_rows_are_labelled_minari_with_normalized_scores(tmp_path):
    path = tmp_path / "results.csv"
    rows = reproduce.run_task("pen-human-v1", "fql", 2, TINY, str(path), runs_dir=str(tmp_path / "runs"),
                              loader=lambda task: (toy.bandit_dataset(500), BanditEnv, dict(MINARI_SOURCE)),
                              progress=False)
    with open(path, newline="") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) == 2 * 6  # D4RL: every 20% (0, 4, ..., 20), the last one reported
    for r in written:
        assert r["data_source"] == "minari" and r["minari_id"].startswith("D4RL/pen/human-v2") and r["mode"] == "offline"
        assert float(r["normalized_score"]) == pytest.approx(100 * float(r["return"]) / 2.0)
        assert "ref_min_score" not in r and r["termination"] == "stored" and r["score_caveat"] == CAVEAT
    table = reproduce.table(["pen-human-v1"], "fql", TINY, str(path)).splitlines()
    line = table[1]
    assert table[-1] == f"note: pen-human-v1: {CAVEAT}", "the caveat is printed under the table"
    scores = [float(r["normalized_score"]) for r in written if r["step"] == "20"]
    assert f"{np.mean(scores):.0f} ± {np.std(scores):.0f}" in line, "adroit reports the normalized score as is"
    assert "minari" in line and line.rstrip().endswith("53 ± 6")


def test_offline_to_online_rows_cover_both_phases_and_a_rerun_skips_them(tmp_path):
    loader, path = OnlineLoader(), tmp_path / "results.csv"

    def run_o2o():
        return reproduce.run_task("antmaze-umaze-v2", "fql", 2, TINY, str(path), steps=10, loader=loader,
                                  runs_dir=str(tmp_path / "runs"), progress=False, mode="offline_to_online")

    rows = run_o2o()
    assert loader.online_steps == 10
    with open(path, newline="") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) == 2 * 21  # 10 offline + 10 online steps, evaluated at every one
    assert {(int(r["seed"]), int(r["step"])) for r in written} == {(s, t) for s in (0, 1) for t in range(21)}
    assert {r["mode"] for r in written} == {"offline_to_online"} and {r["total_steps"] for r in written} == {"20"}
    run_o2o()
    assert loader.calls == 1, "a finished run is not loaded, trained or fine-tuned again"
    line = reproduce.table(["antmaze-umaze-v2"], "fql", TINY, str(path), steps=10,
                           mode="offline_to_online").splitlines()[1]
    assert "->" in line.split("antmaze-umaze-v2")[1] and line.rstrip().endswith("97 ± 2 -> 99 ± 1")
    assert "not run" in reproduce.table(["antmaze-umaze-v2"], "fql", TINY, str(path), steps=10)  # offline: its own


def test_an_older_results_file_gains_the_new_columns_with_its_rows_unchanged(tmp_path):
    path = tmp_path / "old.csv"
    old = reproduce.FIELDS[:reproduce.FIELDS.index("command") + 1]  # before D4RL, offline-to-online, run ids, ...
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, old)
        writer.writeheader()
        writer.writerow({k: f"{k}, with a comma" for k in old})
    with pytest.raises(ValueError, match="older header: call upgrade_results"):
        reproduce.append_row(str(path), {"task": "t", "run_id": "r"})
    assert reproduce.upgrade_results(str(path)) == reproduce.FIELDS[len(old):]
    (row,) = reproduce.read_rows(str(path))
    assert row == {**{k: f"{k}, with a comma" for k in old}, **{k: "" for k in reproduce.FIELDS[len(old):]}}
    assert reproduce.upgrade_results(str(path)) == [] and not os.path.exists(str(path) + ".upgrading")
    reproduce.append_row(str(path), {"task": "t", "run_id": "r"})
    assert [r["run_id"] for r in reproduce.read_rows(str(path))] == ["", "r"]


def test_the_category_table_averages_tasks_within_each_seed_first(tmp_path):
    scale = scales.Scale("ci", hidden_dims=(8,), batch_size=16, offline_steps=10, toy_steps=10, eval_episodes=1,
                         seeds=2)
    tasks = reproduce.suite_tasks("cube-double-play")
    path = str(tmp_path / "results.csv")
    success = {(0, 0): 0.2, (0, 1): 0.6, (1, 0): 0.4, (1, 1): 0.0}  # (task, seed) at every step from 8 on
    for (t, seed), value in success.items():
        for step in range(0, 11):
            reproduce.append_row(path, {"task": tasks[t], "method": "fql", "scale": "ci", "seed": seed, "step": step,
                                        "total_steps": 10, "success": value if step >= 8 else 0.0, "mode": "offline",
                                        "data_source": "regenerated", "command": "test", "run_id": "a"})
    (line,) = [x for x in reproduce.category_table(tasks, "fql", scale, path).splitlines() if x.startswith("cube")]
    # seed 0: (0.2 + 0.4) / 2 = 0.3, seed 1: (0.6 + 0.0) / 2 = 0.3 -> 30 ± 0 (pooling first would give 30 ± 22)
    assert line.split()[1:5] == ["2/5", "2", "30", "±"] and line.split()[5] == "0" and "[30, 30]" in line
    (entry,) = reproduce.categories(tasks, "fql", scale, path).values()
    assert entry["finished"] == tasks[:2] and entry["per_seed"] == pytest.approx({0: 0.3, 1: 0.3})
    assert entry["curve"][0] == [0.0, 0.0] and entry["curve"][10] == pytest.approx([0.3, 0.3])
    reproduce.plot_categories(tasks, "fql", scale, path, str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_the_bootstrap_interval_covers_the_mean_and_narrows_with_agreement():
    from fqlcore import evaluate as ev
    low, high = ev.bootstrap_ci([0.1, 0.5, 0.9, 0.3])
    assert 0.1 <= low < 0.45 < high <= 0.9
    assert ev.bootstrap_ci([0.4, 0.4, 0.4]) == (pytest.approx(0.4), pytest.approx(0.4))
    wide = ev.bootstrap_ci(np.random.default_rng(0).uniform(0, 1, 8))
    narrow = ev.bootstrap_ci(np.random.default_rng(0).uniform(0.45, 0.55, 8))
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 5
    with pytest.raises(ValueError, match="one score per seed"):
        ev.bootstrap_ci([])


def test_pixel_tasks_sample_with_frame_stacking_and_augmentation():
    from fqlcore import data, pixels
    sampler = reproduce.batch_sampler("visual-cube-single-play-singletask-task1-v0")
    assert sampler.func is pixels.sample and sampler.keywords == {"frame_stack": 3, "p_aug": 0.5}
    assert reproduce.batch_sampler(TASKS[0]) is data.sample

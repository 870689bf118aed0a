"""The paper's per-task hyperparameters are reachable by task name and match the reference table."""
import csv
import filecmp
import os

import pytest

from fqlcore import configs, scale

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")


def reference_rows():
    with open(os.path.join(configs.REFERENCE_DIR, "fql_paper_hyperparameters.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_every_row_of_the_table_is_reachable_by_task_name():
    rows = reference_rows()
    assert len(rows) == 98
    for row in rows:
        h = configs.paper_hyperparameters(row["dataset"], row["mode"])
        assert h["alpha"] == float(row["alpha"]) and h["discount"] == float(row["discount"])
        assert h["q_agg"] == row["q_agg"] and h["offline_steps"] == int(row["offline_steps"])
        assert h["online_steps"] == int(row["online_steps"])


def test_paper_config_for_the_default_cube_task():
    config = configs.paper_config("cube-single-play-singletask-task2-v0")
    assert (config.alpha, config.discount, config.q_agg) == (300.0, 0.99, "mean")
    assert config.hidden_dims == (512, 512, 512, 512) and config.flow_steps == 10 and not config.normalize_q_loss
    assert configs.paper_config("antmaze-giant-navigate-singletask-task1-v0").discount == 0.995
    assert configs.paper_config("pen-human-v1").q_agg == "min"
    assert configs.paper_config("door-cloned-v1", mode="offline_to_online").alpha == 1000.0
    assert configs.paper_config("cube-single-play-singletask-task2-v0", hidden_dims=(8,)).hidden_dims == (8,)
    assert configs.paper_config("cube-single-play-singletask-task2-v0").encoder is None
    assert configs.paper_config("visual-cube-single-play-singletask-task1-v0").encoder == "impala_small"


def test_unknown_task_names_suggest_close_ones():
    with pytest.raises(ValueError, match="cube-single-play-singletask-task2-v0"):
        configs.paper_config("cube-single-play-task2-v0")
    with pytest.raises(ValueError, match="mode"):
        configs.paper_config("cube-single-play-singletask-task2-v0", mode="online")


def test_paper_results_are_shipped():
    (row,) = configs.paper_results("cube-single-play-singletask-task2-v0", "FQL")
    assert (row["mean"], row["std"], row["default_task"]) == (97.0, 2.0, True)
    assert len(configs.paper_results(suite="ogbench", method="FQL")) == 50


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="the project's shared/ folder is not beside this checkout")
def test_shipped_tables_are_copies_of_the_shared_reference():
    for name in os.listdir(configs.REFERENCE_DIR):
        assert filecmp.cmp(os.path.join(configs.REFERENCE_DIR, name), os.path.join(SHARED, name), shallow=False), name


def test_scale_switch(monkeypatch):
    monkeypatch.setenv("FQL_SCALE", "paper")
    assert scale.current().hidden_dims == (512, 512, 512, 512)
    monkeypatch.setenv("FQL_SCALE", "laptop")
    with pytest.raises(ValueError, match="FQL_SCALE=ci"):
        scale.current()


# Copied by hand from the paper's Table 6 (offline), Table 7 (offline-to-online) and Appendix E.2 (IQL's 4 x 256 on
# state-based manipulation); discounts are FQL's for the task (Table 5).
PAPER_BASELINE_VALUES = [
    ("iql", "cube-double-play-singletask-task2-v0", "offline",
     {"alpha": 0.3, "expectile": 0.9, "hidden_dims": (256,) * 4, "discount": 0.99}),
    ("iql", "puzzle-4x4-play-singletask-task1-v0", "offline", {"alpha": 3.0, "hidden_dims": (256,) * 4}),
    ("iql", "humanoidmaze-large-navigate-singletask-task1-v0", "offline",
     {"alpha": 10.0, "hidden_dims": (512,) * 4, "discount": 0.995}),
    ("iql", "antsoccer-arena-navigate-singletask-v0", "offline_to_online", {"alpha": 1.0, "discount": 0.995}),
    ("rebrac", "antmaze-giant-navigate-singletask-task1-v0", "offline",
     {"alpha_actor": 0.003, "alpha_critic": 0.01, "discount": 0.995, "hidden_dims": (512,) * 4}),
    ("rebrac", "cube-single-play-singletask-task2-v0", "offline", {"alpha_actor": 1.0, "alpha_critic": 0.0}),
    ("rebrac", "scene-play-singletask-v0", "offline_to_online", {"alpha_actor": 0.1, "alpha_critic": 0.01}),
    ("fawac", "pen-human-v1", "offline", {"alpha": 0.03, "discount": 0.99}),
    ("fawac", "antmaze-large-navigate-singletask-task3-v0", "offline", {"alpha": 3.0}),
    ("fbrac", "relocate-cloned-v1", "offline", {"alpha": 3000.0, "q_agg": "min"}),
    ("fbrac", "antmaze-large-navigate-singletask-task1-v0", "offline", {"alpha": 3.0, "q_agg": "min"}),
    ("fbrac", "puzzle-4x4-play-singletask-task4-v0", "offline", {"alpha": 300.0, "q_agg": "mean"}),
    ("ifql", "door-cloned-v1", "offline", {"num_samples": 128}),
    ("ifql", "antsoccer-arena-navigate-singletask-v0", "offline_to_online", {"num_samples": 64, "discount": 0.995}),
    ("ifql", "pen-cloned-v1", "offline_to_online", {"num_samples": 128}),
]


@pytest.mark.parametrize("method, task, mode, expected", PAPER_BASELINE_VALUES)
def test_baselines_get_the_papers_per_task_values(method, task, mode, expected):
    config = configs.method_config(method, task, mode)
    assert {k: getattr(config, k) for k in expected} == expected


def test_every_per_task_baseline_value_of_the_table_is_used():
    """Each (method, environment, parameter) row of the shipped table reaches some task's config, with its value."""
    with open(os.path.join(configs.REFERENCE_DIR, "fql_paper_baseline_hyperparameters.csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["parameter"] in configs.BASELINE_FIELDS.get(r["method"], {})
                and not r["environment"].startswith(("visual-", "o2o-visual-"))]  # no image encoder for baselines
    assert len(rows) == 138
    methods = {v: k for k, v in configs.PAPER_NAMES.items()}
    reached = set()
    for mode in configs.MODES:
        for task in configs.tasks(mode):
            for name, fields in configs.BASELINE_FIELDS.items():
                try:
                    config = configs.method_config(methods[name], task, mode)
                except ValueError:
                    continue
                key = ("o2o-" if mode == "offline_to_online" else "") + configs.environment(task)
                reached |= {(name, key, p, float(getattr(config, f))) for p, f in fields.items()}
    missing = [r for r in rows if (r["method"], r["environment"], r["parameter"], float(r["value"])) not in reached]
    assert not missing, missing[:5]


@pytest.mark.parametrize("method", ["iql", "rebrac", "fawac", "fbrac", "ifql"])
def test_a_baseline_without_a_published_value_raises(method):
    with pytest.raises(ValueError, match="antsoccer rows are missing"):
        configs.method_config(method, "antsoccer-arena-navigate-singletask-task4-v0")
    with pytest.raises(ValueError, match="no image encoder"):
        configs.method_config(method, "visual-cube-single-play-singletask-task1-v0")
    assert configs.method_config("fql", "antsoccer-arena-navigate-singletask-task4-v0").alpha == 10.0
    if method in ("iql", "rebrac"):  # the paper reports their D4RL numbers from earlier work
        with pytest.raises(ValueError, match="gives no"):
            configs.method_config(method, "pen-human-v1")


def test_network_sizes_follow_the_scale_below_the_paper_scale():
    from fqlcore import agents, reproduce
    manipulation, maze = "cube-double-play-singletask-task2-v0", "antmaze-large-navigate-singletask-task1-v0"
    for name in ("ci", "cpu-hour"):  # the same network for every method: the comparison needs it
        s = scale.get(name)
        assert {reproduce.agent_config(m, manipulation, s).hidden_dims for m in agents.AGENTS} == {s.hidden_dims}
    paper = scale.get("paper")
    assert reproduce.agent_config("iql", manipulation, paper).hidden_dims == (256,) * 4
    assert reproduce.agent_config("iql", maze, paper).hidden_dims == (512,) * 4
    assert {reproduce.agent_config(m, manipulation, paper).hidden_dims for m in agents.AGENTS if m != "iql"} == \
        {(512,) * 4}
    assert reproduce.agent_config("rebrac", manipulation, scale.get("ci")).alpha_actor == 0.1


def test_describe_gives_the_hyperparameters_of_a_run_in_one_short_string():
    from fqlcore.agents import fql, rebrac
    assert configs.describe(configs.paper_config("cube-single-play-singletask-task2-v0")) == \
        "alpha=300;discount=0.99;q_agg=mean"
    assert configs.describe(configs.method_config("iql", "cube-double-play-singletask-task2-v0")) == \
        "alpha=0.3;expectile=0.9;hidden_dims=256x256x256x256;discount=0.99"
    assert configs.describe(rebrac.Config(alpha_actor=0.003, alpha_critic=0.01, discount=0.995)) == \
        "alpha_actor=0.003;alpha_critic=0.01;discount=0.995"
    assert configs.describe(fql.Config(hidden_dims=(64, 64), normalize_q_loss=True)) == \
        "alpha=10;hidden_dims=64x64;discount=0.99;q_agg=mean;normalize_q_loss=True"

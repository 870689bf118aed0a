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

"""The throughput benchmark runs end to end, and its interleaved timing measures what each loop does."""
import csv
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import throughput  # noqa: E402

from fqlcore import reproduce  # noqa: E402


def test_interleaved_rates_time_every_loop_in_every_round():
    order = []

    def sleeper(name, seconds):
        def fn():
            order.append(name)
            time.sleep(seconds)
        return fn

    loops = {"slow": (sleeper("slow", 0.02), 1.0), "fast": (sleeper("fast", 0.005), 10.0)}
    rates = throughput.interleaved_rates(loops, min_seconds=0.05, min_rounds=3)
    assert len(rates["slow"]) == len(rates["fast"]) >= 3
    assert order[:2] == ["slow", "fast"]  # a warm-up call each, then rounds in turn
    assert order[2:] == ["slow", "fast"] * len(rates["slow"])
    # A sleep is never shorter than asked (the upper bounds), and on a busy machine it can run long (loose lower ones).
    assert 5 < rates["slow"].min() <= rates["slow"].max() <= 50  # 1 unit per >= 20 ms
    assert 100 < rates["fast"].min() <= rates["fast"].max() <= 2000  # 10 units per >= 5 ms


def test_the_benchmark_runs_and_appends_rows_with_provenance(tmp_path):
    out = tmp_path / "throughput.csv"
    args = ["--seconds", "0.05", "--seeds", "1,2", "--chunk", "5", "--hidden", "16,16", "--csv", str(out)]
    run = subprocess.run([sys.executable, os.path.join("benchmarks", "throughput.py")] + args, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "at the update's shapes" in run.stdout
    # Each loop's line ends with the predicted hours of a paper-scale row, from its own per-seed rate.
    table = {line[:48].strip(): line[48:].split() for line in run.stdout.splitlines()}
    for name, seeds in (("fqlcore scan, 1 seed", 1), ("fqlcore scan, 2 vmapped seeds", 2)):
        per_seed, hours = float(table[name][0]), float(table[name][-1])
        assert hours == pytest.approx(reproduce.training_hours(per_seed, seeds), rel=0.02)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["loop"] for r in rows] == ["host loop (paper-style), 1 seed", "fqlcore scan, 1 seed",
                                         "fqlcore scan, 2 vmapped seeds"]
    for r in rows:
        assert r["hidden_dims"] == "16x16" and r["command"].endswith("benchmarks/throughput.py " + " ".join(args))
        assert float(r["updates_per_s_per_seed"]) > 0 and float(r["gflop_per_update"]) > 0
    multi = rows[2]
    assert float(multi["updates_per_s_total"]) == pytest.approx(2 * float(multi["updates_per_s_per_seed"]), rel=0.01)
    # A CSV with other columns is refused rather than appended to under a shifted header.
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    run = subprocess.run([sys.executable, os.path.join("benchmarks", "throughput.py"), "--seconds", "0.01",
                          "--chunk", "2", "--hidden", "8", "--seeds", "1", "--csv", str(other)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "write these rows to another file" in run.stderr
    assert other.read_text() == "a,b\n1,2\n"


def test_a_paper_row_runs_as_many_programs_as_eight_seeds_need():  # reproduce.training_hours
    # 8 seeds x 1M updates: 1 seed a program needs 8 programs, 4 need 2, 8 or more need one.
    assert reproduce.training_hours(1000.0, 1) == pytest.approx(8 * 1e6 / 1000 / 3600)
    assert reproduce.training_hours(1000.0, 4) == pytest.approx(2 * 1e6 / 1000 / 3600)
    assert reproduce.training_hours(1000.0, 3) == pytest.approx(3 * 1e6 / 1000 / 3600)
    assert reproduce.training_hours(1000.0, 32) == pytest.approx(1e6 / 1000 / 3600)


@pytest.mark.parametrize("flag,value,expected", [("--seeds", "1,0", "positive whole numbers"),
                                                 ("--chunk", "ten", "positive whole numbers"),
                                                 ("--precision", "fp8", "unknown matmul precision")])
def test_a_bad_sweep_is_refused_in_one_line(flag, value, expected):
    run = subprocess.run([sys.executable, os.path.join("benchmarks", "throughput.py"), flag, value], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and expected in run.stderr and "Traceback" not in run.stderr


def test_the_cost_breakdown_prices_every_piece():
    run = subprocess.run([sys.executable, os.path.join("benchmarks", "update_costs.py"), "--seconds", "0.05",
                          "--chunk", "2", "--hidden", "32,32"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = {line[:32].strip(): line[32:].split() for line in run.stdout.splitlines()}
    gflop = {name: float(lines[name][0]) for name in ("the update (paper)", "GELU -> identity",
                                                      "1 Euler step instead of 10")}
    # Each variant was traced under its own change: fewer flow steps and no GELU both mean fewer FLOPs.
    assert gflop["1 Euler step instead of 10"] < gflop["the update (paper)"]
    assert gflop["GELU -> identity"] < gflop["the update (paper)"]
    assert "Adam -> SGD" in lines and "without the critic's LayerNorm" in lines

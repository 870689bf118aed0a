"""The paper-row entry point runs end to end at CI scale: install, data, training, rows and a timing breakdown."""
import csv
import os
import subprocess

ROOT = os.path.join(os.path.dirname(__file__), "..")
TASK = "cube-single-play-singletask-task2-v0"


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_paper_row_script_installs_generates_trains_and_times_each_step(tmp_path):
    out, regen = tmp_path / "out", tmp_path / "regen"
    env = {**os.environ, "FQL_SCALE": "ci", "FQL_REGEN_DIR": str(regen), "JAX": "cpu"}
    command = ["bash", "benchmarks/paper_row.sh", "--out", str(out), "--steps", "20", "--seeds", "2",
               "--episodes", "2", "--eval-episodes", "2", "--workers", "2", "--runs", str(tmp_path / "runs")]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    rows = read(out / "reproduce.csv")
    assert {(int(r["seed"]), int(r["step"])) for r in rows} == {(s, t) for s in (0, 1) for t in range(0, 21, 2)}
    assert {r["data_source"] for r in rows} == {"regenerated"} and {r["scale"] for r in rows} == {"ci"}
    [timing] = read(out / "paper_row_timing.csv")
    seconds = {k[:-2]: float(v) for k, v in timing.items() if k.endswith("_s")}
    assert set(seconds) == {"setup", "data", "load", "compile", "train", "evaluate", "total"}
    assert all(v >= 0 for v in seconds.values()) and seconds["data"] > 0 and seconds["compile"] > 0
    assert seconds["compile"] <= seconds["train"] and seconds["evaluate"] <= seconds["train"]
    assert abs(seconds["total"] - sum(seconds[k] for k in ("setup", "data", "load", "train"))) < 0.5
    assert timing["background_eval"] == "False" and timing["seeds"] == "2" and timing["steps"] == "20"
    assert "seconds: setup" in run.stdout and "regenerated" in run.stdout
    # Run again: the data is there and every evaluation is in the CSV, so nothing is generated or trained again.
    manifest = regen / "cube-single-play-v0" / "manifest.json"
    written = manifest.stat().st_mtime_ns
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert manifest.stat().st_mtime_ns == written and len(read(out / "reproduce.csv")) == len(rows)
    assert len(read(out / "paper_row_timing.csv")) == 2


def test_a_bad_task_is_refused_in_one_line(tmp_path):
    run = subprocess.run([".venv/bin/python", "benchmarks/paper_row.py", "--task", "cube-single-play-v0", "--out",
                          str(tmp_path), "--scale", "ci"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "Traceback" not in run.stderr and run.stderr.strip().count("\n") == 0, run.stderr
    assert not (tmp_path / "reproduce.csv").exists()

"""Nothing lost, nothing silently wrong: torn CSV rows, two writers, resuming another run, bad datasets and bad
command lines. Each test reproduces a fault that once lost data or gave a wrong result without a word."""
import ast
import errno
import glob
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fqlcore import __main__ as cli
from fqlcore import data, provenance, reproduce, runlock, toy, train
from fqlcore.agents import fql

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = fql.Config(hidden_dims=(16, 16), alpha=1.0)


@pytest.fixture(scope="module")
def dataset():
    return toy.bandit_dataset(2_000, seed=1)


# ---------------------------------------------------------------------------------------------------------------
# 1. No chapter asserts on a timer
# ---------------------------------------------------------------------------------------------------------------

TIMERS = {"perf_counter", "time", "monotonic", "process_time", "perf_counter_ns", "time_ns", "timeit", "default_timer"}


def _names(node) -> set:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _reads_timer(node) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr in TIMERS and isinstance(n.value, ast.Name)
               and n.value.id in ("time", "timeit") for n in ast.walk(node))


def _base(target) -> set:
    while isinstance(target, (ast.Subscript, ast.Attribute, ast.Starred)):
        target = target.value
    return _names(target)


def timer_asserts(sources: list[str]) -> list[str]:
    """The asserts (statements or np.testing calls) of a notebook's code cells that read a timer, directly or through
    a name or function whose value came from one. Statements are followed in order, as the notebook runs them: a name
    is tainted by an assignment from a timer-derived value and cleared by an assignment from anything else."""
    tainted, functions, found = set(), set(), []

    def reads(node):
        return _reads_timer(node) or bool(_names(node) & (tainted | functions))

    def assign(targets, value_reads):
        for target in targets:
            if value_reads:
                tainted.update(_base(target))
            elif isinstance(target, (ast.Name, ast.Tuple, ast.List)):
                tainted.difference_update(_names(target))  # a fresh value: no longer timer-derived

    def run(statements):
        for node in statements:
            for inner in ast.walk(node):  # asserts anywhere in this statement, before its own assignments count
                is_assert = isinstance(inner, ast.Assert) or (
                    isinstance(inner, ast.Call) and ast.unparse(inner.func).split(".")[-1].startswith("assert"))
                if is_assert and reads(inner):
                    found.append(ast.unparse(inner)[:120])
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if reads(node):
                    functions.add(node.name)
            elif isinstance(node, ast.Assign):
                if isinstance(node.value, ast.Lambda) and reads(node.value):
                    functions.update(t.id for t in node.targets if isinstance(t, ast.Name))
                assign(node.targets, reads(node.value))
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
                if reads(node.value):
                    tainted.update(_base(node.target))
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                for _ in range(2):  # twice: a value carried from one iteration to the next
                    assign([node.target], reads(node.iter))
                    run(node.body)
                run(node.orelse)
            elif isinstance(node, (ast.While, ast.If, ast.With, ast.Try)):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    run([n for n in getattr(node, block, []) if isinstance(n, ast.stmt)] +
                        [s for h in getattr(node, block, []) if isinstance(h, ast.ExceptHandler) for s in h.body])
            elif (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                  and isinstance(node.value.func, ast.Attribute)
                  and node.value.func.attr in ("append", "extend", "update", "insert", "setdefault")
                  and any(reads(a) for a in node.value.args)):
                tainted.update(_base(node.value.func.value))

    for source in sources:
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        run(ast.parse("\n".join(lines)).body)
    return list(dict.fromkeys(found))


def _code_cells(path):
    with open(path) as f:
        return ["".join(c["source"]) for c in json.load(f)["cells"] if c["cell_type"] == "code"]


def test_the_timer_scan_catches_a_timed_assert():
    cells = ["import time\nstart = time.perf_counter()\nx = 1\nseconds = [time.perf_counter() - start]",
             "def best(fn):\n    t = time.perf_counter()\n    fn()\n    return time.perf_counter() - t",
             "ratio = {k: best(f) for k, f in {}.items()}\nflops = 3.0",
             "assert flops > 2\nassert ratio['a'] > 2\nnp.testing.assert_array_less(1, seconds[0])"]
    assert timer_asserts(cells) == ["assert ratio['a'] > 2", "np.testing.assert_array_less(1, seconds[0])"]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "book", "*.ipynb"))), ids=os.path.basename)
def test_no_chapter_asserts_on_a_timer(path):
    assert timer_asserts(_code_cells(path)) == [], "assert on counts (fqlcore.cost.flops), never on seconds"


# ---------------------------------------------------------------------------------------------------------------
# 2. Data loss
# ---------------------------------------------------------------------------------------------------------------

def _row(seed=0, step=0):
    return {"task": "t", "method": "fql", "scale": "ci", "seed": seed, "step": step, "total_steps": 10, "success": 0.5,
            "return": 1.0, "length": 3.0, "episodes": 2, "data_source": "toy", "command": "x", "mode": "offline"}


def test_appending_to_a_torn_results_file_is_refused_and_damages_nothing(tmp_path):
    path = str(tmp_path / "r.csv")
    reproduce.append_row(path, _row(step=0))
    with open(path, "a") as f:
        f.write("t,fql,ci,0,5,10,0.")  # a row torn by a crash: no newline
    before = open(path, "rb").read()
    with pytest.raises(ValueError, match="torn row"):
        reproduce.append_row(path, _row(step=10))
    assert open(path, "rb").read() == before
    with open(path, "rb+") as f:  # the fix the message gives: delete the torn line
        f.truncate(before.rindex(b"\n") + 1)
    reproduce.append_row(path, _row(step=10))
    rows = reproduce.read_rows(path)
    assert [r["step"] for r in rows] == ["0", "10"] and all(r["mode"] == "offline" for r in rows)


def test_a_short_write_is_undone(tmp_path, monkeypatch):
    path = str(tmp_path / "r.csv")
    reproduce.append_row(path, _row(step=0))
    before = open(path, "rb").read()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, b: real_write(fd, b[: len(b) // 2]))  # the disk fills mid-row
    with pytest.raises(OSError, match="disk full"):
        reproduce.append_row(path, _row(step=10))
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    reproduce.append_row(path, _row(step=10))
    assert [r["step"] for r in reproduce.read_rows(path)] == ["0", "10"]


def test_a_results_file_with_other_columns_is_refused_before_any_work(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("a,b\n1,2\n")
    code = cli.main(["reproduce", "--suite", "cube-single-play-singletask-task2-v0", "--results", str(path)])
    assert code == 2 and path.read_text() == "a,b\n1,2\n"


def _write_many(path, seed, count):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        data.write_npz(path, {"x": rng.normal(size=200_000).astype(np.float32), "seed": np.array(seed)})


def test_two_writers_of_one_file_never_leave_a_corrupt_one(tmp_path):
    path = str(tmp_path / "checkpoint.npz")
    _write_many(path, 0, 1)
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_write_many, args=(path, seed, 40)) for seed in (1, 2)]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers) or reads < 20:
        arrays = data.read_npz(path, "checkpoint", "")  # raises on a corrupt file
        assert arrays["x"].shape == (200_000,)
        reads += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert not [f for f in os.listdir(tmp_path) if f != "checkpoint.npz"], "temporary files left behind"


def test_a_directory_in_use_is_refused_and_a_stale_lock_is_taken_over(dataset, tmp_path):
    out = str(tmp_path / "run")
    with runlock.hold(out):
        with pytest.raises(ValueError, match=f"in use by process {os.getpid()}"):
            train.train(fql, SMALL, dataset, 10, batch_size=32, chunk_size=10, checkpoint_dir=out, progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(os.path.join(out, runlock.LOCK), "w") as f:  # left by a process that is gone (kill -9)
        json.dump({"pid": dead.pid, "host": __import__("socket").gethostname(), "command": "x"}, f)
    train.train(fql, SMALL, dataset, 10, batch_size=32, chunk_size=10, checkpoint_dir=out, progress=False)
    assert not os.path.exists(os.path.join(out, runlock.LOCK))


def test_a_checkpoint_names_the_results_file_that_owns_it(dataset, tmp_path):
    out = str(tmp_path / "run")
    kwargs = dict(batch_size=32, chunk_size=10, checkpoint_dir=out, progress=False)
    train.train(fql, SMALL, dataset, 10, run_info={"results": "/a.csv"}, **kwargs)
    with pytest.raises(ValueError, match="its results is '/a.csv', this run's is '/b.csv'"):
        train.train(fql, SMALL, dataset, 10, run_info={"results": "/b.csv"}, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# 3. Silently wrong results
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["train", "--dataset", "toy-bandit", "--steps", "0"],
    ["train", "--dataset", "toy-bandit", "--steps", "-5"],
    ["train", "--dataset", "toy-bandit", "--seeds", "0"],
    ["train", "--dataset", "toy-bandit", "--eval-episodes", "0"],
    ["train", "--dataset", "toy-bandit", "--eval-every", "-1"],
    ["train", "--dataset", "toy-bandit", "--chunk", "0"],
    ["train", "--dataset", "toy-bandit", "--alpha", "-1"],
    ["train", "--dataset", "toy-bandit", "--alpha", "nan"],
    ["train", "--dataset", "toy-bandit", "--alpha", "inf"],
    ["train", "--dataset", "toy-bandit", "--seed", str(2 ** 40)],
    ["train", "--dataset", "toy-bandit", "--seed", "-1"],
    ["reproduce", "--suite", "cube-single-play", "--seeds", "0"],
    ["reproduce", "--suite", "cube-single-play", "--eval-episodes", "0"],
    ["reproduce", "--suite", "cube-single-play", "--steps", "0"],
    ["generate-data", "--dataset", "cube-single-play-v0", "--episodes", "0"],
    ["generate-data", "--dataset", "cube-single-play-v0", "--workers", "0"],
    ["train", "--dataset", "toy-bandit", "--steps", str(10 ** 23)],  # would overflow the int32 step counter
    ["train", "--dataset", "toy-bandit", "--seeds", str(10 ** 8)],  # would exhaust memory after minutes
    ["train", "--dataset", "toy-bandit", "--alpha", "-inf"],  # argparse would read "-inf" as an option
    ["reproduce", "--suite", "cube-single-play", "--eval-episodes", str(10 ** 13)],
    ["generate-data", "--dataset", "cube-single-play-v0", "--episodes", str(10 ** 9)],
])
def test_zero_negative_and_huge_values_are_errors_not_defaults(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and "error: argument" in capsys.readouterr().err


def test_run_task_refuses_zero_seeds_and_episodes(tmp_path):
    from fqlcore import scale
    for kwargs in ({"eval_episodes": 0}, {}):
        with pytest.raises(ValueError, match="at least 1"):
            reproduce.run_task("cube-single-play-singletask-task2-v0", "fql", 0 if not kwargs else 1,
                               scale.get("ci"), str(tmp_path / "r.csv"), **kwargs)


@pytest.mark.parametrize("change, field", [({"seed": 1}, "seed"), ({"batch_size": 16}, "batch_size"),
                                           ({"steps": 10}, "steps"), ("dataset", "dataset")])
def test_resuming_another_run_is_refused_naming_the_field(dataset, tmp_path, change, field):
    out = str(tmp_path / "run")
    kwargs = dict(steps=20, seed=0, batch_size=32, chunk_size=10, checkpoint_dir=out, progress=False)
    train.train(fql, SMALL, dataset, **kwargs)
    other = dataset
    if change == "dataset":  # the same shape, other numbers
        other = dataset.replace(rewards=dataset.rewards + 1.0)
    else:
        kwargs.update(change)
    with pytest.raises(ValueError, match=f"its {field} is"):
        train.train(fql, SMALL, other, **kwargs)


def test_another_config_is_refused_in_one_line_naming_the_field(dataset, tmp_path):
    out = str(tmp_path / "run")
    kwargs = dict(batch_size=32, chunk_size=10, checkpoint_dir=out, progress=False)
    train.train(fql, SMALL, dataset, 10, **kwargs)
    with pytest.raises(ValueError, match=r"another config \(alpha is 1.0 there, 3.0 here\)") as e:
        train.train(fql, fql.Config(hidden_dims=(16, 16), alpha=3.0), dataset, 10, **kwargs)
    assert "\n" not in str(e.value)


def test_a_checkpoint_with_bad_metadata_gets_a_clear_error(dataset, tmp_path):
    out = str(tmp_path / "run")
    train.train(fql, SMALL, dataset, 10, batch_size=32, chunk_size=10, checkpoint_dir=out, progress=False)
    path = os.path.join(out, train.CHECKPOINT)
    arrays = data.read_npz(path, "checkpoint", "")
    arrays["meta"] = np.array(json.dumps({"step": 10}))  # an older or damaged checkpoint
    data.write_npz(path, arrays)
    with pytest.raises(ValueError, match="missing or unreadable metadata"):
        train.train(fql, SMALL, dataset, 10, batch_size=32, chunk_size=10, checkpoint_dir=out, progress=False)


def _fields(n=8, **bad):
    rng = np.random.default_rng(0)
    fields = dict(observations=rng.normal(size=(n, 3)), actions=rng.uniform(-1, 1, (n, 2)), rewards=rng.normal(size=n),
                  next_observations=rng.normal(size=(n, 3)), masks=np.ones(n))
    fields.update(bad)
    return fields


@pytest.mark.parametrize("bad, message", [
    ({"observations": np.full((8, 3), np.nan)}, "observations contains 24 NaN or inf"),
    ({"next_observations": np.full((8, 3), np.inf)}, "next_observations contains 24 NaN or inf"),
    ({"rewards": np.array([0, 1, np.inf, 0, 0, 0, 0, 0.0])}, "rewards contains 1 NaN or inf"),
    ({"actions": np.full((8, 2), np.nan)}, "actions contains 16 NaN or inf"),
    ({"masks": np.full(8, 0.5)}, "masks must be 0 or 1"),
    ({"terminals": np.full(8, 2.0)}, "terminals must be 0 or 1"),
    ({"rewards": np.ones(8, complex)}, "rewards has dtype complex128"),
    ({"observations": np.array([["a"] * 3] * 8)}, "observations has dtype <U1"),
    ({"observations": np.zeros(8), "next_observations": np.zeros(8)}, "reshape 1-D observations"),
    ({"observations": np.zeros((8, 3), np.uint8), "next_observations": np.zeros((8, 3), np.uint8)},
     "uint8 is read as pixels"),
    ({"rewards": np.zeros(7)}, "rewards has shape"),
])
def test_every_field_is_validated_at_load(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        data.from_arrays(**_fields(**bad))


def test_files_that_are_not_npz_archives_are_named_as_such(tmp_path):
    text, npy, pickled = tmp_path / "text.npz", tmp_path / "array.npz", tmp_path / "pickled.npz"
    text.write_text("observations,actions\n1,2\n")
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    np.savez(pickled, **{**_fields(), "rewards": np.array([object()] * 8)})
    for path, message in ((text, "is not an .npz file"), (npy, "is not an .npz file"), (pickled, "object \\(pickled\\)")):
        with pytest.raises(ValueError, match=message) as e:
            data.load_npz(str(path))
        assert "allow_pickle" not in str(e.value)


def test_real_valued_observations_of_two_float_types_are_accepted():
    fields = _fields()
    fields["next_observations"] = fields["next_observations"].astype(np.float64)
    fields["observations"] = fields["observations"].astype(np.float32)
    assert data.from_arrays(**fields).next_observations.dtype == np.float32


def test_a_shard_without_tasks_says_so(capsys):
    assert cli.main(["reproduce", "--suite", "cube-single-play", "--shard", "9/10"]) == 0
    assert "has no task: the suite has 5" in capsys.readouterr().out


def test_clipped_actions_are_reported_with_the_amount():
    actions = np.zeros((8, 2))
    actions[0, 0], actions[3, 1] = 2.5, -1.5
    with pytest.warns(UserWarning, match=r"2 action value\(s\) lie outside \[-1, 1\] \(largest \|a\| = 2.5\)"):
        data.from_arrays(**_fields(actions=actions))


def test_appending_to_a_full_dataset_raises():
    full = data.from_arrays(**_fields())
    transition = {f: np.asarray(getattr(full, f)[0]) for f in data.FIELDS}
    with pytest.raises(ValueError, match="the dataset is full"):
        data.append(full, transition)
    roomy = data.from_arrays(**_fields(), capacity=9)
    assert int(data.append(roomy, transition).size) == 9


def test_train_refuses_a_negative_eval_every(dataset):
    with pytest.raises(ValueError, match="eval_every must be positive"):
        train.train(fql, SMALL, dataset, 10, batch_size=32, eval_every=-1, evaluate=lambda s, i: {}, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# 4. One clear line instead of a traceback
# ---------------------------------------------------------------------------------------------------------------

def _cli(*args, cwd=None):
    env = dict(os.environ, FQL_SCALE="ci", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "fqlcore", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          env=env, timeout=600)


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "toy-bandi"], "did you mean 'toy-bandit'"),
    (["train", "--dataset", "missing.npz"], "no dataset file at 'missing.npz'"),
    (["train", "--dataset", "toy-bandit", "--steps", "5", "--out", "/proc/fql-test"], "cannot create the checkpoint"),
    (["reproduce", "--suite", "cube-single-play-singletask-task2-v0", "--shard", "0/0"], "must be at least 1"),
    (["reproduce", "--suite", "cube-single-play-singletask-task2-v0", "--shard", "-1/2"], "must be one of 0..1"),
    (["reproduce", "--suite", "cube-single-play-singletask-task2-v0", "--results", "/"], "is a directory"),
    (["reproduce", "--suite", "cube-single-play-singletask-task2-v0", "--results", "/proc/x/r.csv"],
     "cannot create the folder of --results"),
    (["reproduce", "--suite", "cube-single-play-singletask-task2-v0", "--steps", "15"], "use a multiple of 10"),
])
def test_bad_command_lines_get_one_line_and_a_nonzero_exit(args, message):
    result = _cli(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_output_path_that_is_a_file_is_refused_before_training(tmp_path):
    out = tmp_path / "out"
    out.write_text("keep me")
    result = _cli("train", "--dataset", "toy-bandit", "--steps", "5", "--out", str(out))
    assert result.returncode == 2 and "is a file" in result.stderr and out.read_text() == "keep me"


def test_a_full_disk_while_checkpointing_keeps_the_old_checkpoint(dataset, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    kwargs = dict(batch_size=32, chunk_size=10, checkpoint_dir=out, progress=False)
    train.train(fql, SMALL, dataset, 10, **kwargs)
    before = open(os.path.join(out, train.CHECKPOINT), "rb").read()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OSError):
        train.train(fql, SMALL, dataset, 20, **dict(kwargs, checkpoint_dir=out + "2"))  # a fresh run cannot write
    monkeypatch.undo()
    assert open(os.path.join(out, train.CHECKPOINT), "rb").read() == before
    assert sorted(os.listdir(out)) == [train.CHECKPOINT]


def test_a_cli_run_killed_with_sigkill_resumes_bitwise_equal(tmp_path):
    """A real ``kill -9`` of ``python -m fqlcore train`` mid-run, then the same command again: it takes over the dead
    process's lock and ends equal, to the bit, to a run never interrupted."""
    common = ["train", "--dataset", "toy-bandit", "--steps", "3000", "--chunk", "100", "--seeds", "2"]
    whole = _cli(*common, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    killed_dir = tmp_path / "killed"
    env = dict(os.environ, FQL_SCALE="ci", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "fqlcore", *common, "--out", str(killed_dir)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed_dir / train.CHECKPOINT
    deadline = time.time() + 600
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert (killed_dir / runlock.LOCK).exists()  # the dead process's lock is still there
    resumed = _cli(*common, "--out", str(killed_dir))
    assert resumed.returncode == 0, resumed.stderr
    a, b = (data.read_npz(str(d / train.CHECKPOINT), "checkpoint", "") for d in (tmp_path / "whole", killed_dir))
    assert sorted(a) == sorted(b)
    for k in a:
        if k != "meta":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert json.loads(str(a["meta"]))["history"] == json.loads(str(b["meta"]))["history"]


def test_results_rows_append_in_one_write_with_the_csv_conventions(tmp_path):
    path = str(tmp_path / "t.csv")
    provenance.append_csv(path, ["a", "b"], [{"a": 1, "b": "x,y"}, {"a": 2, "b": "z"}])
    assert open(path, newline="").read() == 'a,b\r\n1,"x,y"\r\n2,z\r\n'
    with pytest.raises(ValueError, match="has the columns"):
        provenance.append_csv(path, ["a", "c"], [{"a": 3, "c": 4}])

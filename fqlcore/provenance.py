"""Where a result came from: the commit, the device, the date. Every results CSV row carries these, and every row goes
into its CSV through ``append_csv``, which never damages a row already there."""
from __future__ import annotations

import csv
import datetime
import errno
import io
import os
import shlex
import subprocess
import sys


def commit() -> str:
    """The git commit of the code that ran, ``+dirty`` when tracked files differ from it (``FQL_COMMIT`` overrides, for
    copies of the tree without .git). The results files are not code: rows a run appends to them leave it clean."""
    if os.environ.get("FQL_COMMIT"):
        return os.environ["FQL_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)results"], capture_output=True, text=True,
                               cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip()
        return (out.stdout.strip() + ("+dirty" if dirty else "")) if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def device() -> str:
    """The accelerator, or for a CPU its model and the cores this process may use (a CPU figure means little without
    them)."""
    import jax
    d = jax.devices()[0]
    if jax.default_backend() != "cpu":
        return f"{d.device_kind} x{jax.device_count()} ({jax.default_backend()})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{_cpu_model()}, {cores} cores (cpu)"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine() or "cpu"


def versions() -> str:
    """The installed versions of the packages a result depends on (``jax 0.4.38; flax 0.10.4; ...``; absent ones
    left out): a number that moves between two rows of one commit is explained by them."""
    from importlib import metadata
    found = []
    for name in ("jax", "jaxlib", "flax", "optax", "ogbench", "minari", "mujoco", "gymnasium"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return "; ".join(found)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def command() -> str:
    """The command line as it was typed (``python -m fqlcore ...``, not ``__main__.py ...``), with the XLA_FLAGS it
    ran under: they change the compiled program, and so its speed."""
    program = sys.argv[0]
    if os.path.basename(program) == "__main__.py":
        program = f"python -m {os.path.basename(os.path.dirname(os.path.abspath(program)))}"
    elif program.endswith(".py"):
        program = f"python {program}"
    else:
        program = os.path.basename(program)
    flags = os.environ.get("XLA_FLAGS", "").strip()
    return (f"XLA_FLAGS={shlex.quote(flags)} " if flags else "") + " ".join([program] + sys.argv[1:])


def check_csv(path: str, fields: list[str]) -> None:
    """Before any work: a results file must have ``fields`` as its header (appending under another one would shift
    every column) and end with a whole line (a torn last row would swallow the next one)."""
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory: pass a CSV file path")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    if header != list(fields):
        raise ValueError(f"{path!r} has the columns {header}, not {list(fields)}: write these rows to another file")
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.seek(max(0, os.path.getsize(path) - 200))
            last = f.read().rsplit(b"\n", 1)[-1].decode(errors="replace")
            raise ValueError(f"the last line of {path!r} has no newline, so it may be a torn row (a crash or a full disk "
                             f"while writing, or an edit): {last[-80:]!r}. If it is a whole row, end the file with a "
                             "newline; if not, delete that line. Then run again.")


def append_csv(path: str, fields: list[str], rows: list[dict]) -> None:
    """Appends ``rows`` (with a header when the file is new) in one write of whole lines, so a crash leaves all of them
    or none; a short write (a full disk) is undone, leaving the file as it was."""
    check_csv(path, fields)
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    text = io.StringIO()
    writer = csv.DictWriter(text, fields)
    if new:
        writer.writeheader()
    writer.writerows(rows)
    payload = text.getvalue().encode()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        before = os.fstat(fd).st_size
        try:
            written = os.write(fd, payload)
        except OSError:
            written = -1
        if written != len(payload):
            os.ftruncate(fd, before)
            raise OSError(errno.ENOSPC, f"could not append whole rows to {path!r} (disk full?); the file is as it was")
        os.fsync(fd)
    finally:
        os.close(fd)

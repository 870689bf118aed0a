"""Where a result came from: the commit, the device, the date. Every results CSV row carries these."""
from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys


def commit() -> str:
    """The git commit of the code that ran (``FQL_COMMIT`` overrides, for copies of the tree without .git)."""
    if os.environ.get("FQL_COMMIT"):
        return os.environ["FQL_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip()
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

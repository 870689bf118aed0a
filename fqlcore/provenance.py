"""Where a result came from: the commit, the device, the date. Every results CSV row carries these."""
from __future__ import annotations

import datetime
import os
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
    import jax
    d = jax.devices()[0]
    return f"{d.device_kind} x{jax.device_count()} ({jax.default_backend()})"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def command() -> str:
    return " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])

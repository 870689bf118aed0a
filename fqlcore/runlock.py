"""One writer per directory: a run, a reproduction or a data generation holds a lock file while it writes there.

Two processes writing one checkpoint would each resume from, and overwrite, the other's work. The lock file holds the
owner's process id and command; a lock whose process is gone (a crash, ``kill -9``) is stale and is taken over.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys

LOCK = "LOCK"


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # another machine's process: we cannot tell, so assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner(directory) -> dict | None:
    """The lock's contents ({"pid", "host", "command"}) when a live process holds ``directory``, else None."""
    try:
        with open(os.path.join(directory, LOCK)) as f:
            info = json.load(f)
        return info if _alive(int(info["pid"]), str(info["host"])) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def hold(directory, what: str = "directory"):
    """Creates ``directory`` and holds its lock while the block runs; a directory in use by a live process raises a
    ValueError naming that process and its command. Also checks, before any work starts, that the directory can be
    written."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"the {what} {directory!r} is a file, not a directory: pass another path")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the {what} {directory!r} ({e.strerror}): pass a writable path") from None
    path = os.path.join(directory, LOCK)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = owner(directory)
            if other is not None:
                raise ValueError(f"the {what} {directory!r} is in use by process {other['pid']} on {other['host']} "
                                 f"({other['command']}); wait for it to finish, or use another directory") from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # stale: its process is gone
            continue
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise ValueError(f"the {what} {directory!r} is not writable ({e.strerror}): pass a writable path") from None
            raise
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise ValueError(f"could not take the lock {path!r}: another process keeps taking it; try again")
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            with open(path) as f:
                mine = json.load(f).get("pid") == me["pid"]
            if mine:
                os.remove(path)

"""One run at a time per catalog directory.

The mutex is a lock file created with O_CREAT|O_EXCL: the create is atomic on local filesystems and on
NFSv3+ and Lustre, so two runs on two nodes of a cluster cannot both get it. It holds who took it (host,
pid, user, start time, command) so a refusal can say whom to wait for. While held, the file is also
flock()ed where the filesystem supports it: the kernel drops that lock when its process dies, however it
dies, so on the same host a dead holder (or a reused pid) is told apart from a live one. flock is not used
as the mutex itself because on NFS/Lustre it may be node-local. A lock left by a dead run on another host
cannot be checked from here: the refusal says which file to delete once that run is known to be gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lamost_classify.contract import LOCK_FILE

# A lock file still empty after this long was left by a run killed between creating and filling it.
EMPTY_LOCK_GRACE_S = 60.0


class CatalogLocked(Exception):
    """Another live run holds the catalog directory."""


@contextlib.contextmanager
def catalog_lock(catalog_dir: Path, command: str | None = None) -> Iterator[Path]:
    """Hold the exclusive lock on ``catalog_dir`` (which must exist) for the ``with`` block."""
    path = Path(catalog_dir) / LOCK_FILE
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "user": _user(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command or " ".join(sys.argv),
              "token": os.urandom(8).hex()}
    fd = _acquire(path, holder)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if _read(path).get("token") == holder["token"]:
                path.unlink()
        os.close(fd)


def _acquire(path: Path, holder: dict) -> int:
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            found = _read(path)
            if _is_stale(path, found):
                _break(path, found)
                continue
            raise CatalogLocked(_refusal(path, found)) from None
        with contextlib.suppress(OSError):  # flock unsupported here: the O_EXCL file alone is the lock
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps(holder).encode())
        os.fsync(fd)
        return fd
    raise CatalogLocked(f"{path.parent} is being locked and unlocked by other runs: try again in a moment")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_stale(path: Path, found: dict) -> bool:
    if not found:
        try:
            return time.time() - path.stat().st_mtime > EMPTY_LOCK_GRACE_S
        except FileNotFoundError:
            return True
    if found.get("host") != socket.gethostname():
        return False
    return not _pid_alive(int(found.get("pid", -1))) or _flock_free(path)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flock_free(path: Path) -> bool:
    """True when nobody holds the flock on ``path``: its holder died (the kernel released it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # flock not supported here: leave the judgement to the pid check
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _break(path: Path, found: dict) -> None:
    """Remove a dead run's lock file, unless another run replaced it since it was read."""
    aside = path.with_name(f"{path.name}.stale.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read(aside) != found:  # it changed hands in between: put the live one back
        with contextlib.suppress(OSError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


def _refusal(path: Path, found: dict) -> str:
    catalog = path.parent
    if not found:
        return f"{catalog} is being locked by another run right now (lock file {path} is empty): try again shortly"
    who = (f"host {found.get('host')}, pid {found.get('pid')}, user {found.get('user')}, "
           f"since {found.get('since')}")
    same_host = found.get("host") == socket.gethostname()
    what_to_do = ("wait for it to finish or stop it, or use another --output" if same_host else
                  f"wait for it to finish, or use another --output; if that run is gone, delete {path}")
    return f"{catalog} is in use by another run ({who}: {found.get('command')}): {what_to_do}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())

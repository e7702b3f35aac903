"""A run's output directory: held by one process at a time, proven writable, never clobbered,
and stamped with the code's versions (``simulations.run`` and ``simulations.deploy`` alike)."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import IO

from pemn_fl.config import SettingsError

LOCK_FILE = ".pemn-fl.lock"


def lock_out(out: Path) -> IO[str]:
    """Hold ``out`` for this process: a second run on the same directory (at once, even with
    --overwrite or --resume) is refused instead of mixing its files with ours.

    An advisory ``flock`` on ``out/.pemn-fl.lock``: the kernel releases it when the process
    ends however it ends (a SIGKILL leaves no stale lock to clean up). Keep the returned
    file open for as long as the run writes there.
    """
    import fcntl

    handle = (out / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise SettingsError(f"--out {out}: another run ({owner}) is writing there; wait for it "
                            "or choose another directory") from None  # fmt: skip
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def prepare_out(out: Path, overwrite: bool) -> IO[str]:
    """Create ``out``, lock it (``lock_out``) and prove it writable before Ray starts; never
    clobber silently. Returns the lock, held until the process ends."""
    if out.exists() and not out.is_dir():
        raise SettingsError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = lock_out(out)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SettingsError(f"--out {out}: cannot write there ({exc.strerror})") from None
    if any(p.name != LOCK_FILE for p in out.iterdir()) and not overwrite:
        lock.close()
        raise SettingsError(f"--out {out}: already holds files; choose a new directory or "
                            "pass --overwrite")  # fmt: skip
    return lock


def git_commit() -> str:
    """The commit the code ran at (``+dirty`` with uncommitted changes), or ``unknown``."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pemn_fl", "simulations"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("+dirty" if dirty.strip() else "")) if head else "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "pemn-fl-commit": git_commit()}
    for pkg in ("pemn-fl", "flwr", "flwr-datasets", "torch", "numpy", "bitarray", "ray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out

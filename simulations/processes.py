"""The processes a command starts on this machine, stopped by their PIDs however it ends
(``Processes``: their process groups and the helpers Flower starts in sessions of their own,
found through /proc), and what starting them needs: a free loopback port, an executable of
this environment."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pemn_fl.config import SettingsError

HOST = "127.0.0.1"  # loopback only: the processes never listen beyond this machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def executable(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}"
                                   f"{os.environ.get('PATH', '')}")  # fmt: skip
    if found is None:
        raise SettingsError(f"{name} not found: install Flower (pip install -e .) in this "
                            "environment")  # fmt: skip
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first), from /proc; empty where there is none.

    Flower starts helpers in sessions of their own (the SuperLink's ``flower-superexec``,
    and under it ``flwr-serverapp``), out of reach of a signal to the SuperLink's process
    group; they watch their parent's PID and exit some time after it, but a ServerApp
    retrying its last status push can outlive a killed SuperLink by minutes. So the tree
    is collected, by PID, before anything in it is signalled.
    """
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def still_running(pid_file: Path) -> list[int]:
    """PIDs from ``pid_file`` that still run the command recorded for them (a deploy
    command killed with SIGKILL leaves its Flower processes running on the database)."""
    try:
        recorded = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return []
    return [int(r["pid"]) for r in recorded if r.get("cmd") and r["cmd"] in _cmdline(int(r["pid"]))]


class Processes:
    """The processes this command started, stopped by PID however the command ends.

    With ``pid_file``, their PIDs and commands are written there as they start, so that a
    later ``--resume`` can tell whether any of them outlived this command.
    """

    def __init__(self, pid_file: Path | None = None) -> None:
        self.started: list[subprocess.Popen] = []
        self.pid_file = pid_file

    def start(self, cmd: list[str], log: Path, **kwargs: object) -> subprocess.Popen:
        # Its own process group (id = its PID), so that it and what it starts in that group
        # stop together; helpers in other sessions are found by ``descendants``.
        proc = subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)  # type: ignore[call-overload]  # fmt: skip
        self.started.append(proc)
        if self.pid_file is not None:
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.pid_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(
                [{"pid": p.pid, "cmd": " ".join(map(str, p.args[:2]))} for p in self.started]))
            os.replace(tmp, self.pid_file)  # a reader never sees a half-written list
        return proc

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: signal.Signals, tree: list[int]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the group this command created, by its PID
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL ``proc`` and everything under it at once (a machine that dies)."""
        self._signal(proc, signal.SIGKILL, descendants(proc.pid))
        proc.wait()
        self.forget(proc)

    def forget(self, proc: subprocess.Popen) -> None:
        """Drop a process that has exited and been reaped: its PID may be reused by then,
        so it is never signalled again (its helpers, if any, were signalled with it)."""
        with contextlib.suppress(ValueError):
            self.started.remove(proc)

    def stop(self) -> None:
        trees = {proc.pid: descendants(proc.pid) for proc in self.started}
        for proc in reversed(self.started):
            self._signal(proc, signal.SIGTERM, trees[proc.pid])
        deadline = time.monotonic() + 10
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.started:
            self._signal(proc, signal.SIGKILL, trees[proc.pid])  # whatever outlived TERM
            proc.wait()

"""One simulated host: its PID-1 process (:mod:`cluster.testbed.hostinit`) and commands run inside it.

A host's namespaces live as long as its init process. Commands enter them with
``nsenter`` (network, PID, mount and UTS), so a command "on h1" sees h1's
loopback, h1's ``/tmp`` and home, h1's processes only (``ray stop`` there stops
h1's Ray and nothing else) and h1's hostname. Each command gets a clean
environment (nothing leaks from the caller's), plus what the caller passes.
:meth:`Host.kill` is a lost machine: SIGKILL to PID 1 ends every process of the host at once;
:meth:`Host.paused` a machine that stalls: every process stopped for a while, then continued.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

HOME = "/root"
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": HOME, "USER": "root", "LOGNAME": "root", "LANG": "C.UTF-8"}
HOSTINIT = Path(__file__).with_name("hostinit.py")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Before exec: SIGKILL when the bed's process dies, however it dies (``unshare --kill-child`` passes it on)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _stat_field(pid: int, number: int) -> int:
    """Field ``number`` (from 3, the state, on) of ``/proc/<pid>/stat`` as an int, -1 once the process is gone; the
    command name in field 2 may hold spaces, so the later fields are split off after its closing parenthesis."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[number - 3])
    except (OSError, IndexError, ValueError):
        return -1


def _session(pid: int) -> int:
    """The session id of ``pid`` (field 6)."""
    return _stat_field(pid, 6)


def _depth(pid: int) -> int:
    """How many ancestors ``pid`` has below the machine's init (parent ids, field 4); 0 for a process gone."""
    depth, parent = 0, _stat_field(pid, 4)
    while parent > 1 and depth < 4096:
        depth, parent = depth + 1, _stat_field(parent, 4)
    return depth


@contextlib.contextmanager
def paused(pids: Callable[[], Iterable[int]]) -> Iterator[list[int]]:
    """SIGSTOP every process ``pids()`` lists, and again until it lists none not yet stopped (one forked meanwhile);
    yields them; SIGCONT after the block (to those not killed in it). A stopped process runs no code, so whatever it
    has not yet sent (a metric, a result, a task) waits until it is continued.

    Parents are stopped before their children and continued after them. A parent that runs while its child is
    stopped can see the stop (``waitpid`` with ``WUNTRACED``) and act on it: the interactive login shell that
    ``ray submit``'s ssh session runs a driver under reports the job stopped and ends the session.
    """
    held: dict[int, int] = {}  # pid -> its depth when stopped
    try:
        while fresh := set(pids()) - set(held):
            for depth, pid in sorted((_depth(pid), pid) for pid in fresh):
                held[pid] = depth
                _signal(pid, signal.SIGSTOP)
        yield sorted(held)
    finally:
        for pid in sorted(held, key=held.get, reverse=True):
            _signal(pid, signal.SIGCONT)


@dataclass
class Host:
    index: int
    hostname: str
    address: str
    netns: str
    root: Path  # this host's scratch on the machine: tmp/, home/, ssh/, init.log
    process: Optional[subprocess.Popen] = field(default=None, repr=False)

    # ------------------------------------------------------------------ life
    def start(self, spec: dict, timeout_s: float = 30.0) -> None:
        """Start PID 1 (mounts, sshd) and wait until sshd listens on the cluster address, as this start's log says
        (a restarted host appends to the log its earlier starts wrote)."""
        spec_path = self.root / "init.json"
        spec_path.write_text(json.dumps(spec))
        earlier = len(self.log())
        log = open(self.root / "init.log", "ab")
        command = ["ip", "netns", "exec", self.netns, "unshare", "--pid", "--fork", "--mount-proc", "--uts", "--kill-child",
                   sys.executable, str(HOSTINIT), str(spec_path)]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, env=BASE_ENV)
        log.close()
        deadline = time.monotonic() + timeout_s
        while f"Server listening on {self.address} port 22" not in self.log()[earlier:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"host {self.hostname} did not come up (exit {self.process.poll()}):\n{self.log()[earlier:][-2000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        path = self.root / "init.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def init_pid(self) -> int:
        """PID 1 of the host, as the machine sees it (the child of ``unshare``)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        if not children:
            raise RuntimeError(f"host {self.hostname}: no init process")
        return int(children[0])

    def kill(self, timeout_s: float = 30.0) -> None:
        """The machine is lost: SIGKILL to PID 1 takes every process of the host with it; returns once they are gone."""
        if not self.alive:
            return
        doomed = self.pids()
        with contextlib.suppress(ProcessLookupError, RuntimeError, FileNotFoundError):
            os.kill(self.init_pid(), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while any(os.path.exists(f"/proc/{pid}") for pid in doomed) and time.monotonic() < deadline:
            time.sleep(0.05)

    def paused(self) -> contextlib.AbstractContextManager[list[int]]:
        """Every process of the host stopped for the block (:func:`paused`); a host killed inside it stays lost."""
        return paused(self.pids)

    def pids(self) -> list[int]:
        """Every process of this host, by its machine-wide pid."""
        if not self.alive:
            return []
        try:
            mine = os.readlink(f"/proc/{self.init_pid()}/ns/pid")
        except (OSError, RuntimeError):
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/ns/pid") == mine:
                        found.append(int(entry))
        return found

    def session_of(self, pid: int) -> list[int]:
        """Every process of this host in ``pid``'s session: a driver started by ``ray submit`` runs under the login
        shell of its ssh session, which (job control on) ends the session when its job is stopped alone."""
        return [other for other in self.pids() if _session(other) == _session(pid)]

    def find(self, needle: str) -> list[int]:
        """Pids of this host whose command line contains ``needle``."""
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(pid)
        return found

    # ------------------------------------------------------------------ commands
    def command(self, argv: list[str], cwd: str = HOME) -> list[str]:
        """``argv`` inside the host's namespaces, in ``cwd`` as the host sees it."""
        return ["nsenter", f"--target={self.init_pid()}", "--net", "--pid", "--mount", "--uts", "--", "env", f"--chdir={cwd}", *argv]

    def popen(self, argv: list[str], env: Optional[dict[str, str]] = None, cwd: str = HOME, **kwargs) -> subprocess.Popen:
        """Start ``argv`` on the host in its own process group (so it can be stopped as a whole)."""
        return subprocess.Popen(self.command(argv, cwd), env=BASE_ENV | (env or {}), start_new_session=True, **kwargs)

    def run(self, argv: list[str], env: Optional[dict[str, str]] = None, cwd: str = HOME, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(self.command(argv, cwd), env=BASE_ENV | (env or {}), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"on {self.hostname}: {' '.join(argv)} exited {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}")
        return result

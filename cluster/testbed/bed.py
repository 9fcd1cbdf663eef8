"""A bed of N simulated hosts on this machine, and its teardown.

    with TestBed(hosts=3) as bed:              # needs root, ip, unshare, nsenter, sshd
        bed.head.run(["hostname", "-I"])       # 10.213.0.1
        bed.hosts[1].kill()                    # a lost machine

Everything the bed makes carries its random id: the folder
``/var/tmp/gda-testbed-<id>`` (keys, host table, each host's scratch), the bridge
``gda-<id>``, the namespaces ``gda-<id>-hN`` and the veths ``gda<id>hN``. Teardown
kills every host's PID 1 (and so every process on it), deletes the namespaces,
veths and bridge, and removes the folder with the keys; mounts live in the
hosts' mount namespaces and go with them. It runs on normal exit, on an
exception, on Ctrl-C and on SIGTERM; if the bed's process is killed outright
the hosts still die with it (``PR_SET_PDEATHSIG``) and :func:`reap_stale`
removes the network objects and folder of any bed whose owner is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path
from cluster.testbed import net, ssh
from cluster.testbed.host import HOME, Host

STATE_PARENT = Path("/var/tmp")
STATE_GLOB = "gda-testbed-*"
CODE = Path(__file__).resolve().parents[2]  # the checkout: shared read-only with every host
LAUNCHER_KEY = ".ssh/galaxy_da_cluster"  # where the launching host keeps the bed's client key (cluster YAMLs name it)
SHM_MB = 1024


class TestBed:
    """N hosts joined by a bridge; host 0 is the head and the launching machine."""

    __test__ = False  # not a pytest test class

    def __init__(self, hosts: int = 3, code: Path = CODE):
        if os.geteuid() != 0:
            raise PermissionError("the test bed needs root (network namespaces, mounts)")
        self.bed_id = secrets.token_hex(2)
        self.names = net.Names(self.bed_id)
        self.root = STATE_PARENT / f"gda-testbed-{self.bed_id}"
        self.code = Path(code)
        self.hosts = [
            Host(i, f"gda-h{i}", net.address(i), self.names.netns(i), self.root / "hosts" / f"h{i}") for i in range(hosts)
        ]

    @property
    def head(self) -> Host:
        return self.hosts[0]

    @property
    def workers(self) -> list[Host]:
        return self.hosts[1:]

    # ------------------------------------------------------------------ up
    def __enter__(self) -> "TestBed":
        self._previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_exit)
        try:
            self.up()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def up(self) -> None:
        reap_stale()
        self.root.mkdir(mode=0o700, parents=True)
        (self.root / "owner.json").write_text(json.dumps({"pid": os.getpid(), "hosts": len(self.hosts)}))
        client_key = ssh.client_key(self.root / "keys", self.bed_id)
        hosts_file = self.root / "hosts.txt"
        hosts_file.write_text("127.0.0.1 localhost\n" + "".join(f"{h.address} {h.hostname}\n" for h in self.hosts))
        net.create_bridge(self.names)
        for host in self.hosts:
            net.create_host_network(self.names, host.index)
            self._make_scratch(host, client_key)
            self.start(host)

    def _make_scratch(self, host: Host, client_key: Path) -> None:
        for folder in ("tmp", "home"):
            (host.root / folder).mkdir(parents=True)
        (host.root / "tmp").chmod(0o1777)
        ssh.host_ssh_dir(host.root / "ssh", host.address, (client_key.with_suffix(".pub")).read_text(), self.bed_id)
        if host is self.head:  # the launching machine holds the client key
            key = host.root / "home" / LAUNCHER_KEY
            key.parent.mkdir(mode=0o700)
            shutil.copy(client_key, key)
            key.chmod(0o600)

    def start(self, host: Host) -> None:
        """(Re)start a host's PID 1; its network and scratch are kept."""
        host.start({
            "hostname": host.hostname, "tmp": str(host.root / "tmp"), "home": str(host.root / "home"), "home_mountpoint": HOME,
            "ssh_dir": str(host.root / "ssh"), "hosts_file": str(self.root / "hosts.txt"), "shared_ro": shared_read_only(self.code),
            "bed_root": str(self.root), "shm_mb": SHM_MB,
        })

    # ------------------------------------------------------------------ down
    def __exit__(self, *exc) -> None:
        try:
            problems = self.down()
        finally:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        if problems and exc[0] is None:
            raise RuntimeError(f"test bed {self.bed_id}: teardown left {problems}")

    def down(self) -> list[str]:
        """Kill every host, remove network objects and the folder; what is left (empty when clean)."""
        for host in self.hosts:
            host.kill()
        left = net.remove(self.names, len(self.hosts))
        shutil.rmtree(self.root, ignore_errors=True)
        return left + ([str(self.root)] if self.root.exists() else [])

    def leftovers(self) -> list[str]:
        """Anything of this bed still on the machine: processes, namespaces, links, the folder (keys included)."""
        processes = [f"pid {pid}" for host in self.hosts for pid in host.pids()]
        return processes + net.leftovers(self.names) + ([str(self.root)] if self.root.exists() else [])


def shared_read_only(code: Path) -> list[str]:
    """Folders every host sees read-only: the code, and the base Python of its venv when it is under $HOME (pyenv)."""
    base = Path(sys.base_prefix).resolve()
    return [str(code)] + ([str(base)] if base.is_relative_to(HOME) else [])


def _sigterm_as_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def reap_stale(parent: Path = STATE_PARENT) -> list[str]:
    """Remove beds whose owning process is gone (killed with SIGKILL); the ids removed."""
    reaped = []
    for folder in parent.glob(STATE_GLOB):
        with contextlib.suppress(OSError, ValueError, KeyError):
            owner = json.loads((folder / "owner.json").read_text())
            if _owner_alive(owner["pid"]):
                continue
            bed_id = folder.name.rsplit("-", 1)[1]
            net.remove(net.Names(bed_id), owner["hosts"])
            shutil.rmtree(folder, ignore_errors=True)
            reaped.append(bed_id)
    return reaped


"""PID 1 of one simulated host: private mounts, loopback, hostname, an sshd, and zombie reaping.

Started by :class:`cluster.testbed.host.Host` as
``ip netns exec NS unshare --pid --fork --mount-proc --uts --kill-child python hostinit.py SPEC``,
so it already runs in the host's own network, PID, mount and UTS namespaces. It
then makes the host's storage private before anything else starts:

- ``/tmp``, ``$HOME`` (``/root``) -> this host's scratch folders (Ray's session files, ``~/.ray``,
  ``~/.bashrc``, ``~/ray_bootstrap_config.yaml`` are per host, as on real machines);
- ``/run`` and ``/dev/shm`` -> fresh tmpfs (sshd's privilege-separation folder, Ray's plasma store);
- ``/etc/hosts`` -> the bed's host table (hostnames resolve to cluster addresses);
- the code folder (and the Python its venv was made from) -> read-only: what every host
  shares, as the on-premise YAML assumes (the same checkout and venv at the same path);
- the bed's state folder -> an empty tmpfs, so no host sees another host's scratch.

Then it starts ``sshd -D`` and reaps every orphan (Ray daemonises; an orphan's
parent is this process). When it exits, the kernel kills every process of the
host's PID namespace, and the mount namespace (all the mounts above) goes with them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def private_storage(spec: dict) -> None:
    mount("--make-rprivate", "/")
    ssh_dir = "/run/gda-ssh"
    staged = {name: open(os.path.join(spec["ssh_dir"], name), "rb").read() for name in os.listdir(spec["ssh_dir"])}
    # Hold the shared folders open: some (pyenv's Python) live under $HOME, which is about to be covered.
    shared = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in spec["shared_ro"]}
    mount("--bind", spec["tmp"], "/tmp")
    mount("--bind", spec["home"], spec["home_mountpoint"])
    mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run")
    mount("-t", "tmpfs", "-o", f"size={spec['shm_mb']}m", "tmpfs", "/dev/shm")
    mount("--bind", spec["hosts_file"], "/etc/hosts")
    for path, fd in shared.items():
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "--no-canonicalize", "--bind", f"/proc/self/fd/{fd}", path], check=True, pass_fds=[fd])
        mount("-o", "remount,bind,ro", path)
        os.close(fd)
    mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", spec["bed_root"])
    os.makedirs("/run/sshd", mode=0o755)
    os.makedirs(ssh_dir, mode=0o700)
    for name, data in staged.items():
        path = os.path.join(ssh_dir, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
            handle.write(data)


def main(spec_path: str) -> int:
    with open(spec_path) as handle:
        spec = json.load(handle)
    socket.sethostname(spec["hostname"])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    private_storage(spec)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", "/run/gda-ssh/sshd_config"], stdout=sys.stdout, stderr=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("hostinit: ready", flush=True)
    while True:  # reap every child and orphan; leave when sshd goes
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.5)
            continue
        if pid == sshd.pid:
            return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

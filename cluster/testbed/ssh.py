"""Throw-away ssh keys and each host's sshd configuration.

One client key per bed (what ``ray up`` logs in with) and one host key per
host, all made fresh with ``ssh-keygen`` in the bed's folder and removed with
it. sshd listens on the host's cluster address only, takes that key and nothing
else (no passwords, no PAM), and reads its files from the host's private ``/run``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

CLIENT_KEY = "id_ed25519"  # in the bed's keys/ folder; copied to the launching host as ~/.ssh/galaxy_da_cluster
SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey /run/gda-ssh/host_ed25519
AuthorizedKeysFile /run/gda-ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile /run/gda-ssh/sshd.pid
MaxStartups 100
LogLevel INFO
Subsystem sftp internal-sftp
"""


def keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)


def client_key(keys_dir: Path, bed_id: str) -> Path:
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keygen(keys_dir / CLIENT_KEY, f"galaxy-da-testbed-{bed_id}")
    return keys_dir / CLIENT_KEY


def host_ssh_dir(ssh_dir: Path, address: str, client_public_key: str, bed_id: str) -> None:
    """What hostinit copies into the host's ``/run/gda-ssh``: sshd_config, host key, authorized_keys."""
    ssh_dir.mkdir(mode=0o700, parents=True)
    keygen(ssh_dir / "host_ed25519", f"galaxy-da-testbed-{bed_id}-host")
    (ssh_dir / "host_ed25519.pub").unlink()
    (ssh_dir / "authorized_keys").write_text(client_public_key)
    (ssh_dir / "sshd_config").write_text(SSHD_CONFIG.format(address=address))

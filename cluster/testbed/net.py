"""The bed's network: one bridge, and per host a network namespace joined to it by a veth pair.

Every name carries the bed's id (``gda-<id>``, ``gda-<id>-h0``, ``gda<id>h0``: at most 15
characters, the kernel's limit), so a bed never touches an interface or namespace it
did not create, and two beds on one machine do not collide. The bridge has no
address in the machine's own namespace and nothing forwards out of it: traffic
between hosts stays on the bridge, and each host's ``127.0.0.1`` is its own.
Each host gets an on-link default route, so programs that find "their" address by
routing towards an outside address (Ray does) pick the cluster address; nothing
answers there, so nothing leaves.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass

SUBNET = ipaddress.ip_network("10.213.0.0/24")  # private, and unlikely to be in use elsewhere
PREFIX = "gda-"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass(frozen=True)
class Names:
    """Kernel object names of one bed."""

    bed_id: str  # 4 hex digits

    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.bed_id}"

    def netns(self, index: int) -> str:
        return f"{PREFIX}{self.bed_id}-h{index}"

    def veth(self, index: int) -> str:
        return f"gda{self.bed_id}h{index}"


def address(index: int) -> str:
    """Host ``index``'s cluster address: .1 for host 0."""
    return str(SUBNET.network_address + index + 1)


def create_bridge(names: Names) -> None:
    ip("link", "add", names.bridge, "type", "bridge")
    ip("link", "set", names.bridge, "up")


def create_host_network(names: Names, index: int) -> None:
    """Namespace, veth pair (``eth0`` inside), address, loopback, on-link default route."""
    ns, veth = names.netns(index), names.veth(index)
    ip("netns", "add", ns)
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("link", "set", veth, "master", names.bridge, "up")
    ip("-n", ns, "addr", "add", f"{address(index)}/{SUBNET.prefixlen}", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")
    ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", ns, "route", "add", "default", "dev", "eth0")


def remove(names: Names, hosts: int) -> list[str]:
    """Delete the bed's namespaces, veths and bridge; what could not be removed (empty when clean)."""
    for index in range(hosts):
        ip("link", "del", names.veth(index), check=False)  # deleting one end removes the pair
        ip("netns", "del", names.netns(index), check=False)
    ip("link", "del", names.bridge, check=False)
    return leftovers(names)


def leftovers(names: Names) -> list[str]:
    """This bed's namespaces and links that still exist."""
    mine = f"{PREFIX}{names.bed_id}"
    namespaces = [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.startswith(mine)]
    links = [line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link").stdout.splitlines()]
    return namespaces + [link for link in links if link == names.bridge or link.startswith(f"gda{names.bed_id}h")]

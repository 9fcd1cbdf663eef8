"""The node script's head: its address, how a worker decides it is gone, and how the worker then stops.

Real sockets on 127.0.0.1 stand for the head's GCS port. The node being
stopped is a real process laid out as ``ray start --block`` lays itself out: the
leader of its own process group, with a child in it, and a SIGTERM handler that
stalls (Ray's handler first drains the node, waiting up to 30 s for the GCS).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from galaxy_da.sweep.hosts import is_loopback
from galaxy_da.sweep.nodes import (HeadAddressError, RayNode, answers, head_ip, main, outward_address, serve_as_worker, wait_until,
                                   wait_while_head_answers)


def listener(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


def closed_port() -> int:
    sock = listener()
    port = sock.getsockname()[1]
    sock.close()
    return port


class HeadOnAClock:
    """A head (a real listening socket) that goes down and up at set times of a clock that only the worker's sleeps advance.

    ``schedule``: ``(time, up)`` pairs in order. Stands in for the ``time`` module of :mod:`galaxy_da.sweep.nodes`,
    so a loaded machine cannot stretch a blip past the worker's patience: the test is the same on every machine.
    """

    def __init__(self, schedule: list[tuple[float, bool]]):
        self.now, self.schedule = 0.0, list(schedule)
        self.head = listener()
        self.port = self.head.getsockname()[1]

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        while self.schedule and self.schedule[0][0] <= self.now:
            _, up = self.schedule.pop(0)
            if up:
                self.head = listener(self.port)
            else:
                self.head.close()


def test_a_worker_rides_out_a_head_that_misses_probes_and_stops_once_it_is_gone(monkeypatch):
    from galaxy_da.sweep import nodes

    clock = HeadOnAClock([(0.5, False), (1.5, True), (2.5, False)])  # misses probes for 1 s (a loaded host), answers, then gone
    monkeypatch.setattr(nodes, "time", clock)
    wait_while_head_answers("127.0.0.1", clock.port, gone_after_s=2.0, poll_s=0.25)  # powers of 2: exact sums
    assert not clock.schedule, "the worker stopped during the blip"
    assert 2.0 - 0.25 <= clock.now - 2.5 <= 2.0  # 2 s after its last answer, which came at most one poll before it went


def test_the_heads_name_resolves_as_written_when_it_is_not_loopback():
    assert head_ip("10.213.0.1", num_nodes=3) == "10.213.0.1"
    assert head_ip("localhost", num_nodes=1) == "127.0.0.1"  # one node: nobody else needs to reach it


def test_a_loopback_head_address_becomes_the_outward_interface_on_several_nodes():
    outward = outward_address()
    if outward is None:
        pytest.skip("this machine has no outward route")
    assert not is_loopback(outward)
    for name in ("127.0.1.1", "localhost"):  # 127.0.1.1: what Debian's /etc/hosts gives a host's own name
        assert head_ip(name, num_nodes=3) == outward


def test_a_loopback_head_address_without_an_outward_route_is_refused_in_one_line(capsys):
    with pytest.raises(HeadAddressError, match=r"^--head localhost: resolves to the loopback address 127.0.0.1 .*--head 10.0.0.1"):
        head_ip("localhost", num_nodes=2, outward=lambda: None)
    if outward_address() is None:
        with pytest.raises(SystemExit) as exit:
            main(["--rank", "1", "--nodes", "2", "--head", "localhost", "--", "true"])
        assert exit.value.code == 2 and "--head localhost" in capsys.readouterr().err.splitlines()[-1]


STALLING_NODE = """
import os, signal, subprocess, sys, time
os.setpgrp()  # as Ray's reaper does in `ray start --block`
child = subprocess.Popen(["sleep", "120"])
signal.signal(signal.SIGTERM, lambda *_: time.sleep(120))  # a drain that waits for a GCS that is gone
print(child.pid, flush=True)
time.sleep(120)
"""


def stalling_node(address: str, tmp_path) -> tuple[RayNode, int]:
    node = RayNode(address, is_head=False, num_cpus=1, num_gpus=0)
    node.temp_dir = str(tmp_path / "ray-node")
    os.makedirs(node.temp_dir)
    node.process = subprocess.Popen([sys.executable, "-c", STALLING_NODE], stdout=subprocess.PIPE, text=True)
    child = int(node.process.stdout.readline())
    return node, child


def is_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] == "Z"  # a zombie is gone too (its parent reaps it)
    except FileNotFoundError:
        return True


def gone(pid: int, within_s: float = 10.0) -> bool:
    """Whether ``pid`` exits within ``within_s``: a SIGKILL is delivered when the killed process next runs, which a
    loaded machine can delay after ``killpg`` returns (one CI run in many saw the child still sleeping)."""
    deadline = time.monotonic() + within_s
    while not is_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_worker_whose_head_is_gone_stops_its_node_at_once(tmp_path):
    node, child = stalling_node(f"127.0.0.1:{closed_port()}", tmp_path)
    began = time.monotonic()
    node.stop(timeout_s=60)
    assert time.monotonic() - began < 30  # no SIGTERM, no 60 s drain: the whole process group is killed (any machine's speed)
    assert node.process.returncode == -signal.SIGKILL and gone(child)
    assert not os.path.exists(node.temp_dir)


def test_a_node_whose_head_answers_is_stopped_through_rays_handler_first(tmp_path):
    head = listener()
    try:
        node, child = stalling_node(f"127.0.0.1:{head.getsockname()[1]}", tmp_path)
        began = time.monotonic()
        node.stop(timeout_s=1.5)
        assert time.monotonic() - began >= 1.5  # SIGTERM, and the drain had its time
        assert node.process.returncode == -signal.SIGKILL and gone(child)
    finally:
        head.close()


class ScriptedNode(RayNode):
    """A worker node whose ``ray start --block`` is ``scripts[k]`` on its k-th start (the last one repeats): the
    restart loop's own logic, on real processes; the real Ray node is the slow test below."""

    def __init__(self, address: str, scripts: list[str]):
        super().__init__(address, is_head=False, num_cpus=1, num_gpus=0)
        self.scripts, self.starts = scripts, 0

    def command(self) -> list[str]:
        self.starts += 1
        return [sys.executable, "-c", self.scripts[min(self.starts, len(self.scripts)) - 1]]


def test_a_worker_whose_node_keeps_ending_while_the_head_answers_gives_up_with_its_status(capsys):
    head = listener()
    node = ScriptedNode(f"127.0.0.1:{head.getsockname()[1]}", ["import sys; sys.exit(7)"])
    try:
        node.start()
        assert serve_as_worker(node, "127.0.0.1", head.getsockname()[1], restarts=2, poll_s=0.05) == 7
        assert node.starts == 3  # the first start and two restarts
        out = capsys.readouterr().out
        assert "starting it again (2 of 2)" in out and "after 2 restarts: giving up" in out
    finally:
        node.stop(timeout_s=1)
        head.close()


def test_a_worker_whose_node_ends_with_its_head_is_not_restarted_and_ends_well(capsys):
    node = ScriptedNode(f"127.0.0.1:{closed_port()}", ["import sys; sys.exit(1)"])  # Ray's raylet ends once its GCS is gone
    try:
        node.start()
        assert serve_as_worker(node, "127.0.0.1", int(node.address.rsplit(":", 1)[1]), gone_after_s=0.5, poll_s=0.05) == 0
        assert node.starts == 1 and "starting it again" not in capsys.readouterr().out
    finally:
        node.stop(timeout_s=1)


def test_a_worker_restarted_after_its_node_ended_stops_once_the_head_is_gone(capsys):
    head = listener()
    port = head.getsockname()[1]
    node = ScriptedNode(f"127.0.0.1:{port}", ["import sys; sys.exit(1)", STALLING_NODE])
    status: list[int] = []
    node.start()
    worker = threading.Thread(target=lambda: status.append(serve_as_worker(node, "127.0.0.1", port, restarts=1, gone_after_s=0.5, poll_s=0.05)))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while node.starts < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.starts == 2, "the node that ended was not started again"
        head.close()  # the head goes: the restarted worker stops serving
        worker.join(timeout=60)
        assert status == [0] and node.process.poll() is None  # the head's going ended the task, not the node
        assert "ended with exit status 1 while the head at" in capsys.readouterr().out
    finally:
        head.close()
        worker.join(timeout=60)
        node.stop(timeout_s=1)


NODE_IDS = """
import json, sys, ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False)
print(json.dumps({node["NodeID"]: node["Alive"] for node in ray.nodes()}))
"""


def node_ids(address: str) -> dict[str, bool]:
    """Every node the head knows, and whether it is alive, asked from a fresh process (this one keeps its own Ray)."""
    done = subprocess.run([sys.executable, "-c", NODE_IDS, address], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def alive_within(address: str, condition, within_s: float = 120.0) -> dict[str, bool]:
    """The head's nodes once ``condition`` holds of the alive ones' IDs (polled; a timeout fails the test)."""
    deadline = time.monotonic() + within_s
    while True:
        nodes = node_ids(address)
        if condition({node for node, alive in nodes.items() if alive}):
            return nodes
        assert time.monotonic() < deadline, f"nodes after {within_s:.0f} s: {nodes}"
        time.sleep(1)


@pytest.mark.slow
def test_a_real_worker_whose_raylet_is_killed_rejoins_the_cluster_as_a_new_node(monkeypatch):
    import psutil

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    port = closed_port()
    address = f"127.0.0.1:{port}"
    head = RayNode(address, is_head=True, num_cpus=0, num_gpus=0)
    worker = RayNode(address, is_head=False, num_cpus=1, num_gpus=0)
    status: list[int] = []
    serving = threading.Thread(target=lambda: status.append(serve_as_worker(worker, "127.0.0.1", port, restarts=1, gone_after_s=4, poll_s=0.5)))
    head.start()
    try:
        wait_until(lambda: answers("127.0.0.1", port), "the head's GCS port", 120)
        (head_id,) = alive_within(address, lambda alive: len(alive) == 1)
        worker.start()
        first = {*alive_within(address, lambda alive: len(alive) == 2)} - {head_id}
        serving.start()
        first_process = worker.process
        raylets = [p for p in psutil.Process(first_process.pid).children(recursive=True) if p.name() == "raylet"]
        assert len(raylets) == 1
        raylets[0].kill()  # as the kernel's OOM killer would: `ray start --block` then ends, killing the rest of its node
        nodes = alive_within(address, lambda alive: head_id in alive and len(alive - first - {head_id}) == 1)
        assert worker.process is not first_process and first_process.returncode == 1
        assert set(nodes) >= first | {head_id}  # the first worker is still on record: the restart is a new node
        head.stop()
        serving.join(timeout=120)
        assert status == [0]  # the head's going ends the worker's task, as before the restart
    finally:
        head.stop()
        if serving.is_alive():
            serving.join(timeout=120)
        worker.stop(timeout_s=5)

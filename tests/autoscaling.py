"""A real autoscaling Ray cluster on this machine that touches no other Ray instance here.

:class:`LocalAutoscalingCluster` is Ray's ``ray.cluster_utils.AutoscalingCluster``
(a head node plus an autoscaler whose fake node provider starts worker nodes
as local raylets) with three changes, because this machine is shared:

- it never runs ``ray stop`` (Ray's ``start``/``shutdown`` do, which would end
  every Ray instance on the machine): the head is ``ray start --block`` in its
  own session, and shutting down ends exactly the processes under it;
- its temp dir (``RAY_TMPDIR``) and every port are its own, so it neither takes
  a port another instance uses nor becomes the machine's "current cluster";
  token authentication is off (a test cluster on loopback), so no token file
  of the machine is read or written;
- it writes the autoscaler config itself (Ray 2.60's wheel lacks the
  ``fake_multi_node/example.yaml`` that ``AutoscalingCluster`` reads) and keeps
  it on disk, where a sweep can read the node types (``config_path``).

GPUs are logical: a node type with ``GPU: 1`` gets one GPU id from Ray, and
torch (CPU build) sees none.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import psutil
import yaml
from ray.cluster_utils import AutoscalingCluster

from galaxy_da.sweep.ray_start import retry_ray_startup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalAutoscalingCluster(AutoscalingCluster):
    """``AutoscalingCluster(head_resources, worker_node_types)`` started and stopped without ``ray stop``."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        self.port = free_port()
        node_types = dict(worker_node_types)
        node_types["ray.head.default"] = {"resources": dict(head_resources), "node_config": {}, "max_workers": 0}
        return {
            "cluster_name": "galaxy-da-test", "max_workers": sum(t.get("max_workers", 0) for t in worker_node_types.values()),
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{self.port}"},
            "available_node_types": node_types, "head_node_type": "ray.head.default", "auth": {},
            "upscaling_speed": 1.0, "idle_timeout_minutes": 0.2, "docker": {}, "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
            "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [], **config_kwargs,
        }

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, _system_config=None, override_env: Optional[dict] = None) -> None:
        """Start the head; on a loaded machine its raylet can miss Ray's fixed 30 s start-up wait, so retry (:func:`retry_ray_startup`)."""
        retry_ray_startup(lambda: self._start_head(override_env))

    def _start_head(self, override_env: Optional[dict]) -> None:
        """Start the head and wait for its runtime; a head that exits or takes over 180 s is shut down and raised with its log's tail."""
        self.temp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's unix sockets live here
        self.config_path = self.temp / "autoscaler.yaml"
        self.config_path.write_text(yaml.safe_dump(self._config))
        head = dict(self._head_resources)
        ray_bin = str(Path(sys.executable).with_name("ray"))
        command = [
            ray_bin, "start", "--head", "--block", f"--port={self.port}", f"--autoscaling-config={self.config_path}",
            f"--num-cpus={head.pop('CPU', 1)}", f"--num-gpus={head.pop('GPU', 0)}", "--include-dashboard=false",
            "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}", f"--metrics-export-port={free_port()}",
        ]
        if head:
            command.append(f"--resources={json.dumps(head)}")
        env = os.environ | {"RAY_TMPDIR": str(self.temp), "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1",
                            "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **(override_env or {})}
        env.pop("RAY_ADDRESS", None)
        self.log = open(self.temp / "head.log", "w")
        self.head = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in (self.temp / "head.log").read_text():
            if self.head.poll() is not None or time.monotonic() > deadline:
                log = (self.temp / "head.log").read_text()[-3000:]
                self.shutdown()
                raise RuntimeError(f"the Ray head did not start: {log}")
            time.sleep(0.5)

    def shutdown(self) -> None:
        """End the head and everything under it (worker nodes are children of its autoscaler).

        The GCS goes last: a raylet that is sent SIGTERM tells the GCS it is leaving and, with the GCS
        already gone, waits about 10 s for it; with the GCS up, they exit in 2-5 s, and those left after
        3 s are killed. The GCS and the ``ray start`` process may then take over 5 s more to stop, and
        keep nothing worth a clean stop (their temp dir is deleted), so they are killed at once.
        """
        try:
            tree = [psutil.Process(self.head.pid), *psutil.Process(self.head.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        last = [process for process in tree if process.pid == self.head.pid or _name(process) == "gcs_server"]
        _terminate([process for process in tree if process not in last])
        _terminate(last, grace_s=0)
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return ""


def _terminate(processes: list, grace_s: float = 3) -> None:
    """SIGTERM ``processes``, then SIGKILL those still alive after ``grace_s`` (at once if it is 0)."""
    alive = processes
    if grace_s > 0:
        for process in processes:
            try:
                process.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)

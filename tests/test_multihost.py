"""Sweeps across three simulated hosts (cluster/testbed): ray up/submit/down, shared tracking and storage, faults.

Marked ``cluster``: run with ``make cluster-test`` (root; ip, unshare, nsenter,
sshd and Debian's PostgreSQL; the ``[cluster]`` extra). Everything is real:
namespaced hosts joined by a bridge, sshd, ``ray up`` with ``cluster/local.yaml``,
PostgreSQL, moto's S3 server, MLflow's basic-auth server. The full sweep has 8
trials; the fault and SLURM sweeps 4 (``scenarios.FAULT_ARGS``, ``SMALL_ARGS``), to fit CI.

Every sweep ends with :func:`cluster.testbed.checks.check_sweep` (one FINISHED child
run per trial, every epoch's points exactly once, equal to its ``history.json``),
and every fault proves that it hit a live trial: the trial it picked logged before
the fault and, in the same run, after it (on another host, for a lost host). That
holds by construction, whatever the machine's speed: the fault waits until its trial
is paused (its host's processes, or the driver, stopped) and has 2 epochs still to
log (:func:`cluster.testbed.checks.check_room`), or the test fails saying so. Each
fault test reports its sweep's wall time and what the fault cost (printed, and
in ``$GALAXY_DA_CLUSTER_REPORT`` when set); ``bench/multihost.py`` sets them
against a clean sweep of the same trials.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("ip", "unshare", "nsenter", "setpriv", "ssh", "ssh-keygen", "rsync")
REQUIRED = os.environ.get("GALAXY_DA_CLUSTER_TEST") == "require"  # make cluster-test: a missing tool fails, it is not skipped


def missing() -> list[str]:
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    absent += [] if Path("/usr/sbin/sshd").exists() else ["/usr/sbin/sshd (openssh-server)"]
    absent += [] if list(Path("/usr/lib/postgresql").glob("*/bin/postgres")) else ["postgresql"]
    absent += [] if (ROOT / ".venv/bin/moto_server").exists() else ["moto (pip install -e '.[cluster]')"]
    absent += [] if os.geteuid() == 0 else ["root"]
    return absent


if missing():
    if REQUIRED:
        raise RuntimeError(f"the cluster test needs: {', '.join(missing())} (make cluster-test installs them as root)")
    pytest.skip(f"needs {', '.join(missing())}", allow_module_level=True)

from cluster.testbed import checks, scenarios  # noqa: E402  (needs the tools above)
from cluster.testbed.bed import TestBed  # noqa: E402
from cluster.testbed.host import Host, paused  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]
TIMINGS: dict[str, float] = {}


def report(key: str, seconds: float) -> None:
    TIMINGS[key] = round(seconds, 1)
    print(f"[cluster] {key}: {seconds:.1f} s", flush=True)
    if os.environ.get("GALAXY_DA_CLUSTER_REPORT"):
        Path(os.environ["GALAXY_DA_CLUSTER_REPORT"]).write_text(json.dumps(TIMINGS, indent=1))


def argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")


# --------------------------------------------------------------------------- the bed itself


def test_hosts_have_their_own_network_processes_storage_and_name():
    with TestBed(hosts=2) as bed:
        h0, h1 = bed.hosts
        h0.popen(["sleep", "300"])
        assert h1.run(["hostname"]).stdout.strip() == "gda-h1"
        assert h1.run(["hostname", "-I"]).stdout.split() == [h1.address]
        assert "sleep" not in h1.run(["ps", "-eo", "comm"]).stdout  # its own PID namespace: h0's processes are not there
        h0.run(["touch", "/tmp/only-on-h0", "/root/only-on-h0"])
        code_in_tmp = {ROOT.relative_to("/tmp").parts[0]} if ROOT.is_relative_to("/tmp") else set()  # a checkout under /tmp (CI's may be)
        assert set(h1.run(["ls", "-A", "/tmp"]).stdout.split()) == code_in_tmp  # private scratch and home: only the shared code
        assert "only-on-h0" not in h1.run(["ls", "-A", "/root"]).stdout
        assert h1.run(["touch", str(ROOT / "x")], check=False).returncode != 0  # the code is shared read-only
        assert h1.run(["getent", "hosts", "gda-h0"]).stdout.split()[0] == h0.address
        ssh = ["ssh", "-i", "/root/.ssh/galaxy_da_cluster", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]
        assert h0.run([*ssh, h1.address, "hostname"]).stdout.strip() == "gda-h1"  # sshd with the bed's throw-away key
        assert h1.run([*ssh, h0.address, "true"], check=False).returncode != 0  # only the launching host holds the key
        with socket.create_server((outside_address(), 0)) as outside:  # listening on the machine's real address
            port = outside.getsockname()[1]
            assert h1.run(["timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{outside_address()}/{port}"], check=False).returncode != 0  # no way out
        # a host's 127.0.0.1 is its own: h0 reaches its server there, h1 does not
        connect = ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8765"]
        server = h0.popen([str(ROOT / ".venv/bin/python"), "-m", "http.server", "--bind", "127.0.0.1", "8765"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while h0.run(connect, check=False).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, "h0's http.server is not listening on its 127.0.0.1:8765"
            time.sleep(0.2)
        assert h1.run(connect, check=False).returncode != 0
    assert bed.leftovers() == []


def outside_address() -> str:
    """The machine's own address on its real network (a host must not reach it)."""
    return subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()[0]


def test_teardown_after_an_error_leaves_nothing():
    with pytest.raises(RuntimeError, match="boom"):
        with TestBed(hosts=2) as bed:
            bed.hosts[1].popen(["sleep", "300"])
            raise RuntimeError("boom")
    assert bed.leftovers() == []
    assert not any(line.startswith(f"gda-{bed.bed_id}") for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_teardown_after_ctrl_c_or_sigterm_leaves_nothing(sig):
    # started as a shell starts a background job (`cmd &`): SIGINT ignored, which the bed must not inherit
    process = subprocess.Popen([sys.executable, "-m", "cluster.testbed", "hold", "--hosts", "2"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    ready = json.loads(process.stdout.readline())  # {"bed": id, "root": folder, "pids": [...]} once the hosts are up
    assert Path(ready["root"]).exists() and all(Path(f"/proc/{pid}").exists() for pid in ready["pids"])
    process.send_signal(sig)
    assert process.wait(60) != 0
    assert not Path(ready["root"]).exists()  # keys and scratch are gone
    assert not any(Path(f"/proc/{pid}").exists() for pid in ready["pids"])
    names = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout + subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ready["bed"] not in names


# --------------------------------------------------------------------------- three hosts, shared services


@pytest.fixture(scope="module")
def stack():
    """One bed of 3 hosts and one stack of services for every scenario below (Ray is up only inside TestOnPremise)."""
    began = time.monotonic()
    with TestBed(hosts=3) as bed:
        stack = scenarios.start_stack(bed)
        report("services_and_data_s", time.monotonic() - began)
        try:
            yield stack
        finally:
            stack.services.stop_all()


def test_a_worker_holds_no_mlflow_user_and_the_tracking_server_refuses_it(stack):
    """Only the head's driver holds the MLflow admin (it hands the trials a user of their own); a worker's shell has none."""
    worker = stack.bed.hosts[1]
    assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} & set(stack.login_env())
    out = worker.run([f"{stack.venv}/python", "-m", "cluster.testbed.probe", "unauthenticated"], env=stack.login_env(), cwd=str(ROOT))
    assert json.loads(out.stdout)["status"] == 401


class TestOnPremise:
    """``ray up`` the head and two workers by address, sweeps with ``ray submit``, ``ray down``."""

    @pytest.fixture(scope="class")
    def cluster(self, stack):
        report("ray_up_3_hosts_s", scenarios.ray_up(stack, stack.bed.workers))
        try:
            yield stack
        finally:
            scenarios.ray_down(stack)  # and ray stop on every host: fails if a Ray node is left on any

    def test_a_sweep_runs_on_every_host_and_mlflow_holds_each_epoch_once(self, cluster):
        run = scenarios.submit(cluster, "onprem")
        assert run.returncode == 0, run.output[-4000:]
        report("sweep_3_hosts_s", run.wall_s)
        audit = scenarios.audit(cluster, run.summary["parent_run_id"])
        checks.check_sweep(audit, trials=8, epochs=scenarios.EPOCHS)
        assert len({child["node_ip"] for child in audit["children"]}) >= 2  # trials ran on at least two hosts

    def test_a_local_sqlite_store_is_refused_on_a_multi_node_cluster(self, cluster):
        run = scenarios.submit(cluster, "sqlite", "--tracking-uri", "sqlite:////tmp/mlflow.db", timeout_s=300)
        assert run.returncode != 0
        errors = [line for line in run.output.splitlines() if "topk.py: error:" in line]
        assert len(errors) == 1 and "the 2 other host(s) up now" in errors[0] and "--tracking-uri http://" in errors[0], run.output[-3000:]
        assert "Traceback" not in run.output

    def test_tracking_server_restart_mid_sweep_loses_no_metric(self, cluster):
        """The tracking server goes down while a worker's trial is past its first epoch and paused with 2 epochs to
        go; that trial's run logs on after the restart."""
        began = time.monotonic()
        process = scenarios.start_submit(cluster, "restart", args=scenarios.FAULT_ARGS)
        with scenarios.left_to_finish_on_error(process):
            live = scenarios.wait_for(cluster, "restart", "trial-past-first-epoch", cluster.head.address)
            with host_at(cluster, live["node_ip"]).paused():  # it logs nothing more until the server is down
                checks.check_room(scenarios.progress(cluster, "restart"), live["run_id"], scenarios.FAULT_EPOCHS, "tracking server restart")
                stopped_ms, stopped_at = checks.now_ms(), time.monotonic()
                cluster.services.stop("mlflow")
            time.sleep(5)  # trials block (retrying) this long
            cluster.services.start("mlflow")
            restarted_ms = checks.now_ms()
            report("tracking_outage_s", time.monotonic() - stopped_at)
        run = scenarios.finish(process, began)
        assert run.returncode == 0, run.output[-4000:]
        report("sweep_with_tracking_restart_s", run.wall_s)
        audit = scenarios.audit(cluster, run.summary["parent_run_id"])
        checks.check_sweep(audit, trials=4, epochs=scenarios.FAULT_EPOCHS)
        checks.check_spans(checks.run_of(audit, live["run_id"]), stopped_ms, restarted_ms, "tracking server restart")

    def test_a_killed_driver_is_resumed_to_completion(self, cluster):
        """The driver (with its ssh session) is paused, then killed if one of its trials has its checkpoint in Tune's
        saved state and 2 epochs to go; else it is continued and looked at again. --resume continues that trial in its
        own run."""
        began = time.monotonic()
        process = scenarios.start_submit(cluster, "driver", args=scenarios.FAULT_ARGS)
        with scenarios.left_to_finish_on_error(process):
            scenarios.wait_for(cluster, "driver", "trial-past-first-epoch")
            drivers = [pid for pid in cluster.head.find("--name driver") if argv(pid)[1:2] and argv(pid)[1].endswith("/topk.py")]
            assert len(drivers) == 1  # python ~/topk.py on the head, started by ray submit
            live = None
            while live is None:
                # the driver with its ssh session's login shell, which would otherwise see its job stop and end the session;
                # paused, no further step starts (each trial may finish the one it runs), so what the probe reads holds
                with paused(lambda: cluster.head.session_of(drivers[0])):
                    state = cluster.probe("pick", "driver", "trial-restorable", f"{scenarios.STORAGE}/driver", "",
                                          str(scenarios.FAULT_EPOCHS - checks.EPOCHS_LEFT_FOR_A_FAULT - 1))  # one may be on its way
                    assert not state["ended"], f"sweep driver ended before a trial was restorable with epochs to go: {state}"
                    if state["met"]:
                        live = state["chosen"]
                        checks.check_room(scenarios.progress(cluster, "driver"), live["run_id"], scenarios.FAULT_EPOCHS, "driver kill")
                        os.kill(drivers[0], signal.SIGKILL)
                if live is None:
                    time.sleep(2.0)  # the driver runs: trials step, Tune saves and uploads its state
            killed_ms, killed_at = checks.now_ms(), time.monotonic()
        first = scenarios.finish(process, began)
        assert first.returncode != 0
        resumed_ms = checks.now_ms()  # the killed driver's trials are gone by now: later points come from the resumed sweep
        resumed = scenarios.submit(cluster, "driver", "--resume", args=scenarios.FAULT_ARGS)
        assert resumed.returncode == 0, resumed.output[-4000:]
        report("driver_kill_until_resumed_sweep_done_s", time.monotonic() - killed_at)
        report("sweep_with_driver_kill_s", time.monotonic() - began)
        audit = scenarios.audit(cluster, resumed.summary["parent_run_id"])
        checks.check_sweep(audit, trials=4, epochs=scenarios.FAULT_EPOCHS)
        checks.check_spans(checks.run_of(audit, live["run_id"]), killed_ms, resumed_ms, "driver killed and resumed")

    def test_a_worker_host_lost_mid_epoch_costs_its_trials_only_their_current_epoch(self, cluster):
        """Every process of a worker host is killed once one of its trials has a registered checkpoint (it logged its
        second epoch) and, the host paused, 2 epochs to go."""
        began = time.monotonic()
        process = scenarios.start_submit(cluster, "hostloss", args=scenarios.FAULT_ARGS)
        with scenarios.left_to_finish_on_error(process):
            # killed before its checkpoint is registered, the trial would rightly start over in a new run
            live = scenarios.wait_for(cluster, "hostloss", "trial-registered", cluster.head.address)
            victim = host_at(cluster, live["node_ip"])
            with victim.paused():
                checks.check_room(scenarios.progress(cluster, "hostloss"), live["run_id"], scenarios.FAULT_EPOCHS, "host loss")
                lost_ms = checks.now_ms()
                victim.kill()
        try:
            run = scenarios.finish(process, began)
            assert run.returncode == 0, run.output[-4000:]
            audit = scenarios.audit(cluster, run.summary["parent_run_id"])
            checks.check_sweep(audit, trials=4, epochs=scenarios.FAULT_EPOCHS)
            report("host_loss_until_trial_reports_again_s", checks.check_moved(checks.run_of(audit, live["run_id"]), victim.address, lost_ms))
            report("sweep_with_host_loss_s", run.wall_s)
        finally:
            cluster.bed.start(victim)  # the machine comes back (empty), so the teardown finds its sshd


def host_at(stack: scenarios.Stack, address: str) -> Host:
    return next(host for host in stack.bed.hosts if host.address == address)


# --------------------------------------------------------------------------- SLURM's node logic


def test_slurm_node_logic_runs_a_sweep_across_the_hosts(stack):
    results, wall_s = scenarios.slurm_nodes(stack, stack.bed.hosts, "slurm")
    assert [r.returncode for r in results] == [0, 0, 0], "\n".join(r.output[-3000:] for r in results)
    assert "Ray cluster up at 10.213.0.1:6379: 3 node(s)" in results[0].output
    report("slurm_sweep_3_hosts_s", wall_s)
    audit = scenarios.audit(stack, results[0].summary["parent_run_id"])
    checks.check_sweep(audit, trials=4, epochs=scenarios.EPOCHS)
    assert len({child["node_ip"] for child in audit["children"]}) >= 2

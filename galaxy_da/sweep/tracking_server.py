"""One MLflow tracking server for the length of a sweep.

Many trial processes writing straight into one sqlite file risk "database is
locked" and schema-migration races, so while a sweep runs, every trial logs
over HTTP to ONE ``mlflow server`` that alone owns the sqlite file::

    with tracking_server("sqlite:////abs/mlflow/mlflow.db") as uri:   # "http://127.0.0.1:PORT"
        ...

A tracking URI that is not a local sqlite file (an ``http(s)://`` server, a
Databricks workspace) is yielded unchanged: someone else runs that server.

The server is started with ``--default-artifact-root file:///<store>/artifacts``:
clients then write artifacts straight into that folder, which is right on one
host. On a cluster whose nodes do not share that folder, run one server for the
whole cluster with ``--serve-artifacts --artifacts-destination s3://...`` (see
``mlflow/serve.sh``) and point ``MLFLOW_TRACKING_URI`` at it.

The server is MLflow's own FastAPI app under uvicorn with one worker, started
directly (:func:`server_command`): ``mlflow server`` would first import MLflow and
open the store in a launcher process only to exec that same uvicorn command (about
half of a 6-second start, and a second more to stop), and a sweep or a study starts
one server per run of its driver.

The server runs in its own process group with job execution switched off
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``; otherwise it starts about ten
workers that ignore SIGTERM). The whole group is stopped on exit, on error, on
Ctrl-C and on SIGTERM; if the driver dies outright the kernel sends the server
SIGTERM (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Optional

from galaxy_da.sqlite_store import ready_store
from galaxy_da.tracking import artifact_root_for

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# What ``mlflow server`` hands its uvicorn worker (mlflow.server.constants and _MLFLOW_SGI_NAME in
# mlflow.environment_variables, MLflow 3.17; tests/test_tune.py checks the names against MLflow's own).
SERVER_ENVIRONMENT = {"backend": "_MLFLOW_SERVER_FILE_STORE", "registry": "_MLFLOW_SERVER_REGISTRY_STORE",
                      "artifact_root": "_MLFLOW_SERVER_ARTIFACT_ROOT", "server": "_MLFLOW_SGI_NAME"}


def server_command(store_uri: str, port: int, host: str = HOST) -> tuple[list[str], dict[str, str]]:
    """(command, environment) of ``mlflow server --backend-store-uri STORE --default-artifact-root
    <STORE's folder>/artifacts --workers 1`` for a local sqlite store, as the uvicorn process that command execs."""
    environment = {
        SERVER_ENVIRONMENT["backend"]: store_uri, SERVER_ENVIRONMENT["registry"]: store_uri,
        SERVER_ENVIRONMENT["artifact_root"]: artifact_root_for(store_uri), SERVER_ENVIRONMENT["server"]: "uvicorn",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [sys.executable, "-m", "uvicorn", "--host", host, "--port", str(port), "--workers", "1", "--log-level", "warning",
               "mlflow.server.fastapi_app:app"]
    return command, environment


def _die_with_parent() -> None:
    """Runs in the child before exec: start a new session and get SIGTERM when the parent dies."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {process.returncode} before it was healthy")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.3)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout:.0f} s")


def stop_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
            os.killpg(process.pid, signal.SIGKILL)
        return


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit in the main thread, so ``finally`` blocks run."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def tracking_server(tracking_uri: str, port: Optional[int] = None, host: str = HOST, timeout: float = 90.0, log_path: Optional[Path] = None,
                    meanwhile: Callable[[], None] = lambda: None) -> Iterator[str]:
    """Yield an HTTP tracking URI that serves ``tracking_uri``, starting a server if it is sqlite; ``meanwhile()`` runs
    while the server starts (launched, not yet answering), and an error in it stops the server."""
    if not tracking_uri.startswith("sqlite:///"):
        meanwhile()
        yield tracking_uri
        return
    Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    ready_store(tracking_uri, artifact_root_for(tracking_uri))  # created and migrated under the store's lock, not by the server
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    command, environment = server_command(tracking_uri, port, host)
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        command, env=os.environ | environment, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )
    try:
        meanwhile()  # before SIGTERM becomes SystemExit here: Ray's driver sets its own handler, which this one then restores
        with _sigterm_as_exit():
            wait_healthy(url, process, timeout)
            yield url
    finally:
        stop_group(process)
        if log_path:
            log.close()

"""The shared services of a cluster, run on the head host: PostgreSQL, an S3 server, MLflow.

What a cluster declares shared, it reaches over the network, and only that:

| service | listens on | why |
|---|---|---|
| PostgreSQL (Debian's server) | head's 127.0.0.1:5432 | MLflow's tracking and user store; only the MLflow server talks to it |
| S3 (moto in server mode) | head's cluster address :9000 | shards, Ray results, MLflow artifacts |
| MLflow (basic-auth app) | head's cluster address :5000 | every trial logs here; artifacts are proxied to S3 |

The auth app caches a checked password for 60 s: without it every request pays a
PBKDF2 hash, which made a smoke sweep's logging several times slower on 2 cores.

Secrets (database password, S3 keys, the MLflow admin, Ray's token) are drawn
fresh for each bed (:class:`Secrets`) and handed over in environment variables
only; the one file written (MLflow's auth ini) names the user database, no secret.
Every node gets :func:`node_env`, which holds no MLflow user; the admin's
credentials (:func:`admin_env`) go to the head alone.
:meth:`Services.stop` stops a service's whole process group and :meth:`Services.start`
starts it again (the tracking-server fault).
"""

from __future__ import annotations

import glob
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cluster.testbed.host import Host

PG_PORT, S3_PORT, MLFLOW_PORT = 5432, 9000, 5000
BUCKET = "galaxy-da"
REGION = "us-east-1"
PG_DIR = "/tmp/pg"  # on the head, private to it
AUTH_INI = "/tmp/mlflow-basic-auth.ini"
AUTH_INI_TEXT = """\
[mlflow]
default_permission = READ
database_uri = postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow_auth
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
auth_cache_ttl_seconds = 60
"""


def _token() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Secrets:
    """Fresh credentials for one bed; they exist only in memory and in environment variables."""

    pg_password: str = field(default_factory=_token)
    s3_key_id: str = field(default_factory=lambda: "GDA" + secrets.token_hex(8).upper())
    s3_secret: str = field(default_factory=_token)
    mlflow_user: str = "galaxy-da"
    mlflow_password: str = field(default_factory=_token)
    ray_token: str = field(default_factory=lambda: secrets.token_hex(32))
    flask_key: str = field(default_factory=_token)  # the MLflow auth app's CSRF key


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"/usr/lib/postgresql/*/bin/{name}: install Debian's postgresql package")
    return found[-1]


def as_postgres(argv: list[str]) -> list[str]:
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]


def node_env(head: Host, keys: Secrets) -> dict[str, str]:
    """What every node of the cluster needs in its environment to reach the shared services: no MLflow user.

    Trials log as the sweep's own non-admin user, whose credentials the driver hands
    them (``galaxy_da/sweep/trial_user.py``); only the driver, on the head, holds the
    admin's (:func:`admin_env`).
    """
    return {
        "MLFLOW_TRACKING_URI": f"http://{head.address}:{MLFLOW_PORT}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "8",  # with backoff 1: about a minute of outage is absorbed
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "AWS_ENDPOINT_URL": f"http://{head.address}:{S3_PORT}",
        "AWS_ACCESS_KEY_ID": keys.s3_key_id,
        "AWS_SECRET_ACCESS_KEY": keys.s3_secret,
        "AWS_DEFAULT_REGION": REGION,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": keys.ray_token,
    }


def admin_env(keys: Secrets) -> dict[str, str]:
    """The MLflow admin, for the head alone: the sweep's driver creates the trials' user with it, probes read with it."""
    return {"MLFLOW_TRACKING_USERNAME": keys.mlflow_user, "MLFLOW_TRACKING_PASSWORD": keys.mlflow_password}


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    probe: tuple[str, int]  # address:port that answers once it is up
    cwd: str = "/tmp"
    process: subprocess.Popen | None = None


class Services:
    """Start and stop the head's services, in dependency order."""

    def __init__(self, head: Host, code: Path, keys: Secrets):
        self.head, self.code, self.keys = head, code, keys
        self.log_dir = head.root / "tmp"
        self.services: dict[str, Service] = {}

    def start_all(self) -> None:
        for name, build in SERVICES.items():
            build(self)
            self.start(name)
        self.head.run([str(self.code / ".venv/bin/python"), "-m", "cluster.testbed.probe", "make-bucket", BUCKET],
                      env=node_env(self.head, self.keys), cwd=str(self.code))

    def start(self, name: str, timeout_s: float = 120.0) -> float:
        """Start ``name`` and wait until it answers; seconds it took."""
        service, began = self.services[name], time.monotonic()
        log = open(self.log_dir / f"{name}.log", "ab")
        service.process = self.head.popen(service.argv, env=service.env, cwd=service.cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        address, port = service.probe
        while self.head.run(["bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}"], check=False).returncode != 0:
            if service.process.poll() is not None or time.monotonic() - began > timeout_s:
                raise RuntimeError(f"{name} did not start:\n{(self.log_dir / f'{name}.log').read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        return time.monotonic() - began

    def stop(self, name: str, grace_s: float = 15.0) -> None:
        """SIGTERM to ``name``'s process group, SIGKILL after ``grace_s``; returns once it has exited."""
        process = self.services[name].process
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
                process.wait(grace_s)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def stop_all(self) -> None:
        for name in reversed(list(self.services)):
            self.stop(name)

    # ------------------------------------------------------------------ the services
    def _postgres(self) -> None:
        data = f"{PG_DIR}/data"
        self.head.run(["bash", "-c", f"mkdir -p {PG_DIR} && chown postgres: {PG_DIR} && chmod 700 {PG_DIR}"])
        self.head.run(as_postgres([pg_bin("initdb"), "-D", data, "-U", "postgres", "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8"]), cwd=PG_DIR)
        self.services["postgres"] = Service("postgres", as_postgres([
            pg_bin("postgres"), "-D", data, "-k", PG_DIR, "-p", str(PG_PORT), "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off", "-c", "synchronous_commit=off",  # a test bed: speed over crash safety
        ]), {}, ("127.0.0.1", PG_PORT))

    def _create_databases(self) -> None:
        sql = (f"CREATE ROLE mlflow LOGIN PASSWORD '{self.keys.pg_password}';\n"
               "CREATE DATABASE mlflow OWNER mlflow;\nCREATE DATABASE mlflow_auth OWNER mlflow;\n")
        subprocess.run(self.head.command(as_postgres([pg_bin("psql"), "-h", PG_DIR, "-p", str(PG_PORT), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]), cwd=PG_DIR),
                       input=sql, text=True, check=True, capture_output=True)

    def _s3(self) -> None:
        self.services["s3"] = Service("s3", [str(self.code / ".venv/bin/moto_server"), "-H", self.head.address, "-p", str(S3_PORT)],
                                      {}, (self.head.address, S3_PORT))

    def _mlflow(self) -> None:
        self._create_databases()
        (self.head.root / "tmp" / Path(AUTH_INI).name).write_text(AUTH_INI_TEXT.format(port=PG_PORT))
        address = f"{self.head.address}:{MLFLOW_PORT}"
        env = node_env(self.head, self.keys) | {
            "PGPASSWORD": self.keys.pg_password, "MLFLOW_AUTH_CONFIG_PATH": AUTH_INI,
            "MLFLOW_AUTH_ADMIN_USERNAME": self.keys.mlflow_user, "MLFLOW_AUTH_ADMIN_PASSWORD": self.keys.mlflow_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.keys.flask_key,
            "HOST": self.head.address, "PORT": str(MLFLOW_PORT),
        }
        self.services["mlflow"] = Service("mlflow", [
            "bash", str(self.code / "mlflow/serve.sh"), "--app-name", "basic-auth",
            "--backend-store-uri", f"postgresql+psycopg2://mlflow@127.0.0.1:{PG_PORT}/mlflow",
            "--serve-artifacts", "--artifacts-destination", f"s3://{BUCKET}/mlflow", "--allowed-hosts", f"{address},{self.head.address}",
        ], env, (self.head.address, MLFLOW_PORT))


SERVICES: dict[str, Callable[[Services], None]] = {
    "postgres": Services._postgres,
    "s3": Services._s3,
    "mlflow": Services._mlflow,
}

#!/usr/bin/env bash
# The project's MLflow tracking server.
#
#   make ui                            # the same, with the project's venv (from the repository root)
#   mlflow/serve.sh                    # the local store mlflow/mlflow.db, artifacts in mlflow/artifacts, on 127.0.0.1:5000
#   PORT=5001 HOST=0.0.0.0 mlflow/serve.sh
#   HOST=10.0.0.1 mlflow/serve.sh --app-name basic-auth --backend-store-uri postgresql+psycopg2://mlflow@127.0.0.1/mlflow \
#       --serve-artifacts --artifacts-destination s3://bucket/galaxy-da/mlflow --allowed-hosts 10.0.0.1:5000,10.0.0.1
#
# Extra arguments replace the defaults. Sweeps start their own server on a free
# port for their duration (galaxy_da/sweep/tracking_server.py) when the tracking URI is a
# local sqlite file; run this one to browse results, or as the one shared server
# of a cluster (then with --artifacts-destination on shared storage: the server
# proxies artifacts, so nodes need no access to the store's folder), behind
# MLflow's basic-auth app with its secrets in the environment (cluster/README.md,
# "The cluster's tracking server"), and set MLFLOW_TRACKING_URI=http://<host>:<port>
# and MLFLOW_TRACKING_USERNAME/PASSWORD on every node.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mlflow_bin="$(command -v mlflow || echo "$here/../.venv/bin/mlflow")"
# Without this, mlflow 3.17 starts ~10 job-execution workers that ignore SIGTERM.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
if [ "$#" -gt 0 ]; then
  exec "$mlflow_bin" server --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}" --workers "${WORKERS:-1}" "$@"
fi
mkdir -p "$here/artifacts"
exec "$mlflow_bin" server \
  --backend-store-uri "sqlite:///$here/mlflow.db" \
  --default-artifact-root "file://$here/artifacts" \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}" --workers "${WORKERS:-1}"

#!/usr/bin/env bash
# Self-test of the Ray cluster launcher against this machine:
#   ray up cluster/local.yaml -> ray submit ... sweeps/topk.py --smoke-test -> ray down
# It needs root and an sshd on 127.0.0.1 with key auth, which it sets up (Debian
# openssh-server, a throw-away key in ~/.ssh/authorized_keys) and tears down.
#
#   cluster/selftest.sh            # from the repository root
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$root/.venv/bin:$PATH"
key="$HOME/.ssh/galaxy_da_cluster"
marker="galaxy-da-selftest"
started_sshd=""
made_ssh_dir=""; [ -d "$HOME/.ssh" ] || made_ssh_dir=1
work="$(mktemp -d /tmp/galaxy-da-selftest.XXXXXX)"  # the sweep's Ray results and MLflow store

cleanup() {
  set +e
  ray down -y cluster/local.yaml >/dev/null 2>&1
  ray stop >/dev/null 2>&1
  [ -n "$started_sshd" ] && kill "$(cat /run/sshd.galaxy-da.pid 2>/dev/null)" 2>/dev/null
  [ -f "$HOME/.ssh/authorized_keys" ] && sed -i "/$marker/d" "$HOME/.ssh/authorized_keys"
  rm -f "$key" "$key.pub"
  [ -n "$made_ssh_dir" ] && rm -rf "$HOME/.ssh"
  rm -rf "$work"
  sed -i '/# galaxy-da env/,+2d' "$HOME/.bashrc" 2>/dev/null
}
trap cleanup EXIT

if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server rsync >/dev/null
fi
mkdir -p /run/sshd "$HOME/.ssh" && chmod 700 "$HOME/.ssh"
ssh-keygen -q -t ed25519 -N "" -C "$marker" -f "$key" <<<y >/dev/null
cat "$key.pub" >> "$HOME/.ssh/authorized_keys" && chmod 600 "$HOME/.ssh/authorized_keys"
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A
if ! (exec 3<>/dev/tcp/127.0.0.1/22) 2>/dev/null; then
  /usr/sbin/sshd -o PidFile=/run/sshd.galaxy-da.pid -o ListenAddress=127.0.0.1 -o PermitRootLogin=prohibit-password
  started_sshd=1
fi
ssh -i "$key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes 127.0.0.1 true

ray stop >/dev/null 2>&1 || true
ray up -y cluster/local.yaml
# Sweep flags go after `--`: ray submit would take --name (and others) as its own.
ray submit cluster/local.yaml sweeps/topk.py -- --smoke-test --name "topk-selftest-$(date +%s)" \
  --storage-path "$work/ray_results" --tracking-uri "sqlite:///$work/mlflow/mlflow.db"
ray down -y cluster/local.yaml
echo "selftest: OK in $SECONDS s"

#!/usr/bin/env bash
# A local cluster: PostgreSQL, the S3 test server, a fake Google, three instances and HAProxy
# (health checks on /readyz), as README "Running several instances" describes. Installs
# Debian's haproxy when it is missing. `scripts/cluster.sh --check` runs the cluster checks
# (what CI runs from scripts/e2e.sh) instead of waiting for Ctrl-C; `--redis` adds a
# redis-server (Debian's, installed when missing) and gives the instances NB_REDIS_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v haproxy >/dev/null 2>&1; then
  echo "cluster: installing Debian's haproxy" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi
if [[ " $* " == *" --redis "* ]] && ! command -v redis-server >/dev/null 2>&1; then
  echo "cluster: installing Debian's redis-server" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  as_root service redis-server stop >/dev/null 2>&1 || true
fi
cargo build --locked --quiet --bin nanobanana
cargo build --locked --quiet -p nb-storage --features testing --example s3-test-server
cargo build --locked --quiet -p nb-bench --bin fake-google
exec python3 scripts/cluster.py "$@"

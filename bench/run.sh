#!/usr/bin/env bash
# `just bench`: builds the release binaries, installs the load generator (oha, from crates.io)
# and redis-server if missing, starts a durable throwaway PostgreSQL, and runs bench/bench.py
# (which starts the fake Google and a throwaway redis-server). Arguments:
# --peer DIR (also run the Python reference design in DIR through the same scenarios; `--peer`
# alone reads DIR from NB_BENCH_PEER), --quick (shorter runs).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v oha >/dev/null; then
  echo "[bench] installing oha 1.16.0 (once)" >&2
  cargo install oha --version 1.16.0 --locked --quiet
fi
if ! command -v redis-server >/dev/null; then
  echo "[bench] installing Debian's redis-server (once)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  service redis-server stop >/dev/null 2>&1 || true
fi
cargo build --release --locked --quiet -p nb-storage --features testing --example s3-test-server
cargo build --release --locked --quiet -p nanobanana --bin nanobanana
cargo build --release --locked --quiet -p nb-bench --bin fake-google --bin floor --bin convert-floor

# 10,000 connections in, as many out to the fake, and the load generator's own.
# (root may raise the hard limit; everyone else gets theirs).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(id -u)" -eq 0 ]; then
  sysctl -qw net.core.somaxconn=16384 net.ipv4.tcp_max_syn_backlog=16384 2>/dev/null || true
fi

unset TEST_DATABASE_URL
source scripts/pg.sh
PG_DURABLE=1 start_throwaway_postgres
python3 bench/bench.py target/release/nanobanana target/release/fake-google target/release/floor \
  target/release/examples/s3-test-server "$@"

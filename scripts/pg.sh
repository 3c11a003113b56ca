# A throwaway PostgreSQL cluster, for scripts/test.sh and bench/run.sh (sourced, not run).
# start_throwaway_postgres installs Debian's postgresql if initdb/pg_ctl are missing, starts a
# cluster on a free loopback port in a temp folder as the postgres user (initdb refuses root),
# exports TEST_DATABASE_URL, and stops and deletes it when the calling script exits.

log() { printf '[pg.sh] %s\n' "$*" >&2; }

find_pg_bin() {
  local candidate
  for candidate in "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")" \
    /usr/lib/postgresql/*/bin; do
    if [ -x "$candidate/initdb" ] && [ -x "$candidate/pg_ctl" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_postgres() {
  log "PostgreSQL's server is not installed: installing Debian's postgresql package"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_throwaway_postgres() {
  local pg_bin
  pg_bin=$(find_pg_bin) || { install_postgres; pg_bin=$(find_pg_bin); }
  PG_WORKDIR=$(mktemp -d /tmp/nb-test-pg.XXXXXX)
  local port run_as=()
  port=$(free_port)
  # initdb refuses to run as root: run the cluster as the machine's postgres user.
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PG_WORKDIR"
    run_as=(runuser -u postgres --)
  fi
  PG_CTL=("${run_as[@]}" "$pg_bin/pg_ctl" -D "$PG_WORKDIR/data")
  "${run_as[@]}" "$pg_bin/initdb" -D "$PG_WORKDIR/data" -U postgres -A trust -E UTF8 \
    --no-sync >"$PG_WORKDIR/initdb.log" 2>&1 || { cat "$PG_WORKDIR/initdb.log" >&2; exit 1; }
  # Durability is pointless for a throwaway test cluster; speed is not. The benchmark asks for
  # a durable one (PG_DURABLE=1), like a production server.
  local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  if [ "${PG_DURABLE:-0}" = 1 ]; then durability=""; fi
  "${PG_CTL[@]}" -l "$PG_WORKDIR/server.log" -w -t 60 start -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $PG_WORKDIR -c max_connections=400 $durability" \
    >/dev/null \
    || { cat "$PG_WORKDIR/server.log" >&2; exit 1; }
  trap stop_throwaway_postgres EXIT
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  log "throwaway PostgreSQL on 127.0.0.1:$port ($PG_WORKDIR)"
}

stop_throwaway_postgres() {
  "${PG_CTL[@]}" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_WORKDIR"
}


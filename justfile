# NanoBanana's everyday commands. `just` is optional: each recipe is one plain command.

default: run

# The server on the embedded default: SQLite and local disk under ./data, no other service.
run:
    cargo run --release --bin nanobanana

# Every test, with a throwaway PostgreSQL started (and stopped) by the script.
test *ARGS:
    ./scripts/test.sh {{ARGS}}

# The real binary end to end: register, log in, create a key, generate (fake Google), fetch
# the image, with local disk and with S3.
e2e:
    ./scripts/e2e.sh

# Three instances behind HAProxy on PostgreSQL and S3 (Ctrl-C stops): `just cluster`,
# or `just cluster --check` for the checks CI runs.
cluster *ARGS:
    ./scripts/cluster.sh {{ARGS}}

# The benchmark (bench/run.sh): `just bench`, `just bench --peer`, `just bench --quick`.
bench *ARGS:
    ./bench/run.sh {{ARGS}}

# What CI runs: fmt, clippy, then every test.
ci:
    bash .ci/run

# PostgreSQL, MinIO and the app in containers (needs Docker; JWT_SECRET must be set).
dev:
    docker compose up --build

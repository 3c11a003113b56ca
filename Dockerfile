# syntax=docker/dockerfile:1
# A small image (distroless, ~30 MB) running `nanobanana` as a non-root user.

FROM rust:1.95-slim-bookworm AS build
# jemalloc (the server's allocator) is built from source with make; the slim image has gcc only.
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin nanobanana \
    && mkdir -p /out/data \
    && cp target/release/nanobanana /out/nanobanana

# C runtime, CA certificates and a `nonroot` user (uid 65532); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/nanobanana /usr/local/bin/nanobanana
COPY --from=build --chown=65532:65532 /out/data /var/lib/nanobanana
USER nonroot
WORKDIR /var/lib/nanobanana
ENV NB_LISTEN=0.0.0.0:8000 \
    NB_DATA_DIR=/var/lib/nanobanana
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/nanobanana", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/nanobanana"]

# syntax=docker/dockerfile:1
# A small image running `nanobanana` as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin nanobanana

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/nanobanana --create-home nanobanana
COPY --from=build /src/target/release/nanobanana /usr/local/bin/nanobanana
USER nanobanana
WORKDIR /var/lib/nanobanana
ENV NB_LISTEN=0.0.0.0:8000 \
    NB_DATA_DIR=/var/lib/nanobanana
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/nanobanana"]

# The weathervane image: one binary, run as a non-root user; docker-compose.yml picks the
# role of each container by its command (streamer, ingester, processor, api).
#
#   docker build -t weathervane .
#       builds the binary in a Rust stage (needs crates.io) and copies it into the runtime.
#       The image carries the product only: the roles and `up`, not the lab tools (gen,
#       replay, bench, verify; cargo feature `lab`).
#   cargo build --release --locked -p weathervane --no-default-features && docker build --target prebuilt -t weathervane .
#       skips the Rust stage and copies a binary built on the host (a glibc build for the
#       runtime's Debian release or older); --build-arg WEATHERVANE_BINARY=PATH takes
#       another one from the build context.
#   --build-arg RUNTIME_IMAGE=IMAGE   the runtime base (default debian:bookworm-slim)
#   --build-arg RUST_IMAGE=IMAGE      the builder (default rust:1-bookworm)
#
# Stages are ordered so that `--target prebuilt` never reaches the Rust stage, with
# BuildKit and with the legacy builder (which docker-compose v1 uses) alike.

ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

# What both final stages share: the user, its writable home (the streamer's state and
# rejects files, the api's exports/; docker-compose.yml mounts volumes there) and the defaults for a
# container.
FROM ${RUNTIME_IMAGE} AS runtime
# The CA bundle: https:// and rediss:// trust the system's CAs unless told otherwise, and
# the roles' TLS client does not even start without one, http:// or not.
# debian:bookworm-slim has none; a base that has it (scripts/docker-base) is left as is.
RUN if [ ! -e /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update && \
        apt-get install -y --no-install-recommends ca-certificates && \
        rm -rf /var/lib/apt/lists/*; \
    fi
RUN useradd --system --user-group --uid 10001 --create-home \
        --home-dir /var/lib/weathervane --shell /usr/sbin/nologin weathervane && \
    install -d -o weathervane -g weathervane /var/lib/weathervane/exports /inbox
WORKDIR /var/lib/weathervane
ENV API_ADDR=0.0.0.0:9000 \
    WEATHERVANE_REJECTS=/var/lib/weathervane/rejects.csv \
    WEATHERVANE_STATE_FILE=/var/lib/weathervane/streamer.state
USER weathervane
# The api, and the streamer's tus uploads (--upload-addr; /inbox, owned by the user, is
# where a compose volume mounted there starts from).
EXPOSE 9000 9200
ENTRYPOINT ["weathervane"]
CMD ["--help"]

# A binary built outside (the container test builds one without the lab feature).
FROM runtime AS prebuilt
ARG WEATHERVANE_BINARY=target/release/weathervane
COPY ${WEATHERVANE_BINARY} /usr/local/bin/weathervane
RUN ["weathervane", "--version"]

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weathervane --no-default-features

# The default target: the binary from the Rust stage.
FROM runtime AS release
COPY --from=builder /src/target/release/weathervane /usr/local/bin/weathervane
RUN ["weathervane", "--version"]

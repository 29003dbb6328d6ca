# One image for every simcorp service: `simcorp serve <service>` selects the service
# (compose/docker-compose.yml does so for each), `simcorp up` runs them all.
#
#   docker build -t simcorp .
#
# Build stage: the workspace, compiled in release mode. Cargo's registry and target directory
# are cache mounts so that rebuilds only compile what changed.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p simcorp \
 && cp target/release/simcorp /usr/local/bin/simcorp

# Runtime stage: the binary and CA certificates, running as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/simcorp --create-home simcorp
COPY --from=build /usr/local/bin/simcorp /usr/local/bin/simcorp
USER simcorp
WORKDIR /var/lib/simcorp
ENV SIMCORP_DATA_DIR=/var/lib/simcorp
# The services' ports (crates/simcorp/src/registry.rs); a container publishes its own.
EXPOSE 4001 4002 4003
# The SQLite fallback must survive container restarts: mount a volume here.
VOLUME /var/lib/simcorp
# SIMCORP_HEALTH_PORT: the port of the service this container runs (compose sets it).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:${SIMCORP_HEALTH_PORT:-4001}/health || exit 1
# SIGTERM (docker stop) drains: the service writes and acknowledges what it received.
STOPSIGNAL SIGTERM
ENTRYPOINT ["simcorp"]
CMD ["serve", "ingestion"]

# api and worker in one image: `api` or `worker` as the command.
#
#   docker build -t coupon-service .
#   docker build --build-arg BUILDER_IMAGE=coupon-local/rust:1.95-bookworm \
#     --build-arg RUNTIME_IMAGE=coupon-local/debian:bookworm -t coupon-service .   # local stand-ins
#
# The dependencies are compiled in a layer of their own (cargo-chef), keyed on
# the manifests and Cargo.lock only: a change to the service's source
# recompiles the workspace crates, not the dependencies. Plain layers, so the
# legacy builder (docker-compose v1) caches them as BuildKit does.
ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS chef
# Pinned, so that every build, cached or fresh, uses the same cargo-chef.
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The recipe: the workspace's manifests and Cargo.lock with the sources
# stubbed out. It is byte-for-byte the same after an edit to any .rs file,
# so the cook layer below stays cached.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# The same packages, profile and flags as the build below, so that build
# finds every dependency fresh. librdkafka is built from source here and
# linked statically.
RUN cargo chef cook --release --locked -p api -p worker --recipe-path recipe.json
# Only what the build reads, so edits elsewhere keep the build cached.
COPY Cargo.toml Cargo.lock ./
COPY migrations migrations
COPY common common
COPY ops ops
COPY api api
COPY worker worker
COPY bench bench
COPY testkit testkit
RUN cargo build --release --locked -p api -p worker \
 && install -m 0755 target/release/api target/release/worker /usr/local/bin/
# The release profile keeps line tables for local profiling; the image does not.
RUN strip /usr/local/bin/api /usr/local/bin/worker

FROM ${RUNTIME_IMAGE}
# curl for the health check; zlib for librdkafka.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home coupon
COPY --from=build /usr/local/bin/api /usr/local/bin/worker /usr/local/bin/
USER coupon
ENV API_PORT=9090 WORKER_PORT=8081 LOG_FORMAT=json
EXPOSE 9090 8081
# /health of whichever binary runs (api on API_PORT, worker on WORKER_PORT).
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=12 \
  CMD curl -fsS "http://127.0.0.1:${API_PORT}/health" >/dev/null 2>&1 \
   || curl -fsS "http://127.0.0.1:${WORKER_PORT}/health" >/dev/null || exit 1
CMD ["api"]

# api and worker in one image: `api` or `worker` as the command.
#
#   docker build -t coupon-service .
#   docker build --build-arg BUILDER_IMAGE=coupon-local/rust:1.95-bookworm \
#     --build-arg RUNTIME_IMAGE=coupon-local/debian:bookworm -t coupon-service .   # local stand-ins
ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
# Only what the build reads, so edits elsewhere keep the build cached.
COPY Cargo.toml Cargo.lock ./
COPY migrations migrations
COPY common common
COPY ops ops
COPY api api
COPY worker worker
COPY bench bench
COPY testkit testkit
# librdkafka is built from source and linked statically.
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

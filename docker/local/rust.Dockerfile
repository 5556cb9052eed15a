# Stand-in for the official rust image where none can be pulled: the host's
# Rust toolchain (copied into the build context by scripts/images.sh) on
# Debian bookworm, with what the service's build needs (a C toolchain for
# librdkafka and zlib).
ARG BASE_IMAGE=coupon-local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gcc g++ make perl pkg-config \
      libc6-dev zlib1g-dev git curl \
 && rm -rf /var/lib/apt/lists/*
# The host's CA bundle: crates.io may be reached through a TLS proxy.
COPY host-ca.crt /etc/ssl/certs/ca-certificates.crt
COPY toolchain /usr/local/rust
ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:$PATH CARGO_HOME=/usr/local/cargo
RUN rustc --version && cargo --version

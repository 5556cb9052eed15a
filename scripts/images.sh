#!/usr/bin/env bash
# Builds local stand-ins for the official images the container path uses,
# for machines with a Docker engine that cannot pull from a registry:
#
#   coupon-local/debian:bookworm   Debian bookworm root (debootstrap + docker import)
#   coupon-local/mysql:8.0         MariaDB 10.11 with mysql:8.0's environment contract
#   coupon-local/redis:7           Redis 7.0 from Debian, run like redis:7
#   coupon-local/kafka:3.8.0       the Kafka-compatible broker nisshi, run like apache/kafka:3.8.0
#   coupon-local/rust:1.95-bookworm  this machine's Rust toolchain, for the Dockerfile's build stages
#
# Idempotent: an image that exists is kept (FORCE=1 rebuilds). Needs root for
# debootstrap. `scripts/test.sh --containers` and `scripts/compose-check.sh`
# call it and use these names when the official images are absent.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT_DIR"

docker_available || die "no Docker engine answers (docker info failed); install and start one, or set DOCKER_HOST"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

have() { [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$1" >/dev/null 2>&1; }

build() { # build NAME DOCKERFILE: context is $context
  log "building $1"
  docker build -t "$1" -f "$context/$2" --build-arg BASE_IMAGE="$LOCAL_BASE_IMAGE" "$context" \
    >"$context/build.log" 2>&1 || { tail -30 "$context/build.log" >&2; die "building $1 failed"; }
}

cp docker/local/* "$context/"

if ! have "$LOCAL_BASE_IMAGE"; then
  command -v debootstrap >/dev/null || apt_install debootstrap
  log "building $LOCAL_BASE_IMAGE with debootstrap (about a minute)"
  root="$context/rootfs"
  as_root debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
  # apt inside `docker build` uses the host's sources (its mirror or proxy).
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    as_root rm -f "$root/etc/apt/sources.list"
    as_root cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
  fi
  as_root rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  as_root tar -C "$root" -c . | docker import \
    -c 'ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8' -c 'CMD ["bash"]' - "$LOCAL_BASE_IMAGE" >/dev/null
  as_root rm -rf "$root"
fi

have "$LOCAL_MYSQL_IMAGE" || build "$LOCAL_MYSQL_IMAGE" mysql.Dockerfile
have "$LOCAL_REDIS_IMAGE" || build "$LOCAL_REDIS_IMAGE" redis.Dockerfile

if [[ "${WITH_RUST:-1}" == 1 ]] && ! have "$LOCAL_RUST_IMAGE"; then
  toolchain=$(dirname "$(dirname "$(rustup which rustc 2>/dev/null || command -v rustc)")")
  log "copying the Rust toolchain $toolchain into $LOCAL_RUST_IMAGE"
  mkdir -p "$context/toolchain"
  cp -a "$toolchain/bin" "$toolchain/lib" "$context/toolchain/"
  [[ -d "$toolchain/libexec" ]] && cp -a "$toolchain/libexec" "$context/toolchain/"
  cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$context/host-ca.crt"
  build "$LOCAL_RUST_IMAGE" rust.Dockerfile
fi

if ! have "$LOCAL_KAFKA_IMAGE"; then
  install_nisshi
  cp "$NISSHI_BIN" "$context/nisshi"
  build "$LOCAL_KAFKA_IMAGE" kafka.Dockerfile
fi

log "local images:"
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^coupon-local/' | sed 's/^/  /' >&2 || true

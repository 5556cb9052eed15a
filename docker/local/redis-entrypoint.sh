#!/bin/bash
# Like the official image: without a config file, turn protected mode off so
# clients on other hosts (the Docker bridge) are served.
set -e
if [[ "${1:-}" == redis-server ]]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"

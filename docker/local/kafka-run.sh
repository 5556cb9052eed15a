#!/bin/bash
# Starts nisshi on the first listener of KAFKA_ADVERTISED_LISTENERS, on the
# container port KAFKA_LISTENERS gives that listener (default 9092).
set -euo pipefail
advertised="${KAFKA_ADVERTISED_LISTENERS:-PLAINTEXT://localhost:9092}"
first="${advertised%%,*}"
name="${first%%://*}"
address="${first#*://}"
port=9092
IFS=, read -ra listeners <<<"${KAFKA_LISTENERS:-}"
for l in "${listeners[@]}"; do
  if [[ "${l%%://*}" == "$name" ]]; then port="${l##*:}"; fi
done
echo "127.0.0.1:$port" >/tmp/listener
cd /var/lib/kafka/data
nisshi broker --listener-url "tcp://0.0.0.0:$port" \
  --advertised-listener-url "tcp://$address" \
  --storage-engine "sqlite://nisshi.db" &
pid=$!
trap 'kill -TERM $pid; wait $pid' TERM INT
for _ in $(seq 1 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "[KafkaServer id=1] Kafka Server started (nisshi on :$port, advertised as $address)"
    break
  fi
  sleep 0.1
done
wait $pid

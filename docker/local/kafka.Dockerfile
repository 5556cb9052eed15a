# Stand-in for apache/kafka:3.8.0 where no registry image can be pulled: the
# Kafka-compatible broker nisshi, behind the parts of the official image's
# contract the service uses: the KAFKA_LISTENERS / KAFKA_ADVERTISED_LISTENERS
# environment, /etc/kafka/docker/run (which prints "Kafka Server started"),
# /opt/kafka/bin/kafka-broker-api-versions.sh for health checks, data in
# /var/lib/kafka/data, /opt/kafka writable by its user (testcontainers' Kafka
# module writes its start script there). One broker serves the *first*
# advertised listener.
ARG BASE_IMAGE=coupon-local/debian:bookworm
FROM ${BASE_IMAGE}
COPY nisshi /usr/local/bin/nisshi
COPY kafka-run.sh /etc/kafka/docker/run
COPY kafka-health.sh /opt/kafka/bin/kafka-broker-api-versions.sh
RUN useradd --system --uid 1000 --home-dir /var/lib/kafka appuser \
 && mkdir -p /var/lib/kafka/data && chown -R appuser /var/lib/kafka /opt/kafka
USER appuser
VOLUME /var/lib/kafka/data
EXPOSE 9092
CMD ["/etc/kafka/docker/run"]

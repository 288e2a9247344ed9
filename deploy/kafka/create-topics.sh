#!/usr/bin/env bash
# Creates the event topics and their dead-letter topics `<topic>.dlq`; safe to run again
# (existing topics are left as they are). Used by the compose one-shot `kafka-init`, and
# works against any cluster from a machine with the Kafka CLI:
#   BOOTSTRAP_SERVER    host:port of a broker listener             (default kafka:9092)
#   TOPICS              space-separated main topics                (default: the three of SPEC section 4)
#   PARTITIONS          partitions of each main topic              (default 6)
#   DLQ_PARTITIONS      partitions of each <topic>.dlq             (default 1)
#   REPLICATION_FACTOR  replicas of every topic                    (default 1: one-node cluster)
#   DLQ_RETENTION_MS    how long dead letters are kept             (default 30 days)
#   MAIN_RETENTION_MS   how long the main topics keep events       (default: the broker's, 7 days
#                       in Apache Kafka; -1 keeps them for ever, so `crm|cem replay` can rebuild
#                       the projections from the first event, while erased customers' old
#                       events stay on the broker as long)
#   TOPICS_TOOL         the kafka-topics CLI                       (default /opt/kafka/bin/kafka-topics.sh)
set -euo pipefail

BOOTSTRAP_SERVER="${BOOTSTRAP_SERVER:-kafka:9092}"
TOPICS="${TOPICS:-crm.customers.v1 cx.interactions.v1 cem.feedback.v1}"
PARTITIONS="${PARTITIONS:-6}"
DLQ_PARTITIONS="${DLQ_PARTITIONS:-1}"
REPLICATION_FACTOR="${REPLICATION_FACTOR:-1}"
DLQ_RETENTION_MS="${DLQ_RETENTION_MS:-2592000000}"
MAIN_RETENTION_MS="${MAIN_RETENTION_MS:-}"
TOPICS_TOOL="${TOPICS_TOOL:-/opt/kafka/bin/kafka-topics.sh}"

create_topic() {
  local topic="$1" partitions="$2"
  shift 2
  "$TOPICS_TOOL" --bootstrap-server "$BOOTSTRAP_SERVER" --create --if-not-exists \
    --topic "$topic" --partitions "$partitions" --replication-factor "$REPLICATION_FACTOR" "$@"
}

main_config=()
if [ -n "$MAIN_RETENTION_MS" ]; then
  main_config=(--config "retention.ms=$MAIN_RETENTION_MS")
fi

for topic in $TOPICS; do
  create_topic "$topic" "$PARTITIONS" "${main_config[@]}"
  create_topic "$topic.dlq" "$DLQ_PARTITIONS" --config "retention.ms=$DLQ_RETENTION_MS"
done

"$TOPICS_TOOL" --bootstrap-server "$BOOTSTRAP_SERVER" --list

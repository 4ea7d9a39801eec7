"""The Kafka source (DESIGN 5.2): ``KafkaIngest`` consumes ``resume.events`` and
``resume.waits`` into the store, dead-letters what it cannot take, and pauses when the store
falls behind."""

from gateway.ingest.kafka.consumer import KafkaIngest
from gateway.ingest.kafka.decode import KAFKA_SOURCE

__all__ = ["KAFKA_SOURCE", "KafkaIngest"]

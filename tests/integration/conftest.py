"""Integration fixtures: the Kafka broker (``tests/kafka_broker.py``)."""

from tests.kafka_broker import kafka, moto_s3

__all__ = ["kafka", "moto_s3"]

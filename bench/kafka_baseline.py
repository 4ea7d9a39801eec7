"""``python -m bench.kafka_baseline``: the raw consumer the gateway's Kafka intake is compared
with. It reads the same topic in a consumer group with manual commits, as the gateway does,
and does the least a real consumer must: ``json.loads`` each value and commit after every
fetch. It exits once it has read ``--count`` records."""

from __future__ import annotations

import argparse
import asyncio
import json

from aiokafka import AIOKafkaConsumer

from bench.kafka_config import CONSUMER_OPTIONS


async def consume(bootstrap: str, topic: str, group: str, count: int, max_records: int) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, **CONSUMER_OPTIONS
    )
    await consumer.start()
    seen = 0
    try:
        while seen < count:
            fetched = await consumer.getmany(timeout_ms=100, max_records=max_records)
            for records in fetched.values():
                for record in records:
                    json.loads(record.value)
                seen += len(records)
            if fetched:
                await consumer.commit()
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_baseline")
    for name in ("--bootstrap", "--topic", "--group"):
        parser.add_argument(name, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--max-records", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(consume(args.bootstrap, args.topic, args.group, args.count, args.max_records))


if __name__ == "__main__":
    main()

"""``python -m bench.kafka_work``: the gateway's own work on Kafka batches, in one process.

What the Kafka intake does with a fetched batch once aiokafka has handed it over: decode every
record (``Decoder``) and ingest the batch in one store transaction (``Ingest.ingest_batch``,
SQLite with ``synchronous = full``), half of the events matching a wait registered
beforehand. No broker: the instructions scenario runs this under callgrind to count that work
alone. Driven over stdin/stdout so that counting covers only the measured part: it prints
``ready`` once set up, runs the batches when it reads a line, prints ``done``, and exits at
the next line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bench.kafka import TENANT, events
from bench.kafka_config import MAX_BATCH_RECORDS, PARTITIONS
from gateway.cli import settle_gc
from gateway.config.settings import IngestSettings
from gateway.ingest.kafka.decode import Decoder
from gateway.ingest.kafka.rawbatch import RawRecord
from gateway.ingest.service import Ingest
from gateway.logs import configure_logging
from gateway.metrics import Metrics
from gateway.security.redact import Redactor
from gateway.security.tokens import SealedToken, TokenCipher
from gateway.store.records import NewWait
from gateway.store.sqlite import SQLiteStore

TOPIC = "resume.events"
NOW = 1_700_000_000.0
WAIT_S = 3600.0
MAX_MESSAGE_BYTES = 1 << 20


async def run(db: Path, count: int) -> None:
    store = SQLiteStore(str(db))
    await store.open()
    try:
        ingest = Ingest(
            store,
            TokenCipher([("k", bytes(32))]),
            IngestSettings(),
            lambda: NOW,
            Metrics(),
            on_match=lambda _tenant: None,
        )
        sealed = SealedToken("k", bytes(60))
        waits = [
            NewWait(TENANT, f"m-{n}", f"digest-{n}", sealed, NOW + WAIT_S, None, None)
            for n in range(count // 2)
        ]
        await store.ingest_batch(waits, [], NOW)
        records = [
            RawRecord(TOPIC, i % PARTITIONS, i, 0, key, value, [])
            for i, (key, value) in enumerate(events(0, count))
        ]
        decoder = Decoder(ingest, frozenset({TENANT}), TOPIC, "resume.waits", MAX_MESSAGE_BYTES)
        settle_gc()  # as a serving gateway does once started
        _say("ready")
        sys.stdin.readline()
        for at in range(0, count, MAX_BATCH_RECORDS):
            batch = decoder.batch(records[at : at + MAX_BATCH_RECORDS], NOW)
            await ingest.ingest_batch([], [event for _, event in batch.events])
        _say("done")
        sys.stdin.readline()
    finally:
        await store.close()


def _say(word: str) -> None:
    print(word, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_work")
    parser.add_argument("--db", required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args()
    configure_logging("json", "warning", Redactor([]), final=True)  # as the bench's gateway
    asyncio.run(run(Path(args.db), args.events))


if __name__ == "__main__":
    main()

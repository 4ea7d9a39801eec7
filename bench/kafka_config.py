"""The consumer settings both sides of the Kafka scenario share (Tansu's quirks: short group
timeouts so that a join takes about a second; start from the earliest offset)."""

from __future__ import annotations

from typing import Any

SESSION_TIMEOUT_S = 2.0
HEARTBEAT_INTERVAL_S = 0.3
MAX_BATCH_RECORDS = 1000
PARTITIONS = 4

CONSUMER_OPTIONS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "session_timeout_ms": int(SESSION_TIMEOUT_S * 1000),
    "heartbeat_interval_ms": int(HEARTBEAT_INTERVAL_S * 1000),
}

"""How stored records look on the wire. Tokens are not in the records, so cannot be here."""

from __future__ import annotations

import json
from typing import Any

from gateway.clock import isoformat
from gateway.store.records import DeliveryView, WaitView, WatchView


def wait_json(wait: WaitView) -> dict[str, Any]:
    return {
        "key": wait.key,
        "state": wait.state,
        "created_at": isoformat(wait.created_at),
        "expires_at": isoformat(wait.expires_at),
        "resolved_at": isoformat(wait.resolved_at),
        "job": json.loads(wait.job_json) if wait.job_json else None,
        "metadata": json.loads(wait.metadata_json) if wait.metadata_json else None,
        "event": {"id": wait.event_id, "source": wait.source} if wait.event_id else None,
        "delivery": delivery_json(wait.delivery) if wait.delivery else None,
        "watch": watch_json(wait.watch) if wait.watch else None,
    }


def watch_json(watch: WatchView) -> dict[str, Any]:
    return {
        "kind": watch.kind,
        "connection": watch.connection,
        "state": watch.state,
        "job_status": watch.job_status,
        "progress": watch.progress,
        "polls": watch.polls,
        "last_error": watch.last_error,
        "updated_at": isoformat(watch.updated_at),
    }


def delivery_json(delivery: DeliveryView) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "next_attempt_at": isoformat(delivery.next_attempt_at)
        if delivery.state == "pending"
        else None,
        "reason": delivery.reason,
        "last_status": delivery.last_status,
        "finished_at": isoformat(delivery.finished_at),
    }

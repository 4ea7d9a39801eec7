"""aiokafka connection options from ``[kafka]``: bootstrap servers, SASL and TLS in one place,
shared by the consumer, the dead-letter producer and the outcomes publisher."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.helpers import create_ssl_context

from gateway.config.kafka import KafkaSettings


def connection_options(settings: KafkaSettings, role: str) -> dict[str, Any]:
    """Keyword arguments every aiokafka client of the gateway takes; ``role`` names the client
    in the broker's logs (``resume-gateway-consumer`` ...)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.client_id}-{role}",
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
        )
    if settings.sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        password = settings.sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def ms(seconds: float) -> int:
    """aiokafka counts in milliseconds; the settings, in seconds."""
    return max(1, round(seconds * 1000))


async def close_consumer(consumer: Any) -> None:
    """``consumer.stop()``, surviving an aiokafka 0.14 bug.

    With the broker down, the fetcher's ``close`` cancels a fetch task that is backing off after
    a connection error and then re-raises that task's ``CancelledError``, leaving the client
    open. Such a cancellation is not ours (our task is not being cancelled): the rest of the
    close is done here. A real cancellation of the caller still propagates.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        pending = list(consumer._fetcher._pending_tasks)
        for fetch in pending:
            fetch.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await consumer._client.close()

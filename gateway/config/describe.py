"""What ``check-config`` prints: the effective settings, secrets masked, and what they mean."""

from __future__ import annotations

import json

from gateway.config.kafka import KafkaSettings
from gateway.config.settings import Settings
from gateway.config.sources import HmacSha256Verify, SourceSettings
from gateway.security.redact import without_url_credentials


def describe(settings: Settings) -> str:
    lines = ["configuration is valid.", ""]
    server = settings.server
    lines.append(f"listen on      http://{server.host}:{server.port} (env: {settings.env})")
    lines.append(f"store          {settings.store.url}")
    keys = ", ".join(k.id for k in settings.security.token_keys)
    lines.append(
        f"token keys     {keys} (first one encrypts)"
        if keys
        else "token keys     none: `run` needs one (only `dev` makes its own)"
    )
    lines.append(_blobs_line(settings))
    for t in settings.tenants:
        auth = "api token" if t.api_token else f"legacy email {t.email}"
        lines.append(
            f"tenant {t.name:<8} POST {t.resolved_base_url}/api/job/resume with {auth}, "
            f"<= {t.rate_limit_per_minute}/min, {len(t.api_keys)} API key(s)"
            + (", raw mode" if t.raw_mode else "")
        )
    lines += [_source_line(s) for s in settings.sources]
    lines += [
        f"connection {c.name:<4} polls {c.kind} at {c.root} every {c.poll_interval_s:g} s"
        for c in settings.connections
    ]
    if settings.kafka.enabled:
        lines.append(_kafka_line(settings.kafka))
    if settings.security.admin_tokens:  # accepted for what is to come: say that it does nothing
        lines.append(
            f"admin tokens   {len(settings.security.admin_tokens)}, unused: this version serves "
            "no operators' API (DESIGN 5.1's /v1/admin)"
        )
    lines += ["", "effective settings (secrets masked):"]
    lines.append(json.dumps(settings.model_dump(mode="json"), indent=2))
    return without_url_credentials("\n".join(lines))


def _blobs_line(settings: Settings) -> str:
    blobs, ingest = settings.blobs, settings.ingest
    base = blobs.public_base_url or f"http://{settings.server.host}:{settings.server.port}"
    urls = (
        "S3 presigned URLs (at most 7 days: may expire before a long wait)"
        if blobs.presign
        else f"URLs under {base}/v1/blobs"
    )
    signing = ", ".join(k.id for k in settings.security.url_keys) or "derived from token keys"
    return (
        f"claim checks   blobs in {blobs.url}, {urls} (keys: {signing}), valid until the "
        f"wait's expiry + {blobs.url_grace_s:g} s; bodies over {ingest.spool_threshold_bytes} "
        f"bytes spooled to {ingest.spool_dir}"
    )


def _source_line(source: SourceSettings) -> str:
    verify = source.verify
    how: str = verify.scheme
    if isinstance(verify, HmacSha256Verify):
        how = f"hmac_sha256 in {verify.header}"
    elif verify.scheme == "none":
        how = "NO verification"
    return (
        f"source {source.name:<8} POST /v1/hooks/{source.name} → tenant {source.tenant}, "
        f"{how}, key at {source.mapping.key or '(whole body)'}"
    )


def _kafka_line(kafka: KafkaSettings) -> str:
    servers = ", ".join(kafka.bootstrap_servers)
    outcomes = f"; outcomes → {kafka.outcomes_topic}" if kafka.outcomes_topic else ""
    return (
        f"kafka          consume {' + '.join(kafka.topics)} from {servers}"
        f" as group {kafka.group_id} ({kafka.security_protocol}); dead letters → {kafka.dlq_topic}"
        + outcomes
    )

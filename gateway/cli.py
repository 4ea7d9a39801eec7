"""``resume-gateway`` command line: a thin shell over the composition root."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.config import Settings, load_settings
from gateway.errors import ConfigError, GatewayError
from gateway.logs import configure_logging
from gateway.security.redact import Redactor

DEFAULT_CONFIG = "gateway.toml"
DESCRIPTION = """Wakes suspended Workato jobs: takes wait registrations, correlates completion
events (HTTP, webhooks, Kafka, polled job APIs) with them, and calls Workato's resume endpoint
exactly once, within the rate limit. Start with 'resume-gateway dev' (a gateway, a Workato
sandbox and a sample configuration in one process)."""
GC_YOUNG_THRESHOLD = 5_000
"""Allocations between young collections (CPython's default is 700). Every request and record
allocates dozens of short-lived objects; collecting them seven times less often cut the
instructions per ingested event by about 4 % (``python -m bench --only instructions``)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.command(args) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resume-gateway", description=DESCRIPTION)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the gateway")
    _config_arg(run)
    run.set_defaults(command=_run)
    dev = sub.add_parser("dev", help="gateway + Workato sandbox + sample config, data in ./.data")
    dev.add_argument("--port", type=int, default=8080, help="the gateway's port (default 8080)")
    dev.add_argument(
        "--sandbox-port", type=int, default=8081, help="the Workato sandbox's port (default 8081)"
    )
    dev.add_argument(
        "--data-dir",
        default=".data",
        help="SQLite, blobs and the dev token key (default .data; one dev each)",
    )
    dev.add_argument("--kafka", action="store_true", help="also run a local Kafka broker")
    dev.add_argument(
        "--kafka-port", type=int, default=9092, help="the local broker's port (default 9092)"
    )
    dev.set_defaults(command=_dev)
    _publish_parser(sub)
    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    _config_arg(migrate)
    migrate.set_defaults(command=_migrate)
    check = sub.add_parser("check-config", help="validate a config file, print it masked")
    check.add_argument(
        "file", nargs="?", default=None, help="default: $RESUME_GATEWAY_CONFIG or gateway.toml"
    )
    check.set_defaults(command=_check_config)
    sandbox = sub.add_parser("sandbox", help="run an emulator of a third-party API")
    sandbox.add_argument("kind", choices=["workato", "alteryx", "pixxel"])
    sandbox.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)"
    )
    sandbox.add_argument(
        "--port", type=int, default=8081, help="the port to listen on (default 8081)"
    )
    sandbox.add_argument(
        "--api-token",
        action="append",
        default=[],
        dest="api_tokens",
        help="workato: an API token it accepts (repeatable; default sandbox-token)",
    )
    sandbox.add_argument(
        "--rate-limit-per-minute",
        type=int,
        default=60,
        help="workato: resumes per token (default 60)",
    )
    sandbox.add_argument(
        "--client-id",
        default="sandbox-client",
        help="alteryx: OAuth2 client (default sandbox-client)",
    )
    sandbox.add_argument(
        "--client-secret",
        default="sandbox-secret",
        help="alteryx: its secret (default sandbox-secret)",
    )
    sandbox.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        help="pixxel: an API key it accepts (repeatable; default sandbox-api-key)",
    )
    sandbox.set_defaults(command=_sandbox)
    schemas = sub.add_parser("schemas", help="write or check the published JSON Schemas")
    schemas.add_argument("--write", metavar="DIR")
    schemas.add_argument("--check", metavar="DIR")
    schemas.set_defaults(command=_schemas)
    return parser


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=_default_config(),
        help="TOML file (default: $RESUME_GATEWAY_CONFIG or gateway.toml)",
    )


def _default_config() -> str:
    return os.environ.get("RESUME_GATEWAY_CONFIG", DEFAULT_CONFIG)


def _settings(path: str | None) -> Settings:
    file = Path(path) if path else None
    if file is not None and not file.exists() and path == DEFAULT_CONFIG:
        file = None  # no file: environment and defaults only
    return load_settings(file, os.environ)


def _redactor(settings: Settings) -> Redactor:
    secrets = [k.get_secret_value() for t in settings.tenants for k in t.api_keys]
    secrets += [s.get_secret_value() for t in settings.tenants for s in (t.api_token, t.token) if s]
    secrets += [s.get_secret_value() for s in settings.security.admin_tokens]
    secrets += [k.key.get_secret_value() for k in settings.security.token_keys]
    secrets += [k.key.get_secret_value() for k in settings.security.url_keys]
    blobs = settings.blobs
    secrets += [s.get_secret_value() for s in (blobs.s3_secret_access_key,) if s]
    if settings.kafka.sasl_password is not None:
        secrets.append(settings.kafka.sasl_password.get_secret_value())
    secrets += [v for source in settings.sources for v in source.verify.secret_values()]
    secrets += [v for connection in settings.connections for v in connection.secret_values()]
    return Redactor(secrets)


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    if not settings.security.token_keys:  # dev settings may omit them: only `dev` makes one
        raise ConfigError("security.token_keys: `run` needs at least one (`dev` makes its own)")
    configure_logging(
        settings.logging.format, settings.logging.level, _redactor(settings), final=True
    )
    asyncio.run(serve(settings))
    return 0


async def serve(settings: Settings, ready: str | None = None) -> None:
    """Run a gateway until SIGTERM/SIGINT, then stop it in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(settings) as gateway:
        settle_gc()
        if ready:
            print(ready.format(port=gateway.port), flush=True)
        await gateway.run_until(stop)


def settle_gc() -> None:
    """A serving process's heap: what start-up built (modules, settings, the app) lives as long
    as the process, so the collector stops walking it (a frozen object that later became
    cyclic garbage would never be reclaimed; start-up builds nothing that is dropped), and
    young collections run less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _dev(args: argparse.Namespace) -> int:
    from gateway.devmode import run_dev

    kafka_port = args.kafka_port if args.kafka else None
    asyncio.run(run_dev(Path(args.data_dir), args.port, args.sandbox_port, kafka_port))
    return 0


def _publish_parser(sub: Any) -> None:
    publish = sub.add_parser("publish", help="send one completion event to Kafka")
    publish.add_argument(
        "--bootstrap", default="127.0.0.1:9092", help="host:port (default: dev's broker)"
    )
    publish.add_argument("--topic", default="resume.events", help="default resume.events")
    publish.add_argument("--tenant", required=True, help="the tenant the event is for")
    publish.add_argument("--key", required=True, help="the correlation key")
    publish.add_argument("--status", required=True, choices=["succeeded", "failed"])
    publish.add_argument("--data", default="null", help="JSON, sent byte for byte")
    publish.add_argument("--id", help="event id (default: a new random one)")
    publish.set_defaults(command=_publish)


def _publish(args: argparse.Namespace) -> int:
    from gateway.devkafka import EventToPublish, new_event_id, publish

    data = args.data.encode()
    event = EventToPublish(args.tenant, args.id or new_event_id(), args.key, args.status, data)
    print(json.dumps(asyncio.run(publish(args.bootstrap, args.topic, event))))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from gateway.store import open_store

    applied = asyncio.run(open_store(_settings(args.config).store).migrate())
    print(f"applied migrations: {applied or 'none (up to date)'}")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from gateway.config.describe import describe

    path = args.file or _default_config()  # the file ``run`` would read
    settings = _settings(path)
    if not Path(path).exists():
        print(f"(no {path}: the defaults and the environment only)\n")
    print(describe(settings))
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    if args.kind == "alteryx":
        from gateway.sandbox.alteryx import serve as serve_alteryx

        asyncio.run(serve_alteryx(args.host, args.port, {args.client_id: args.client_secret}))
        return 0
    if args.kind == "pixxel":
        from gateway.sandbox.pixxel import serve as serve_pixxel

        asyncio.run(serve_pixxel(args.host, args.port, args.api_keys or ["sandbox-api-key"]))
        return 0
    from gateway.sandbox.workato import WorkatoSandboxSettings
    from gateway.sandbox.workato import serve as serve_workato

    limits = WorkatoSandboxSettings(rate_limit_per_minute=args.rate_limit_per_minute)
    tokens = args.api_tokens or ["sandbox-token"]
    asyncio.run(serve_workato(args.host, args.port, tokens, settings=limits))
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from gateway.schemas import check_schemas, write_schemas

    if args.write:
        for path in write_schemas(Path(args.write)):
            print(f"wrote {path}")
        return 0
    drift = check_schemas(Path(args.check or "schemas"))
    for name in drift:
        print(f"out of date: {name}", file=sys.stderr)
    print(json.dumps({"drift": drift}))
    return 1 if drift else 0


if __name__ == "__main__":
    sys.exit(main())

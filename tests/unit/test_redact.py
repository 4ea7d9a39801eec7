"""Secrets never reach a log line (invariant 6)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from aiohttp.http_exceptions import BadHttpMessage

from gateway.cli import _redactor
from gateway.config.loader import settings_from_dict
from gateway.logs import configure_logging
from gateway.security.redact import MASK, Redactor

WORKATO_TOKEN = "wrk-live-4f9a8b7c6d5e"
API_KEY = "gw-key-0011223344"


def run(redactor: Redactor, **event: Any) -> dict[str, Any]:
    return dict(redactor(None, "info", dict(event)))


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "resume_token",
        "api_token",
        "Authorization",
        "secret",
        "client_secret",
        "password",
        "api_key",
        "X-Api-Key",
        "credential",
    ],
)
def test_fields_named_like_secrets_are_masked(name: str) -> None:
    assert run(Redactor(), **{name: "anything-at-all"}) == {name: MASK}


def test_secret_named_fields_are_masked_whatever_they_hold() -> None:
    out = run(Redactor(), token={"nested": "x"}, api_keys=["a", "b"], secret=b"raw")
    assert out == {"token": MASK, "api_keys": MASK, "secret": MASK}


def test_none_bool_and_int_values_of_secret_fields_are_kept() -> None:
    out = run(Redactor(), token=None, has_token=True, token_count=3)
    assert out == {"token": None, "has_token": True, "token_count": 3}


def test_ordinary_fields_are_left_alone() -> None:
    event = {
        "event": "delivery.attempted",
        "tenant": "acme",
        "key": "order-1",
        "delivery_id": 7,
        "attempt": 2,
        "reason": "http_503",
        "ratio": 0.5,
        "items": ["a", {"b": 1}],
    }
    assert run(Redactor([WORKATO_TOKEN]), **event) == event


def test_known_secret_values_are_cut_out_of_any_string() -> None:
    redactor = Redactor([WORKATO_TOKEN, API_KEY])
    out = run(redactor, error=f"POST failed with header Bearer={WORKATO_TOKEN}!", note=API_KEY)
    assert out == {"error": f"POST failed with header Bearer={MASK}!", "note": MASK}


def test_known_secret_values_are_cut_out_of_nested_dicts_and_lists() -> None:
    redactor = Redactor([WORKATO_TOKEN])
    out = run(
        redactor,
        request={"headers": {"x": f"v {WORKATO_TOKEN}"}, "args": [1, f"({WORKATO_TOKEN})"]},
        history=(f"a{WORKATO_TOKEN}", [WORKATO_TOKEN]),
    )
    assert WORKATO_TOKEN not in repr(out)
    assert out["request"] == {"headers": {"x": f"v {MASK}"}, "args": [1, f"({MASK})"]}
    assert out["history"] == [f"a{MASK}", [MASK]]


def test_nested_secret_named_keys_are_masked() -> None:
    out = run(Redactor(), request={"headers": {"Authorization": "Basic abc", "Accept": "*/*"}})
    assert out == {"request": {"headers": {"Authorization": MASK, "Accept": "*/*"}}}


def test_secrets_learned_later_are_redacted() -> None:
    redactor = Redactor()
    assert run(redactor, msg=f"x {API_KEY}") == {"msg": f"x {API_KEY}"}
    redactor.add([API_KEY])
    assert run(redactor, msg=f"x {API_KEY}") == {"msg": f"x {MASK}"}


def test_very_short_secrets_are_not_registered() -> None:
    # masking "abc" everywhere would destroy ordinary text and reveal where it occurs
    assert Redactor(["abc"]).scrub("abc abcdef") == "abc abcdef"


def test_a_secret_containing_another_is_masked_whole() -> None:
    # secrets that overlap (a prefix or an inner part of another) must not leave a tail behind
    longest = "abcd-efgh-ijkl-mnop-qrst"
    parts = [longest[:n] for n in range(4, len(longest))] + [longest[5:], longest[10:18]]
    redactor = Redactor([*parts, longest])
    assert redactor.scrub(f"header {longest} end") == f"header {MASK} end"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"token": "abc123"}', f'{{"token": "{MASK}"}}'),
        ('{"resume_token":"abc123","key":"k"}', f'{{"resume_token":"{MASK}","key":"k"}}'),
        ('body={"data":{},"token" :  "t-1"}', f'body={{"data":{{}},"token" :  "{MASK}"}}'),
        ('{"token": ""}', f'{{"token": "{MASK}"}}'),
    ],
)
def test_inline_json_token_fragments_are_masked(text: str, expected: str) -> None:
    assert Redactor().scrub(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer xyz.abc-123", f"Authorization: Bearer {MASK}"),
        ("bearer   sk_live_1, next", f"bearer   {MASK}, next"),
        ("{'Authorization': 'Bearer eyJ0'}", f"{{'Authorization': 'Bearer {MASK}'}}"),
    ],
)
def test_bearer_credentials_in_strings_are_masked(text: str, expected: str) -> None:
    assert Redactor().scrub(text) == expected


def test_text_without_secrets_is_unchanged() -> None:
    text = 'delivered {"key": "order-1", "status": "succeeded"} to tokenizer'
    assert Redactor([WORKATO_TOKEN]).scrub(text) == text


# -- through structlog -----------------------------------------------------------------------


@pytest.fixture
def reset_structlog() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("reset_structlog")
def test_json_log_line_does_not_contain_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info", Redactor([WORKATO_TOKEN, API_KEY]))
    log = structlog.get_logger("test")

    log.info(
        "resume.sent",
        tenant="acme",
        resume_token="resume-tok-secret-1",
        detail=f"upstream said: Bearer {WORKATO_TOKEN}",
        body='{"token":"resume-tok-secret-2","data":{}}',
        headers={"Authorization": f"Bearer {WORKATO_TOKEN}", "x-api-key": API_KEY},
    )

    out = capsys.readouterr().err
    for secret in (WORKATO_TOKEN, API_KEY, "resume-tok-secret-1", "resume-tok-secret-2"):
        assert secret not in out
    line = json.loads(out)
    assert line["event"] == "resume.sent"
    assert line["tenant"] == "acme"
    assert line["resume_token"] == MASK
    assert line["headers"] == {"Authorization": MASK, "x-api-key": MASK}


@pytest.mark.usefixtures("reset_structlog")
def test_exception_traceback_in_log_is_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info", Redactor([WORKATO_TOKEN]))
    log = structlog.get_logger("test")
    try:
        raise RuntimeError(f"request with Authorization {WORKATO_TOKEN} failed")
    except RuntimeError:
        log.exception("delivery.crashed", tenant="acme")

    out = capsys.readouterr().err
    assert WORKATO_TOKEN not in out
    line = json.loads(out)
    assert "RuntimeError: request with Authorization [redacted] failed" in line["exception"]


@pytest.mark.usefixtures("reset_structlog")
def test_log_level_filter_applies(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "warning", Redactor())
    log = structlog.get_logger("test")
    log.info("quiet")
    log.warning("loud")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [x["event"] for x in lines] == ["loud"]


@pytest.mark.usefixtures("reset_structlog")
def test_library_records_are_scrubbed_and_rendered_like_the_gateways_own(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """aiohttp logs a malformed request through the standard library, its traceback quoting the
    header line; unconfigured, Python printed it raw to stderr."""
    configure_logging("json", "info", Redactor([API_KEY]))
    configure_logging("json", "info", Redactor([API_KEY]))  # again: one handler, not two
    header = f"b'Authorization: Bearer {API_KEY}\\x01'"
    try:
        raise ValueError(f"Invalid header value char: {header}")
    except ValueError as exc:
        logging.getLogger("aiohttp.server").error(
            "Error handling request from %s", "127.0.0.1", exc_info=exc
        )
    logging.getLogger("aiohttp.access").info("a library's info line stays hidden")

    out = capsys.readouterr().err
    assert API_KEY not in out
    (line,) = [json.loads(x) for x in out.splitlines()]
    assert line["event"] == "Error handling request from 127.0.0.1"
    assert (line["level"], line["logger"]) == ("error", "aiohttp.server")
    assert "ValueError: Invalid header value char" in line["exception"]


@pytest.mark.usefixtures("reset_structlog")
@pytest.mark.parametrize("level", ["info", "warning"])
def test_a_request_aiohttp_cannot_parse_is_an_info_line_without_its_bytes(
    capsys: pytest.CaptureFixture[str], level: str
) -> None:
    """Logged at error level with a traceback quoting the refused line: a resume token in it
    was in clear, as no pattern or known secret matched it."""
    configure_logging("json", level, Redactor([API_KEY]))
    try:
        raise BadHttpMessage("Invalid header: b'resume_token S7BuWVTMs3bQL6bFHyoKKIq8x7pCeIy'")
    except BadHttpMessage as exc:
        logging.getLogger("aiohttp.server").error(
            "Error handling request from %s", "127.0.0.1", exc_info=exc
        )
    out = capsys.readouterr().err
    assert "S7BuWVTMs3bQL6bFHyoKKIq8x7pCeIy" not in out
    lines = [json.loads(x) for x in out.splitlines()]
    if level == "warning":
        assert lines == []
    else:
        (line,) = lines
        assert (line["event"], line["level"]) == ("http.unparsable_request: BadHttpMessage", "info")
        assert "exception" not in line


def test_the_cli_redactor_learns_the_polled_connections_secrets() -> None:
    """An Alteryx client secret and a Pixxel API key (sent without ``Bearer``, so no pattern
    catches it) are known values."""
    connections = [
        {"name": "a", "kind": "alteryx", "base_url": "http://a", "client_id": "c"}
        | {"client_secret": "alteryx-client-s3cret"},
        {"name": "p", "kind": "pixxel", "base_url": "http://p", "api_key": "pixxel-k3y-42"},
    ]
    tenant = {"name": "acme", "data_center": "us", "api_token": "wrk-token"}
    settings = settings_from_dict(
        {"env": "dev", "tenants": [tenant], "connections": connections}, {}
    )
    line = _redactor(settings).scrub("failed: alteryx-client-s3cret, Authorization: pixxel-k3y-42")
    assert line == "failed: [redacted], Authorization: [redacted]"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "reach https://svc:pa55w0rd@ayx.example/webapi (e@mail)",
            "https://{}@ayx.example/webapi (e@mail)",
        ),
        ("reach https://svc:it's@ayx.example/x", "https://{}@ayx.example/x"),
        ("reach https://u:p@ss@ayx.example/y", "https://{}@ayx.example/y"),  # an @ in the password
        ("reach https://ayx.example/?mail=a@b.com", "https://ayx.example/?mail=a@b.com"),
        ("reach https://ayx.example?mail=a@b.com", "https://ayx.example?mail=a@b.com"),
    ],
)
def test_credentials_in_a_url_are_cut_out_and_nothing_else(text: str, shown: str) -> None:
    assert run(Redactor(), error=text) == {"error": "reach " + shown.format(MASK)}


def test_values_of_other_types_and_other_spellings_are_scrubbed_too() -> None:
    """Bytes and exceptions skipped both nets (rendered as their repr, secret and all); a
    Python repr's 'token', Basic credentials, a JSON token with an escaped quote and a
    claim-check URL's signature were left as they were."""
    redact = Redactor(["SECRETVAL-123"])
    event = {
        "event": "x",
        "body": b"SECRETVAL-123",
        "err": ValueError("SECRETVAL-123"),
        "args": "arg {'token': 'tok-ARG', 'x': 1}",
        "header": "Authorization: Basic dXNlcjpwYXNz",
        "doc": '{"token": "ab\\"cd", "n": 1}',
        "url": "http://gw/v1/blobs/abc?expires=1&sig=deadbeef&type=text%2Fcsv",
        "count": 3,
    }
    cleaned = redact(None, "info", dict(event))
    assert cleaned == {
        "event": "x",
        "body": "b'[redacted]'",
        "err": "ValueError('[redacted]')",
        "args": "arg {'token': '[redacted]', 'x': 1}",
        "header": "Authorization: Basic [redacted]",
        "doc": '{"token": "[redacted]", "n": 1}',
        "url": "http://gw/v1/blobs/abc?expires=1&sig=[redacted]&type=text%2Fcsv",
        "count": 3,
    }

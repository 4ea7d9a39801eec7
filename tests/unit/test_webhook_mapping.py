"""JSON pointers, the field mapping and the ``[[sources]]`` settings, pure."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.config.loader import settings_from_dict
from gateway.config.settings import Settings
from gateway.config.sources import SourceSettings, whsec_key
from gateway.devmode import DEV_WEBHOOK_SECRET, DEV_WEBHOOK_SOURCES
from gateway.errors import ConfigError, InvalidInput
from gateway.ingest.spool import Body
from gateway.ingest.webhooks.mapping import (
    EventMapping,
    Ignored,
    MappedEvent,
    _status,
    map_event,
    map_spooled,
)
from gateway.jsonpointer import Pointer, array_index, parse_pointer, resolve
from gateway.security.redact import Redactor

WHSEC = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"  # base64 of 24 bytes


def source(mapping: dict[str, Any], **fields: Any) -> SourceSettings:
    verify = fields.pop("verify", {"scheme": "none"})
    return SourceSettings.model_validate(
        {"name": "s", "tenant": "acme", "verify": verify, "mapping": mapping, **fields}
    )


def mapped(mapping: dict[str, Any], body: bytes, **headers: str) -> MappedEvent:
    settings = source({"event_id": "/id", "default_status": "succeeded", **mapping})
    event = map_event(EventMapping.from_settings(settings), body, CIMultiDict(headers))
    assert isinstance(event, MappedEvent)
    return event


def refused(mapping: dict[str, Any], body: bytes, **headers: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        mapped(mapping, body, **headers)
    assert info.value.status == 422
    return info.value


# -- RFC 6901 pointers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", ()),
        ("/", ("",)),
        ("/a/0/b", ("a", "0", "b")),
        ("/a~1b/m~0n", ("a/b", "m~n")),
        ("/~01", ("~1",)),  # ~1 is unescaped before ~0: this is "~1", not "/"
        ("/ ", (" ",)),
    ],
)
def test_pointer_tokens(text: str, tokens: tuple[str, ...]) -> None:
    assert parse_pointer(text) == tokens


@pytest.mark.parametrize("text", ["a", "a/b", "/~", "/a~2", "#/a"])
def test_invalid_pointers_say_why(text: str) -> None:
    with pytest.raises(ValueError, match="JSON pointer"):
        parse_pointer(text)


def test_resolve_follows_rfc_6901_examples() -> None:
    # RFC 6901 section 5
    doc = json.loads(
        '{"foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4, '
        '"i\\\\j": 5, "k\\"l": 6, " ": 7, "m~n": 8}'
    )
    expected = {
        "": doc,
        "/foo": ["bar", "baz"],
        "/foo/0": "bar",
        "/": 0,
        "/a~1b": 1,
        "/c%d": 2,
        "/e^f": 3,
        "/g|h": 4,
        "/i\\j": 5,
        '/k"l': 6,
        "/ ": 7,
        "/m~0n": 8,
    }
    for text, value in expected.items():
        assert resolve(doc, parse_pointer(text)) == value


@pytest.mark.parametrize("text", ["/foo/2", "/foo/-", "/foo/01", "/foo/x", "/nope", "/foo/0/x"])
def test_resolve_raises_lookup_error_when_nothing_is_there(text: str) -> None:
    with pytest.raises(LookupError):
        resolve({"foo": ["bar", "baz"]}, parse_pointer(text))


def test_array_index_rule() -> None:
    assert [array_index(t) for t in ("0", "10", "01", "-", "1.0", "\uff11", "")] == [
        0,
        10,
        None,
        None,
        None,
        None,
        None,
    ]


# -- mapping ---------------------------------------------------------------------------------


def test_every_field_from_its_pointer() -> None:
    body = b'{"id": "d-1", "job": {"id": "j-7", "state": "done", "out": {"n": 1.10}}}'
    result = mapped(
        {"key": "/job/id", "status": "/job/state", "status_map": {"done": "succeeded"}}, body
    )
    assert (result.event.id, result.event.key, result.event.status) == ("d-1", "j-7", "succeeded")
    assert result.data == body  # data defaults to the whole body


def test_key_template_and_integer_values() -> None:
    result = mapped({"key": "/job", "key_template": "alteryx:{value}"}, b'{"id": 12, "job": 345}')
    assert (result.event.key, result.event.id) == ("alteryx:345", "12")


def test_template_braces_in_the_value_are_kept_as_they_are() -> None:
    result = mapped({"key": "/k", "key_template": "x:{value}"}, b'{"id": "1", "k": "{value}{0}"}')
    assert result.event.key == "x:{value}{0}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"done"', "succeeded"),
        ('"error"', "failed"),
        ("true", "succeeded"),
        ("false", "failed"),
        ("200", "succeeded"),
        ("null", "failed"),
        ('"succeeded"', "succeeded"),  # already our word: no map entry needed
        ('"failed"', "failed"),
    ],
)
def test_status_map_by_string_or_json_text(value: str, expected: str) -> None:
    status_map = {"done": "succeeded", "error": "failed", "true": "succeeded", "false": "failed"}
    status_map |= {"200": "succeeded", "null": "failed"}
    body = f'{{"id": "1", "k": "k", "s": {value}}}'.encode()
    mapping = {"key": "/k", "status": "/s", "status_map": status_map}
    assert mapped({**mapping, "default_status": None}, body).event.status == expected


def test_status_map_wins_over_our_own_words() -> None:
    body = b'{"id": "1", "k": "k", "s": "succeeded"}'
    mapping = {"key": "/k", "status": "/s", "status_map": {"succeeded": "failed"}}
    assert mapped(mapping, body).event.status == "failed"


def test_unmapped_status_takes_the_default_or_is_refused_naming_the_pointer() -> None:
    body = b'{"id": "1", "k": "k", "job": {"state": "Cancelled"}}'
    mapping = {"key": "/k", "status": "/job/state", "status_map": {"Complete": "succeeded"}}
    assert mapped({**mapping, "default_status": "failed"}, body).event.status == "failed"
    error = refused({**mapping, "default_status": None}, body)
    assert error.extensions == {"field": "status", "pointer": "/job/state"}
    assert '"Cancelled"' in error.detail
    assert "/job/state" in error.detail


def test_a_status_that_is_a_deep_structure_is_never_encoded() -> None:
    """Looked up as its JSON text, an array nested near the parser's limit made the encoder
    recurse too deep: a RecursionError, answered 500. It is no status: the default, or 422.
    (The value is built here, deeper than any parser allows, so that no stack depth of the
    test run decides where the parser's limit falls.)"""
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    mapping = {"key": "/k", "event_id": "/id", "status": "/s", "status_map": {"[]": "succeeded"}}
    with_default = EventMapping.from_settings(source({**mapping, "default_status": "failed"}))
    assert _status(with_default, lambda _tokens: deep) == "failed"
    without = EventMapping.from_settings(source(mapping))
    with pytest.raises(InvalidInput, match=r"^an array at /s is not in status_map"):
        _status(without, lambda _tokens: deep)


def test_a_status_mapped_to_ignore_is_acknowledged_not_stored() -> None:
    body = b'{"id": "1", "k": "k", "s": "in_progress"}'
    mapping = {"key": "/k", "event_id": "/id", "status": "/s"}
    mapping |= {"status_map": {"in_progress": "ignore"}}
    assert map_event(EventMapping.from_settings(source(mapping)), body, {}) == Ignored("1", "k")
    missing_key = b'{"id": "1", "s": "in_progress"}'  # its key and id are checked all the same
    assert refused(mapping, missing_key).extensions["pointer"] == "/k"


def test_without_a_status_pointer_every_event_has_the_default() -> None:
    assert mapped({"key": "/k"}, b'{"id": "1", "k": "k"}').event.status == "succeeded"


@pytest.mark.parametrize(
    ("mapping", "body", "field", "pointer"),
    [
        ({"key": "/job/id"}, b'{"id": "1", "job": {}}', "key", "/job/id"),
        ({"key": "/k"}, b'{"k": "k"}', "event_id", "/id"),
        ({"key": "/k", "status": "/s"}, b'{"id": "1", "k": "k"}', "status", "/s"),
        ({"key": "/k", "data": "/result"}, b'{"id": "1", "k": "k"}', "data", "/result"),
        ({"key": "/k/0"}, b'{"id": "1", "k": []}', "key", "/k/0"),
    ],
)
def test_a_missing_field_is_refused_naming_the_pointer(
    mapping: dict[str, Any], body: bytes, field: str, pointer: str
) -> None:
    error = refused(mapping, body)
    assert error.extensions == {"field": field, "pointer": pointer}
    assert pointer in error.detail


@pytest.mark.parametrize(
    ("value", "kind"),
    [("true", "a boolean"), ("1.5", "a number"), ("{}", "an object"), ("null", "null")],
)
def test_a_key_must_be_a_string_or_an_integer(value: str, kind: str) -> None:
    error = refused({"key": "/k"}, f'{{"id": "1", "k": {value}}}'.encode())
    assert error.extensions == {"field": "key", "pointer": "/k"}
    assert kind in error.detail


def test_the_event_models_limits_are_reported_against_the_pointer() -> None:
    error = refused({"key": "/k"}, b'{"id": "1", "k": ""}')
    assert error.extensions == {"field": "key", "pointer": "/k"}
    long_id = json.dumps({"id": "x" * 300, "k": "k"}).encode()
    assert refused({"key": "/k"}, long_id).extensions == {"field": "event_id", "pointer": "/id"}


def test_event_id_from_a_header() -> None:
    settings = source({"key": "/k", "event_id_header": "X-Delivery", "default_status": "failed"})
    mapping = EventMapping.from_settings(settings)
    result = map_event(mapping, b'{"k": "k"}', CIMultiDict({"x-delivery": "abc"}))
    assert result.event.id == "abc"
    with pytest.raises(InvalidInput) as info:
        map_event(mapping, b'{"k": "k"}', CIMultiDict())
    assert info.value.extensions == {"field": "event_id", "header": "X-Delivery"}


def test_standard_webhooks_use_the_webhook_id_as_event_id_by_default() -> None:
    settings = source(
        {"key": "/k", "default_status": "succeeded"},
        verify={"scheme": "standard_webhooks", "secrets": [WHSEC]},
    )
    result = map_event(
        EventMapping.from_settings(settings), b'{"k": "k"}', CIMultiDict({"webhook-id": "msg_1"})
    )
    assert result.event.id == "msg_1"


def test_data_is_the_exact_bytes_of_the_pointed_to_value() -> None:
    inner = b'{ "n" : 1.0000000000000001, "e": "\\u00e9\\ud83d\\ude00", "big": 1e400 }'
    body = b'{"id": "1", "k": "k", "list": [0, {"deep": ' + inner + b"}]}"
    assert mapped({"key": "/k", "data": "/list/1/deep"}, body).data == inner
    assert mapped({"key": "/k", "data": "/list/0"}, body).data == b"0"
    assert mapped({"key": "/k", "data": "/k"}, body).data == b'"k"'


def test_whole_body_data_without_surrounding_whitespace() -> None:
    body = b'\r\n {"id": "1", "k": "k"} \n'
    assert mapped({"key": "/k"}, body).data == body.strip()


def test_a_body_that_is_not_json_is_refused() -> None:
    for body in (b"{nope", b"", b'{"id": "1"} x', b"\xff", b'{"a": NaN}'):
        refused({"key": "/k"}, body)


def test_a_body_need_not_be_an_object() -> None:
    result = mapped({"key": "/0/k", "event_id": "/0/id", "data": "/1"}, b'[{"id":1,"k":"a"},[2]]')
    assert (result.event.key, result.data) == ("a", b"[2]")


# -- [[sources]] settings --------------------------------------------------------------------


def config(*sources: dict[str, Any]) -> dict[str, Any]:
    tenant = {"name": "acme", "data_center": "us", "api_token": "wrk-token"}
    return {"env": "dev", "tenants": [tenant], "sources": list(sources)}


def config_error(*sources: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        settings_from_dict(config(*sources), {})
    return str(info.value)


def src(**fields: Any) -> dict[str, Any]:
    base = {
        "name": "hooks",
        "tenant": "acme",
        "verify": {"scheme": "none"},
        "mapping": {"key": "/k", "event_id": "/id", "default_status": "succeeded"},
    }
    return base | fields


def mapping(**fields: Any) -> dict[str, Any]:
    return {"key": "/k", "event_id": "/id", "default_status": "succeeded"} | fields


@pytest.mark.parametrize("field", ["key", "event_id", "status", "data"])
def test_an_invalid_pointer_is_a_config_error_naming_the_field(field: str) -> None:
    message = config_error(src(mapping=mapping(**{field: "job/id"})))
    assert f"sources.0.mapping.{field}" in message
    assert "must be empty or start with '/'" in message


def test_mapping_rules_are_checked_at_config_time() -> None:
    assert "must contain {value}" in config_error(src(mapping=mapping(key_template="alteryx:")))
    both = mapping(event_id_header="X-Id")
    assert "not both" in config_error(src(mapping=both))
    assert "default_status" in config_error(src(mapping={"key": "/k", "event_id": "/id"}))
    bad_status = mapping(status="/s", status_map={"done": "ok"})
    assert "sources.0.mapping.status_map.done" in config_error(src(mapping=bad_status))


def test_the_event_id_must_come_from_somewhere() -> None:
    no_id = {"key": "/k", "default_status": "succeeded"}
    bearer = {"scheme": "bearer", "tokens": ["t0k3n-1"]}
    assert "event_id" in config_error(src(verify=bearer, mapping=no_id))
    github = {"scheme": "hmac_sha256", "preset": "github", "secret": "s3cr3t"}
    settings = settings_from_dict(config(src(verify=github, mapping=no_id)), {})
    assert settings.sources[0].event_id_header == "X-GitHub-Delivery"


def test_verify_must_be_stated_even_when_it_is_none() -> None:
    source = src()
    del source["verify"]
    assert "sources.0.verify" in config_error(source)
    assert "sources.0.verify" in config_error(src(verify={"scheme": "trust-me"}))


def test_github_preset_fills_header_and_prefix_and_explicit_values_win() -> None:
    github = {"scheme": "hmac_sha256", "preset": "github", "secret": "s3cr3t"}
    settings = settings_from_dict(config(src(verify=github)), {})
    verify = settings.sources[0].verify
    assert verify.model_dump(include={"header", "prefix", "encoding"}) == {
        "header": "X-Hub-Signature-256",
        "prefix": "sha256=",
        "encoding": "hex",
    }
    settings = settings_from_dict(config(src(verify={**github, "header": "X-Sig"})), {})
    assert settings.sources[0].verify.model_dump(include={"header"}) == {"header": "X-Sig"}


def test_hmac_needs_a_header_and_a_secret() -> None:
    assert "header" in config_error(src(verify={"scheme": "hmac_sha256", "secret": "s"}))
    no_secret = {"scheme": "hmac_sha256", "header": "X-Sig"}
    assert "give secret or secrets" in config_error(src(verify=no_secret))
    empty = {"scheme": "hmac_sha256", "header": "X-Sig", "secrets": [""]}
    assert "must not be empty" in config_error(src(verify=empty))


def test_an_unpadded_whsec_secret_is_taken_as_the_reference_library_takes_it() -> None:
    """``standardwebhooks`` pads the base64 itself; refused here, a secret copied from a
    sender that shows it unpadded stopped the gateway at start."""
    padded = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXM="  # 25 bytes: one '='
    unpadded = padded.rstrip("=")
    settings = settings_from_dict(
        config(src(verify={"scheme": "standard_webhooks", "secrets": [unpadded]})), {}
    )
    (secret,) = settings.sources[0].verify.secrets  # type: ignore[union-attr]
    assert whsec_key(secret.get_secret_value()) == whsec_key(padded)


@pytest.mark.parametrize("header", ["X-Signature: ", "X Signature", "", "X-Sig\n"])
def test_a_header_name_that_no_request_can_carry_is_refused(header: str) -> None:
    """Taken as given, every request was refused for a missing signature or id."""
    hmac_verify = {"scheme": "hmac_sha256", "header": header, "secret": "s"}
    assert "sources.0.verify.hmac_sha256.header" in config_error(src(verify=hmac_verify))
    mapping = {"key": "/k", "event_id_header": header, "default_status": "succeeded"}
    assert "sources.0.mapping.event_id_header" in config_error(src(mapping=mapping))


def test_a_bad_whsec_secret_is_refused_without_quoting_it() -> None:
    bad = "whsec_not base64!!"
    message = config_error(src(verify={"scheme": "standard_webhooks", "secrets": [WHSEC, bad]}))
    assert "sources.0.verify.standard_webhooks.secrets" in message
    assert "secrets[1]" in message
    assert "not base64" not in message
    assert "secrets" in config_error(src(verify={"scheme": "standard_webhooks", "secrets": []}))


def test_secrets_may_come_from_the_environment_and_are_masked() -> None:
    verify = {"scheme": "standard_webhooks", "secrets": ["env:HOOK_SECRET"]}
    settings = settings_from_dict(config(src(verify=verify)), {"HOOK_SECRET": WHSEC})
    assert WHSEC not in json.dumps(settings.model_dump(mode="json"))
    assert settings.sources[0].verify.secret_values() == [WHSEC, WHSEC.removeprefix("whsec_")]


def test_reserved_source_names_and_unknown_tenants() -> None:
    assert "reserved" in config_error(src(name="api"))
    # named by the field, not "(top level)"
    assert "  sources.0.tenant: no tenant is named 'nobody'" in config_error(src(tenant="nobody"))
    assert "unique" in config_error(src(), src())


def test_the_cli_redactor_learns_every_source_secret() -> None:
    from gateway.cli import _redactor

    sources = [
        src(name="a", verify={"scheme": "standard_webhooks", "secrets": [WHSEC]}),
        src(name="b", verify={"scheme": "hmac_sha256", "preset": "github", "secret": "gh-s3cr3t"}),
        src(name="c", verify={"scheme": "bearer", "tokens": ["bearer-t0ken"]}),
    ]
    settings: Settings = settings_from_dict(config(*sources), {})
    redactor: Redactor = _redactor(settings)
    line = f"{WHSEC} {WHSEC.removeprefix('whsec_')} gh-s3cr3t bearer-t0ken"
    assert redactor.scrub(line) == " ".join(["[redacted]"] * 4)


def test_pointer_dataclass_keeps_its_text() -> None:
    assert Pointer.parse("/a~1b") == Pointer("/a~1b", ("a/b",))


def test_the_readme_source_is_the_one_make_run_serves() -> None:
    """The README's ``[[sources]]`` example and its curl (run by tests/e2e) stay in step."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("\n## Webhooks\n") :]
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    assert toml is not None
    [documented] = tomllib.loads(toml.group(1))["sources"]
    environ = {"ORDERS_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET}
    settings = settings_from_dict(config(documented), environ)
    served = settings_from_dict(config({**DEV_WEBHOOK_SOURCES[0], "tenant": "acme"}), {})
    assert settings.sources == served.sources


def test_check_config_lists_sources_with_secrets_masked() -> None:
    from gateway.config.describe import describe

    sources = [
        src(name="gh", verify={"scheme": "hmac_sha256", "preset": "github", "secret": "gh-s3cr3t"}),
        src(name="std", verify={"scheme": "standard_webhooks", "secrets": [WHSEC]}),
        src(name="open"),
    ]
    text = describe(settings_from_dict(config(*sources), {}))
    assert (
        "source gh       POST /v1/hooks/gh → tenant acme, hmac_sha256 in X-Hub-Signature-256"
        in text
    )
    assert "POST /v1/hooks/std → tenant acme, standard_webhooks" in text
    assert "POST /v1/hooks/open → tenant acme, NO verification" in text
    assert "gh-s3cr3t" not in text
    assert WHSEC not in text


def spooled(tmp_path: Path, body: bytes) -> Body:
    path = tmp_path / "body"
    path.write_bytes(body)
    return Body(len(body), hashlib.sha256(body).hexdigest(), path=path)


def test_a_spooled_value_too_long_to_decode_maps_as_it_would_in_memory(tmp_path: Path) -> None:
    """Refused bare ("the value is longer than 65536 bytes", no pointer), a long status in a
    spooled body ignored default_status, which the same body in memory took."""
    status = '"' + "x" * 70_000 + '"'
    body = f'{{"id": "1", "k": "k", "s": {status}}}'.encode()
    mapping = {"key": "/k", "event_id": "/id", "status": "/s"}
    with_default = EventMapping.from_settings(source({**mapping, "default_status": "failed"}))
    event = map_spooled(with_default, spooled(tmp_path, body), {})
    assert isinstance(event, tuple)
    assert event[0].status == mapped({**mapping, "default_status": "failed"}, body).event.status
    without = EventMapping.from_settings(source(mapping))
    with pytest.raises(InvalidInput) as refusal:
        map_spooled(without, spooled(tmp_path, body), {})
    assert refusal.value.extensions == {"field": "status", "pointer": "/s"}
    long_key = f'{{"id": "1", "k": {status}, "s": "succeeded"}}'.encode()
    with pytest.raises(InvalidInput) as refusal:
        map_spooled(without, spooled(tmp_path, long_key), {})
    assert refusal.value.extensions == {"field": "key", "pointer": "/k"}


def test_a_source_that_would_ignore_every_webhook_is_refused() -> None:
    """default_status ignore with no status pointer answered every webhook 200 ignored, and
    stored none: the sender never retried, and every wait expired."""
    mapping = {"key": "/k", "event_id": "/id", "default_status": "ignore"}
    assert "default_status ignore needs a status pointer" in config_error(src(mapping=mapping))

"""Webhook verification, pure: every scheme, its published test vector, and every way to fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from multidict import CIMultiDict
from pydantic import TypeAdapter
from standardwebhooks.webhooks import Webhook

from gateway.config.sources import VerifySettings
from gateway.errors import BadSignature
from gateway.ingest.webhooks.verify import Verifier, any_equal, verifier_for

# The Standard Webhooks reference test vector (standard-webhooks/standard-webhooks,
# libraries/python/tests/test_webhooks.py, test_sign_function).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_PAYLOAD = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# GitHub's documented example ("Validating webhook deliveries").
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

OLD_WHSEC = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW_WHSEC = "whsec_" + base64.b64encode(b"n" * 32).decode()
NOW = 1_700_000_000
BODY = b'{"job": {"id": "j-1", "status": "done"}}'

_VERIFY: TypeAdapter[Any] = TypeAdapter(VerifySettings)


def verifier(**settings: Any) -> Verifier:
    return verifier_for(_VERIFY.validate_python(settings))


def standard(*secrets: str, tolerance_s: float = 300) -> Verifier:
    return verifier(scheme="standard_webhooks", secrets=list(secrets), tolerance_s=tolerance_s)


def std_headers(
    secret: str, body: bytes = BODY, msg_id: str = "msg-1", ts: int = NOW
) -> CIMultiDict[str]:
    """Signed the way a sender using the standardwebhooks library signs."""
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return CIMultiDict(
        {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}
    )


def reason(check: Verifier, headers: CIMultiDict[str], body: bytes = BODY, now: float = NOW) -> str:
    with pytest.raises(BadSignature) as info:
        check.verify(headers, body, now)
    assert info.value.status == 401
    return str(info.value.extensions["reason"])


def hex_hmac(secret: str, body: bytes = BODY) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- Standard Webhooks -----------------------------------------------------------------------


def test_library_reproduces_the_published_test_vector() -> None:
    sent_at = datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC)
    assert Webhook(VECTOR_SECRET).sign(VECTOR_ID, sent_at, VECTOR_PAYLOAD.decode()) == (
        VECTOR_SIGNATURE
    )


def test_the_published_test_vector_verifies() -> None:
    headers = CIMultiDict(
        {
            "webhook-id": VECTOR_ID,
            "webhook-timestamp": str(VECTOR_TIMESTAMP),
            "webhook-signature": VECTOR_SIGNATURE,
        }
    )
    standard(VECTOR_SECRET).verify(headers, VECTOR_PAYLOAD, now=VECTOR_TIMESTAMP)
    # the secret may be given without its whsec_ prefix too
    standard(VECTOR_SECRET.removeprefix("whsec_")).verify(headers, VECTOR_PAYLOAD, VECTOR_TIMESTAMP)
    tampered = VECTOR_SIGNATURE[:-2] + "A="  # the library's own "invalid signature" case
    headers["webhook-signature"] = tampered
    assert reason(standard(VECTOR_SECRET), headers, VECTOR_PAYLOAD, VECTOR_TIMESTAMP) == (
        "bad_signature"
    )


def test_agrees_with_the_library_verify_on_a_fresh_message() -> None:
    now = int(time.time())
    headers = std_headers(NEW_WHSEC, ts=now)
    Webhook(NEW_WHSEC).verify(BODY, dict(headers))  # the library accepts it ...
    standard(NEW_WHSEC).verify(headers, BODY, now)  # ... and so do we


def test_tampered_body_and_wrong_secret_are_refused() -> None:
    headers = std_headers(NEW_WHSEC)
    assert reason(standard(NEW_WHSEC), headers, BODY.replace(b"done", b"fail")) == "bad_signature"
    assert reason(standard(OLD_WHSEC), headers) == "bad_signature"


def test_rotation_accepts_every_configured_secret() -> None:
    check = standard(NEW_WHSEC, OLD_WHSEC)
    check.verify(std_headers(OLD_WHSEC), BODY, NOW)
    check.verify(std_headers(NEW_WHSEC), BODY, NOW)


def test_any_of_several_presented_signatures_may_match() -> None:
    headers = std_headers(NEW_WHSEC)
    valid = headers["webhook-signature"]
    wrong = "v1," + base64.b64encode(b"x" * 32).decode()
    headers["webhook-signature"] = f"{wrong} v2,{valid[3:]} garbage v1,%%% {valid}"
    standard(NEW_WHSEC).verify(headers, BODY, NOW)
    headers["webhook-signature"] = f"{wrong} v2,{valid[3:]} garbage v1,%%% v1a,abc"
    assert reason(standard(NEW_WHSEC), headers) == "bad_signature"


@pytest.mark.parametrize(
    ("offset_s", "expected"),
    [(-301, "stale_timestamp"), (301, "future_timestamp"), (-3600, "stale_timestamp")],
)
def test_timestamps_outside_the_tolerance_are_refused(offset_s: int, expected: str) -> None:
    headers = std_headers(NEW_WHSEC, ts=NOW + offset_s)
    assert reason(standard(NEW_WHSEC), headers) == expected


def test_timestamps_at_the_edge_of_the_tolerance_pass() -> None:
    for offset_s in (-300, 300):
        standard(NEW_WHSEC).verify(std_headers(NEW_WHSEC, ts=NOW + offset_s), BODY, NOW)


def test_tolerance_is_configurable() -> None:
    headers = std_headers(NEW_WHSEC, ts=NOW - 20)
    assert reason(standard(NEW_WHSEC, tolerance_s=10), headers) == "stale_timestamp"
    standard(NEW_WHSEC, tolerance_s=30).verify(headers, BODY, NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_standard_header_is_required(missing: str) -> None:
    headers = std_headers(NEW_WHSEC)
    del headers[missing]
    assert reason(standard(NEW_WHSEC), headers) == "missing_signature"


FULLWIDTH_DIGITS = "\uff11\uff17"  # str.isdigit() says yes; int() would even parse them


@pytest.mark.parametrize("stamp", ["hello", "1.5e9", "-1", " 1700000000", FULLWIDTH_DIGITS])
def test_a_timestamp_that_is_not_integer_seconds_is_refused(stamp: str) -> None:
    headers = std_headers(NEW_WHSEC)
    headers["webhook-timestamp"] = stamp
    assert reason(standard(NEW_WHSEC), headers) == "bad_timestamp"


def test_a_timestamp_of_thousands_of_digits_is_refused_not_crashed() -> None:
    headers = std_headers(NEW_WHSEC)
    headers["webhook-timestamp"] = "9" * 4_400  # int() of it raised ValueError: a 500
    assert reason(standard(NEW_WHSEC), headers) == "bad_timestamp"


def test_a_message_id_that_is_not_utf8_is_signed_as_the_bytes_that_came() -> None:
    """aiohttp hands header bytes that are not UTF-8 over as lone surrogates (``\\xff`` as
    ``\\udcff``); encoding them raised, a 500."""
    key = base64.b64decode(NEW_WHSEC.removeprefix("whsec_"))
    mac = hmac.new(key, f"m\xff.{NOW}.".encode("latin-1") + BODY, hashlib.sha256).digest()
    headers = CIMultiDict(
        {
            "webhook-id": "m\udcff",
            "webhook-timestamp": str(NOW),
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }
    )
    standard(NEW_WHSEC).verify(headers, BODY, NOW)
    headers["webhook-id"] = "m\udcfe"
    assert reason(standard(NEW_WHSEC), headers) == "bad_signature"


def test_a_body_that_is_not_utf8_is_refused_not_crashed() -> None:
    headers = std_headers(NEW_WHSEC)
    assert reason(standard(NEW_WHSEC), headers, b"\xff\xfe") == "bad_signature"


# -- HMAC-SHA256 -----------------------------------------------------------------------------


def github(*secrets: str) -> Verifier:
    return verifier(scheme="hmac_sha256", preset="github", secrets=list(secrets))


def test_github_preset_verifies_githubs_documented_example() -> None:
    headers = CIMultiDict({"x-hub-signature-256": GITHUB_SIGNATURE})
    github(GITHUB_SECRET).verify(headers, GITHUB_PAYLOAD, NOW)
    assert reason(github("another secret"), headers, GITHUB_PAYLOAD) == "bad_signature"
    assert reason(github(GITHUB_SECRET), headers, GITHUB_PAYLOAD + b" ") == "bad_signature"


def test_hmac_signature_without_its_prefix_or_malformed_is_refused() -> None:
    for value in (GITHUB_SIGNATURE.removeprefix("sha256="), "sha256=zz", "sha1=abc", ""):
        headers = CIMultiDict({"X-Hub-Signature-256": value})
        assert reason(github(GITHUB_SECRET), headers, GITHUB_PAYLOAD) == "bad_signature"
    assert reason(github(GITHUB_SECRET), CIMultiDict(), GITHUB_PAYLOAD) == "missing_signature"


def test_hmac_hex_is_case_insensitive() -> None:
    headers = CIMultiDict({"X-Hub-Signature-256": "sha256=" + hex_hmac("s", BODY).upper()})
    github("s").verify(headers, BODY, NOW)


def test_hmac_custom_header_prefix_and_rotation_with_secret_and_secrets() -> None:
    check = verifier(
        scheme="hmac_sha256", header="X-Signature", prefix="v0=", secret="old", secrets=["new"]
    )
    for secret in ("old", "new"):
        check.verify(CIMultiDict({"X-Signature": "v0=" + hex_hmac(secret)}), BODY, NOW)
    bad = CIMultiDict({"X-Signature": "v0=" + hex_hmac("other")})
    assert reason(check, bad) == "bad_signature"


def test_hmac_base64_encoding() -> None:
    check = verifier(
        scheme="hmac_sha256", header="X-Shopify-Hmac-Sha256", encoding="base64", secret="s"
    )
    digest = hmac.new(b"s", BODY, hashlib.sha256).digest()
    check.verify(
        CIMultiDict({"X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode()}), BODY, NOW
    )
    assert reason(check, CIMultiDict({"X-Shopify-Hmac-Sha256": digest.hex()})) == "bad_signature"


# -- bearer and none -------------------------------------------------------------------------


def test_bearer_accepts_each_configured_token_only() -> None:
    check = verifier(scheme="bearer", tokens=["token-one-123", "token-two-456"])
    for token in ("token-one-123", "token-two-456"):
        check.verify(CIMultiDict({"Authorization": f"Bearer {token}"}), BODY, NOW)
    check.verify(CIMultiDict({"authorization": "bearer token-one-123"}), BODY, NOW)
    assert reason(check, CIMultiDict({"Authorization": "Bearer token-one-12"})) == "bad_signature"
    assert reason(check, CIMultiDict({"Authorization": "Basic token-one-123"})) == (
        "missing_signature"
    )
    assert reason(check, CIMultiDict()) == "missing_signature"
    not_utf8 = CIMultiDict({"Authorization": "Bearer \udcff\udcfe"})  # as aiohttp decodes it
    assert reason(check, not_utf8) == "bad_signature"


def test_none_accepts_anything() -> None:
    verifier(scheme="none").verify(CIMultiDict(), b"anything", NOW)


# -- no secret leaks, constant-time comparison -----------------------------------------------


def test_refusals_never_carry_a_secret_or_the_expected_signature() -> None:
    expected = hex_hmac("hmac-secret-value")
    cases: list[tuple[Verifier, CIMultiDict[str]]] = [
        (standard(NEW_WHSEC), std_headers(OLD_WHSEC)),
        (github("hmac-secret-value"), CIMultiDict({"X-Hub-Signature-256": "sha256=00"})),
        (verifier(scheme="bearer", tokens=["bearer-secret-1"]), CIMultiDict()),
    ]
    for check, headers in cases:
        with pytest.raises(BadSignature) as info:
            check.verify(headers, BODY, NOW)
        shown = f"{info.value} {info.value.extensions}"
        for secret in (NEW_WHSEC, NEW_WHSEC[6:], "hmac-secret-value", expected, "bearer-secret-1"):
            assert secret not in shown


def test_any_equal_compares_every_pair() -> None:
    assert any_equal([b"a", b"b"], [b"c", b"b"])
    assert not any_equal([b"a"], [b"b", b"ab"])
    assert not any_equal([], [b"a"])

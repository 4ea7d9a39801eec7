"""Signed blob URLs: what verifies, what does not, and that nothing malformed raises."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from gateway.blobs.signing import UrlSigner
from gateway.config.keys import UrlKey
from gateway.config.settings import SecuritySettings
from gateway.security.urlkeys import url_signing_keys

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(32, 64))
BASE = "https://gw.example.com"
SHA = "ab" * 32
OTHER_SHA = "cd" * 32
NOW = 1_700_000_000.0
EXPIRES_AT = NOW + 3600.5


def parts(url: str) -> tuple[str, str, str]:
    """The id, ``expires`` and ``sig`` of a signed URL."""
    split = urlsplit(url)
    query = parse_qs(split.query, strict_parsing=True)
    return split.path.rsplit("/", 1)[1], query["expires"][0], query["sig"][0]


def typed(url: str) -> str | None:
    """The ``type`` parameter of a signed URL, decoded, if it has one."""
    query = parse_qs(urlsplit(url).query, strict_parsing=True)
    return query["type"][0] if "type" in query else None


def test_url_shape() -> None:
    url = UrlSigner([("k1", OLD_KEY)], BASE + "/").url(SHA, EXPIRES_AT)
    assert url.startswith(f"{BASE}/v1/blobs/{SHA}?expires={int(NOW) + 3601}&sig=k1.")
    sig = parts(url)[2].removeprefix("k1.")
    assert "=" not in sig
    assert len(base64.urlsafe_b64decode(sig + "=")) == 32


def test_round_trip() -> None:
    signer = UrlSigner([("k1", OLD_KEY)], BASE)
    assert signer.verify(*parts(signer.url(SHA, EXPIRES_AT)), now=NOW)


def test_valid_up_to_and_including_expiry_then_not() -> None:
    signer = UrlSigner([("k1", OLD_KEY)], BASE)
    sha, expires, sig = parts(signer.url(SHA, EXPIRES_AT))
    assert signer.verify(sha, expires, sig, now=float(expires))
    assert not signer.verify(sha, expires, sig, now=float(expires) + 0.001)


def test_tampered_parts_do_not_verify() -> None:
    signer = UrlSigner([("k1", OLD_KEY)], BASE)
    sha, expires, sig = parts(signer.url(SHA, EXPIRES_AT))
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    assert not signer.verify(OTHER_SHA, expires, sig, now=NOW)
    assert not signer.verify(sha, str(int(expires) + 86400), sig, now=NOW)
    assert not signer.verify(sha, expires, flipped, now=NOW)
    assert not signer.verify(sha, "0" + expires, sig, now=NOW)


def test_unknown_key_id_does_not_verify() -> None:
    signer = UrlSigner([("k1", OLD_KEY)], BASE)
    sha, expires, sig = parts(signer.url(SHA, EXPIRES_AT))
    assert not signer.verify(sha, expires, "k9." + sig.removeprefix("k1."), now=NOW)
    stranger = UrlSigner([("k1", NEW_KEY)], BASE)  # same id, another key
    assert not stranger.verify(sha, expires, sig, now=NOW)


def test_rotation() -> None:
    old_url = UrlSigner([("old", OLD_KEY)], BASE).url(SHA, EXPIRES_AT)
    rotated = UrlSigner([("new", NEW_KEY), ("old", OLD_KEY)], BASE)
    assert rotated.verify(*parts(old_url), now=NOW)
    assert parts(rotated.url(SHA, EXPIRES_AT))[2].startswith("new.")
    assert rotated.verify(*parts(rotated.url(SHA, EXPIRES_AT)), now=NOW)
    retired = UrlSigner([("new", NEW_KEY)], BASE)
    assert not retired.verify(*parts(old_url), now=NOW)


def test_key_ids_with_dots() -> None:
    signer = UrlSigner([("2024.q1", OLD_KEY)], BASE)
    assert signer.verify(*parts(signer.url(SHA, EXPIRES_AT)), now=NOW)


@pytest.mark.parametrize(
    ("sha", "expires", "sig"),
    [
        (SHA, None, "k1.x"),
        (SHA, "1800000000", None),
        (SHA, None, None),
        (SHA, "", ""),
        (SHA, "1800000000", ""),
        (SHA, "1800000000", "."),
        (SHA, "1800000000", "k1"),
        (SHA, "1800000000", "k1."),
        (SHA, "1800000000", "k1.é日😀"),
        (SHA, "1800000000", "k1.\udcff"),
        (SHA, "1800000000", "k1." + "A" * 100_000),
        (SHA, "-1", "k1.AAAA"),
        (SHA, "1e10", "k1.AAAA"),
        (SHA, "1800000000\n", "k1.AAAA"),
        (SHA, "١٨٠٠٠٠٠٠٠٠", "k1.AAAA"),  # Arabic-Indic digits
        (SHA, "9" * 400, "k1.AAAA"),
        ("../../etc/passwd", "1800000000", "k1.AAAA"),
        (SHA.upper(), "1800000000", "k1.AAAA"),
        ("", "1800000000", "k1.AAAA"),
    ],
)
def test_malformed_inputs_are_false_never_errors(
    sha: str, expires: str | None, sig: str | None
) -> None:
    assert UrlSigner([("k1", OLD_KEY)], BASE).verify(sha, expires, sig, now=NOW) is False


def test_signer_needs_a_key_and_a_blob_id() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        UrlSigner([], BASE)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        UrlSigner([("k1", OLD_KEY)], BASE).url("../x", EXPIRES_AT)


def test_url_key_settings() -> None:
    secret = base64.b64encode(OLD_KEY + b"more").decode()
    key = UrlKey.model_validate({"id": "k1", "key": secret})
    assert key.key_bytes == OLD_KEY + b"more"
    assert secret not in repr(key)
    for bad in (base64.b64encode(OLD_KEY[:31]).decode(), "not base64!"):
        with pytest.raises(ValidationError, match="key must"):
            UrlKey.model_validate({"id": "k1", "key": bad})
    with pytest.raises(ValidationError, match="id"):
        UrlKey.model_validate({"id": "a/b", "key": base64.b64encode(OLD_KEY).decode()})


def test_the_content_type_is_signed() -> None:
    signer = UrlSigner([("k1", OLD_KEY)], BASE)
    url = signer.url(SHA, EXPIRES_AT, "text/csv")
    assert "&type=text%2Fcsv&" in url
    assert typed(url) == "text/csv"
    assert signer.verify(*parts(url), now=NOW, content_type="text/csv")
    assert not signer.verify(*parts(url), now=NOW, content_type="text/html")
    assert not signer.verify(*parts(url), now=NOW)  # the type left out


def test_urls_signed_without_a_type_still_verify_and_take_none() -> None:
    signer = UrlSigner([("k1", OLD_KEY)], BASE)
    old = signer.url(SHA, EXPIRES_AT)
    assert typed(old) is None
    assert signer.verify(*parts(old), now=NOW)
    assert not signer.verify(*parts(old), now=NOW, content_type="text/html")  # a type added


def test_configuring_url_keys_keeps_the_urls_the_derived_keys_signed() -> None:
    """Configured keys replaced the derived ones: every URL already handed out (a wait lives
    up to 60 days) answered 403 once an operator added url_keys."""
    token_keys = [{"id": "2025-01", "key": base64.b64encode(OLD_KEY).decode()}]
    before = SecuritySettings.model_validate({"token_keys": token_keys})
    url = UrlSigner(url_signing_keys(before), BASE).url(SHA, EXPIRES_AT)
    for url_id in ("u1", "2025-01"):  # the deploy example gives both keys one id
        url_keys = [{"id": url_id, "key": base64.b64encode(NEW_KEY).decode()}]
        both = {"token_keys": token_keys, "url_keys": url_keys}
        after = UrlSigner(url_signing_keys(SecuritySettings.model_validate(both)), BASE)
        assert after.verify(*parts(url), NOW), url_id
        signed = after.url(SHA, EXPIRES_AT)  # by the configured key
        assert UrlSigner([(url_id, NEW_KEY)], BASE).verify(*parts(signed), NOW)
        assert not UrlSigner(url_signing_keys(before), BASE).verify(*parts(signed), NOW)

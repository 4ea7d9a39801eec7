"""Resume tokens at rest: AES-256-GCM bound to the tenant, rotatable keys."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.errors import SecretError
from gateway.security.tokens import NONCE_BYTES, SealedToken, TokenCipher, token_digest

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(32, 64))
TOKEN = "eyJhbGciOiJIUzI1NiJ9.resume-token-0123456789"


@pytest.mark.parametrize("token", [TOKEN, "", "é日😀", "x" * 10_000])
def test_round_trip(token: str) -> None:
    cipher = TokenCipher([("k1", OLD_KEY)])
    assert cipher.open(cipher.seal(token, aad="acme"), aad="acme") == token


def test_sealing_twice_gives_different_ciphertexts() -> None:
    cipher = TokenCipher([("k1", OLD_KEY)])
    assert cipher.seal(TOKEN, "acme").blob != cipher.seal(TOKEN, "acme").blob


def test_ciphertext_does_not_contain_the_token() -> None:
    sealed = TokenCipher([("k1", OLD_KEY)]).seal(TOKEN, "acme")
    assert TOKEN.encode() not in sealed.blob
    assert b"resume-token" not in sealed.blob
    assert len(sealed.blob) == NONCE_BYTES + len(TOKEN.encode()) + 16  # nonce, body, GCM tag


def test_wrong_tenant_cannot_open() -> None:
    cipher = TokenCipher([("k1", OLD_KEY)])
    sealed = cipher.seal(TOKEN, aad="acme")
    with pytest.raises(SecretError, match="does not decrypt with key 'k1'"):
        cipher.open(sealed, aad="globex")


def test_tampered_ciphertext_cannot_be_opened() -> None:
    cipher = TokenCipher([("k1", OLD_KEY)])
    sealed = cipher.seal(TOKEN, aad="acme")
    flipped = bytearray(sealed.blob)
    flipped[NONCE_BYTES + 3] ^= 0x01
    with pytest.raises(SecretError):
        cipher.open(replace(sealed, blob=bytes(flipped)), aad="acme")


def test_same_key_id_with_a_different_key_cannot_open() -> None:
    sealed = TokenCipher([("k1", OLD_KEY)]).seal(TOKEN, "acme")
    with pytest.raises(SecretError):
        TokenCipher([("k1", NEW_KEY)]).open(sealed, "acme")


def test_rotation_opens_old_tokens_and_seals_with_the_new_key() -> None:
    before = TokenCipher([("k1", OLD_KEY)])
    old_sealed = before.seal(TOKEN, "acme")
    assert old_sealed.key_id == "k1"

    after = TokenCipher([("k2", NEW_KEY), ("k1", OLD_KEY)])  # new key prepended
    assert after.open(old_sealed, "acme") == TOKEN
    new_sealed = after.seal(TOKEN, "acme")
    assert new_sealed.key_id == "k2"
    assert after.open(new_sealed, "acme") == TOKEN

    with pytest.raises(SecretError, match="'k2' is not configured"):
        before.open(new_sealed, "acme")


def test_unknown_key_id_is_a_secret_error() -> None:
    cipher = TokenCipher([("k1", OLD_KEY)])
    sealed = cipher.seal(TOKEN, "acme")
    with pytest.raises(SecretError, match="token key 'gone' is not configured"):
        cipher.open(SealedToken("gone", sealed.blob), "acme")


def test_dropped_key_can_no_longer_open_its_tokens() -> None:
    sealed = TokenCipher([("k1", OLD_KEY)]).seal(TOKEN, "acme")
    with pytest.raises(SecretError, match="'k1' is not configured"):
        TokenCipher([("k2", NEW_KEY)]).open(sealed, "acme")


def test_no_keys_is_a_secret_error() -> None:
    with pytest.raises(SecretError, match="at least one token key"):
        TokenCipher([])


def test_token_digest_is_a_stable_one_way_fingerprint() -> None:
    digest = token_digest(TOKEN)
    assert digest == token_digest(TOKEN)
    assert digest != token_digest(TOKEN + "x")
    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")
    assert TOKEN not in digest

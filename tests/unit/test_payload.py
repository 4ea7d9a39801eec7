"""The resume body carries the event's bytes verbatim, and its size is known exactly."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from gateway.deliver.payload import body_frame, data_frame, resume_body
from gateway.deliver.workato import request_timeout_s
from gateway.ingest.rawjson import raw_at
from gateway.security.tokens import SealedToken
from gateway.store.records import Claim

RECEIVED_AT = 1_700_000_000.0  # 2023-11-14T22:13:20Z

TRICKY_DATA = [
    b'{"x":1.0000000000000001}',
    b'{"big":123456789012345678901234567890,"neg":-98765432109876543210}',
    b'{"name":"\\u00e9t\\u00e9","emoji":"\\ud83d\\ude00"}',
    '{"name":"été","日本":"語","emoji":"😀"}'.encode(),
    b'{ "a" :\n\t[ 1 ,  2,\r\n {"b" : { } } ] ,"c":  "x"   }',
    b'{"s":"with \\"quotes\\" and \\\\ and } { ] ["}',
    b'{"f":1E+2,"g":-0.0,"h":0e-0,"i":1.5e-10}',
    b"[1, 2, 3]",
    b'"just a string"',
    b"null",
    b"  42  ",
]


def resume_data(claim: Claim, raw_mode: bool) -> bytes:
    """``data`` as an inline delivery sends it: the frame around the event's bytes."""
    before, after = data_frame(claim, raw_mode)
    return before + claim.data + after


def make_claim(data: bytes = b"{}", **changes: object) -> Claim:
    claim = Claim(
        delivery_id=1,
        tenant="acme",
        key="order-1",
        sealed=SealedToken("k1", b""),
        deadline=RECEIVED_AT + 3_600,
        attempt=1,
        ambiguous=False,
        job_json=None,
        metadata_json='{"run": 7}',
        event_id="ev-1",
        source="hook",
        status="succeeded",
        data=data,
        received_at=RECEIVED_AT,
    )
    return replace(claim, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", TRICKY_DATA)
def test_payload_bytes_in_the_body_are_the_event_bytes(data: bytes) -> None:
    body = resume_body("tok", resume_data(make_claim(data), raw_mode=False))

    assert json.loads(body)["data"]["payload"] == json.loads(data)
    assert body.count(data) == 1
    assert body.endswith(b',"payload":' + data + b"}}")
    assert raw_at(body, ["data", "payload"]) == data.strip()


def test_float_precision_is_not_lost() -> None:
    body = resume_body("tok", resume_data(make_claim(b'{"x":1.0000000000000001}'), False))
    assert b'"payload":{"x":1.0000000000000001}' in body  # json.loads would make it 1.0


def test_unicode_escapes_stay_escapes_and_raw_utf8_stays_raw() -> None:
    escaped = b'{"n":"\\u00e9"}'
    raw = '{"n":"é"}'.encode()
    assert b'"\\u00e9"' in resume_body("t", resume_data(make_claim(escaped), False))
    assert "é".encode() not in resume_body("t", resume_data(make_claim(escaped), False))
    assert "é".encode() in resume_body("t", resume_data(make_claim(raw), False))
    assert b"\\u00e9" not in resume_body("t", resume_data(make_claim(raw), False))


def test_envelope_fields_in_order() -> None:
    claim = make_claim(b'{"ok":true}')
    data = json.loads(resume_data(claim, raw_mode=False))
    assert list(data) == [
        "status",
        "key",
        "event_id",
        "source",
        "received_at",
        "metadata",
        "payload",
    ]
    assert data == {
        "status": "succeeded",
        "key": "order-1",
        "event_id": "ev-1",
        "source": "hook",
        "received_at": "2023-11-14T22:13:20.000Z",
        "metadata": {"run": 7},
        "payload": {"ok": True},
    }


def test_missing_metadata_is_null() -> None:
    data = json.loads(resume_data(make_claim(metadata_json=None), raw_mode=False))
    assert data["metadata"] is None


def test_metadata_bytes_are_spliced_verbatim() -> None:
    metadata = '{"a" : 1.10, "b":"\\u00e9"}'
    out = resume_data(make_claim(metadata_json=metadata), raw_mode=False)
    assert b',"metadata":' + metadata.encode() + b',"payload":' in out


def test_envelope_with_non_ascii_and_quotes_in_text_fields_is_valid_json() -> None:
    claim = make_claim(key='ключ "1"', event_id="é\\v", source="hook/日本", status="failed")
    data = json.loads(resume_data(claim, raw_mode=False))
    assert (data["key"], data["event_id"], data["source"], data["status"]) == (
        'ключ "1"',
        "é\\v",
        "hook/日本",
        "failed",
    )


@pytest.mark.parametrize("data", TRICKY_DATA)
def test_raw_mode_passes_the_data_unwrapped(data: bytes) -> None:
    claim = make_claim(data)
    assert resume_data(claim, raw_mode=True) == data
    body = resume_body("tok", resume_data(claim, raw_mode=True))
    assert body == b'{"token":"tok","data":' + data + b"}"
    assert json.loads(body)["data"] == json.loads(data)


def test_body_carries_the_token() -> None:
    body = resume_body('t"o\\k', b"{}")
    assert json.loads(body) == {"token": 't"o\\k', "data": {}}


TOKENS = [
    "",
    "abc",
    "eyJhbGciOiJIUzI1NiJ9.e30.sig",
    'has "quotes"',
    "back\\slash",
    "été",
    "日本語",
    "😀",
    "\x00\n\t\x1f",
    "\ud800",
    "</script>",
]


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize("raw_mode", [False, True])
@pytest.mark.parametrize("data", TRICKY_DATA)
def test_the_frame_around_the_payload_is_the_body(token: str, raw_mode: bool, data: bytes) -> None:
    """A streamed body is sent as frame + payload + frame with Content-Length = their sizes."""
    claim = make_claim(data)
    head, tail = body_frame(token, *data_frame(claim, raw_mode))
    body = head + data + tail
    assert body == resume_body(token, resume_data(claim, raw_mode))
    sent = json.loads(body)
    assert sent["token"] == token
    assert (sent["data"] if raw_mode else sent["data"]["payload"]) == json.loads(data)


def test_the_frame_escapes_any_token() -> None:
    rng = random.Random(5)
    alphabet = 'ab"\\/\n\t\x01 é日😀\u2028{}[]:,'
    for _ in range(500):
        token = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        head, tail = body_frame(token, b"", b"")
        assert json.loads(head + b"[1]" + tail) == {"token": token, "data": [1]}


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (1_000, 20.0),  # small bodies: the configured timeout
        (1_000_000, 20.0),
        (10_000_000, 30.0),  # 10 s more to upload 10 MB at the 1 MB/s floor
        (50_000_000, 55.0),  # capped where the lease (60 s) would end, minus its margin
    ],
)
def test_large_bodies_get_time_to_upload_within_the_lease(size: int, expected: float) -> None:
    assert request_timeout_s(size, timeout_s=20.0, longest_s=55.0) == expected


def test_the_upload_allowance_never_shortens_the_timeout() -> None:
    assert request_timeout_s(50_000_000, timeout_s=20.0, longest_s=2.0) == 20.0

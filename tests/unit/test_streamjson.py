"""streamjson: the same spans as rawjson at every chunk boundary, and bounded memory."""

from __future__ import annotations

import hashlib
import json
import random
import stat
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InvalidInput
from gateway.ingest import jsoncheck, streamjson
from gateway.ingest.rawjson import parse_document, raw_at, split_object
from gateway.ingest.spool import Body
from gateway.jsonpointer import parse_pointer

# 1 byte up to a real chunk; from 64 on, the byte-exact window is small and bulk counting runs
CHUNK_SIZES = (1, 2, 3, 7, 64, 200, 1000, 1 << 18)
NAMES = ("a", "b", "a", "", '"', "\\", "{}", "é", "😀", "x/y", "~0", "0", "1")
TEXTS = ("", "x", '"', "\\", '\\"', "\\\\", "{[", "]}", ",:", "é", "😀", "\n\t", "\x01", "/")


def ws(rng: random.Random) -> str:
    return rng.choice(("", "", " ", "\n", " \t\r\n "))


def string(rng: random.Random) -> str:
    text = "".join(rng.choice(TEXTS) for _ in range(rng.randrange(6)))
    encoded = json.dumps(text, ensure_ascii=rng.random() < 0.5)
    return encoded.replace("/", "\\/") if rng.random() < 0.2 else encoded


def scalar(rng: random.Random) -> str:
    return rng.choice(
        (string(rng), "0", "-12", "3.25", "-0.5e+7", "1E3", "true", "false", "null", "12345678901")
    )


def value(rng: random.Random, depth: int = 0) -> str:
    kind = rng.random() if depth < 5 else 1.0
    if kind < 0.3:
        items = [ws(rng) + value(rng, depth + 1) + ws(rng) for _ in range(rng.randrange(5))]
        return "[" + ",".join(items) + ws(rng) + "]"
    if kind < 0.6:
        members = [
            f"{ws(rng)}{json.dumps(rng.choice(NAMES))}{ws(rng)}:{ws(rng)}{value(rng, depth + 1)}"
            for _ in range(rng.randrange(5))
        ]
        return "{" + ",".join(members) + ws(rng) + "}"
    return scalar(rng)


def documents(count: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        yield (ws(rng) + value(rng) + ws(rng)).encode()


def paths(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    if isinstance(node, dict):
        for name, child in node.items():
            yield from paths(child, (*prefix, name))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from paths(child, (*prefix, str(index)))


def pointers(document: bytes, rng: random.Random) -> list[tuple[str, ...]]:
    """Every path in the document, and paths that name nothing."""
    found = list(paths(json.loads(document)))
    missing = [(*rng.choice(found), extra) for extra in ("zz", "9", "-", "01", "", "a", "0")]
    return found + missing


def spanned(body: Body, span: tuple[int, int] | None) -> bytes | None:
    return None if span is None else body.read(*span)


def test_span_at_names_what_raw_at_names_at_every_chunk_size() -> None:
    rng = random.Random(7)
    checked = 0
    for document in documents(120, seed=1):
        body = Body.of(document)
        for tokens in pointers(document, rng):
            expected = raw_at(document, tokens)
            for size in CHUNK_SIZES:
                got = spanned(body, streamjson.span_at(body, tokens, chunk_size=size))
                assert got == expected, (document, tokens, size)
                checked += 1
    assert checked > 10_000


def test_long_documents_cross_many_counted_stretches() -> None:
    rng = random.Random(11)
    for document in documents(40, seed=2):
        big = b'{"pad": [' + b",".join([document] * 30) + b'], "last": ' + document + b"}"
        body = Body.of(big)
        for tokens in [("last",), ("pad", "29"), *[("last", *t) for t in pointers(document, rng)]]:
            expected = raw_at(big, tokens)
            for size in (64, 500, 4096, 1 << 18):
                assert spanned(body, streamjson.span_at(body, tokens, chunk_size=size)) == expected


def test_long_runs_of_escapes_end_where_json_says() -> None:
    rng = random.Random(3)
    for _ in range(30):
        text = "".join(rng.choice(("\\", '"', "x", '\\"', "{", "]")) for _ in range(300))
        document = json.dumps({"s": text, "a": [text, {"t": text}], "z": 1}).encode()
        body = Body.of(document)
        for size in (16, 64, 256, 1000):
            for tokens in [("s",), ("a",), ("z",)]:
                span = streamjson.span_at(body, tokens, chunk_size=size)
                assert spanned(body, span) == raw_at(document, tokens)


def test_nesting_deeper_than_the_pair_passes_is_counted_step_by_step() -> None:
    deep = b"[" * 60 + b'"]["' + b"]" * 60
    document = b'{"a": [' + b",".join([deep] * 40) + b'], "b": [' + b"[" * 70 + b"]" * 70 + b"]}"
    body = Body.of(document)
    for size in (640, 6400):
        assert spanned(body, streamjson.span_at(body, ("a",), chunk_size=size)) == raw_at(
            document, ("a",)
        )
        assert spanned(body, streamjson.span_at(body, ("b",), chunk_size=size)) == raw_at(
            document, ("b",)
        )


def test_pointer_tokens_are_unescaped_names() -> None:
    body = Body.of(b'{"a/b": {"m~n": [10, 20]}}')
    span = streamjson.span_at(body, parse_pointer("/a~1b/m~0n/1"))
    assert spanned(body, span) == b"20"


def test_no_tokens_is_the_document_without_whitespace() -> None:
    body = Body.of(b' \n [1, {"a": 2}] \t')
    assert spanned(body, streamjson.span_at(body, ())) == b'[1, {"a": 2}]'


@pytest.mark.parametrize(
    "garbage",
    [b"", b"{", b'{"a"', b'{"a":', b'{"a": [1, 2', b'{"a": "x', b"{1:2}", b'{"a" 1}', b'{"a": }'],
)
def test_the_walk_refuses_truncated_or_garbled_input(garbage: bytes) -> None:
    tokens = ("a",) if garbage else ()
    for size in (1, 3, 1 << 18):
        with pytest.raises(InvalidInput):
            streamjson.span_at(Body.of(garbage), tokens, chunk_size=size)


@pytest.mark.parametrize("name", [b'"\xff"', b'"\x01"', rb'"\x"', rb'"\u12"'])
def test_a_member_name_the_walk_cannot_decode_is_refused(name: bytes) -> None:
    document = b"{" + name + b': 1, "a": 2}'
    with pytest.raises(InvalidInput):
        raw_at(document, ("a",))
    with pytest.raises(InvalidInput):
        streamjson.span_at(Body.of(document), ("a",))


def test_a_member_name_over_the_limit_is_refused() -> None:
    name = "n" * (streamjson.SMALL_BYTES + 1)
    body = Body.of(json.dumps({name: 1, "a": 2}).encode())
    with pytest.raises(InvalidInput, match="longer than"):
        streamjson.span_at(body, ("a",))


def test_member_spans_match_split_object() -> None:
    for document in documents(300, seed=3):
        if not document.strip().startswith(b"{"):
            continue
        names = split_object(document, None)[0]  # every member decoded
        expected = {name: split_object(document, name)[1] for name in names}
        body = Body.of(document)
        for size in (1, 7, 1 << 18):
            spans = streamjson.member_spans(body, chunk_size=size)
            assert {name: body.read(*span) for name, span in spans.items()} == expected


@pytest.mark.parametrize("document", [b"[1]", b'"x"', b"  ", b'{"a": 1} x', b'{"a": 1'])
def test_member_spans_refuse_what_is_not_one_object(document: bytes) -> None:
    with pytest.raises(InvalidInput):
        streamjson.member_spans(Body.of(document))


def test_member_spans_refuse_another_name_as_soon_as_it_is_met() -> None:
    """A spooled event of millions of members held a span for each before the model refused
    them all: about 20 times the body's size in memory."""
    members = b", ".join(b'"m%d": 0' % n for n in range(1000))
    body = Body.of(b'{"id": "e", "m0": 0, ' + members + b", not json at all")
    with pytest.raises(InvalidInput, match="m0: Extra inputs") as refused:
        streamjson.member_spans(body, {"id", "key"}, chunk_size=64)
    assert refused.value.extensions == {
        "errors": [{"field": "m0", "message": "Extra inputs are not permitted"}]
    }
    spans = streamjson.member_spans(Body.of(b'{"id": "e", "key": "k"}'), {"id", "key", "data"})
    assert set(spans) == {"id", "key"}


def test_load_small_decodes_and_names_the_field() -> None:
    body = Body.of(b'{"id": "e-1", "n": [1, 2], "bad": tru}')
    spans = streamjson.member_spans(body)
    assert streamjson.load_small(body, spans["id"]) == "e-1"
    assert streamjson.load_small(body, spans["n"], field="n") == [1, 2]
    with pytest.raises(InvalidInput) as too_long:
        streamjson.load_small(body, spans["n"], limit=5, field="n")
    assert too_long.value.extensions == {"field": "n"}
    with pytest.raises(InvalidInput) as invalid:
        streamjson.load_small(body, spans["bad"], field="bad")
    assert invalid.value.extensions == {"field": "bad"}


def accepted_by_rawjson(document: bytes) -> bool:
    try:
        parse_document(document)
    except InvalidInput:
        return False
    return True


def accepted_by_validate(document: bytes, size: int) -> bool:
    try:
        jsoncheck.validate(Body.of(document), chunk_size=size)
    except InvalidInput:
        return False
    return True


def mutations(document: bytes, rng: random.Random) -> Iterator[bytes]:
    for cut in range(len(document)):
        yield document[:cut]
    for _ in range(10):
        at = rng.randrange(len(document) + 1)
        yield (
            document[:at]
            + rng.choice(b'"\\{}[],: x1\x00\xff-.e').to_bytes(1, "big")
            + document[at:]
        )
        yield document[:at] + document[at + 1 :]


def test_validate_agrees_with_rawjson_on_valid_and_broken_documents() -> None:
    rng = random.Random(5)
    for document in documents(60, seed=4):
        for size in (1, 5, 1 << 18):
            assert accepted_by_validate(document, size), (document, size)
        for broken in mutations(document, rng):
            expected = accepted_by_rawjson(broken)
            for size in (2, 7, 1 << 18):
                assert accepted_by_validate(broken, size) == expected, (broken, size)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b'{"a": [1, 2', "premature EOF"),
        (b'{"a": "xyz', "unterminated string"),
        (b'{"a": 1} {}', "trailing garbage"),
        (b'{"a": NaN}', "invalid char"),
        (b'{"a": Infinity}', "invalid char"),
        (b'{"a": -Infinity}', "malformed number"),
        (b'{"a": "caf\xe9"}', "not UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "not UTF-8"),  # an encoded surrogate
        (b'{"a": "' + b"x" * 40 + b'\\q"}', "string"),
        (b'{"a": "' + b"x" * 40 + b'\x01"}', "string"),
        (b"[" + b"1" * 4301 + b"]", "4300 digits"),
    ],
)
def test_validate_says_what_is_wrong(document: bytes, message: str) -> None:
    for size in (1, 16, 1 << 18):
        with pytest.raises(InvalidInput, match=message):
            jsoncheck.validate(Body.of(document), chunk_size=size)


def test_validate_checks_a_span_as_one_value() -> None:
    body = Body.of(b'{"data": {"x": [1, "\\u00e9"]}, "bad": [1,]}')
    spans = streamjson.member_spans(body)
    jsoncheck.validate(body, *spans["data"], chunk_size=4)
    with pytest.raises(InvalidInput):
        jsoncheck.validate(body, *spans["bad"])
    with pytest.raises(InvalidInput, match="trailing garbage"):
        jsoncheck.validate(body, spans["data"][0], spans["data"][1] + 3)


def test_copy_span_writes_a_private_file_and_hashes_it(tmp_path: Path) -> None:
    document = b'{"data": "caf\xc3\xa9 \\" [x]", "id": 1}'
    body = Body.of(document)
    span = streamjson.span_at(body, ("data",))
    assert span is not None
    dst = tmp_path / "data.json"
    digest, size = streamjson.copy_span(body, span, dst, chunk_size=3)
    raw = '"café \\" [x]"'.encode()
    assert dst.read_bytes() == raw
    assert (digest, size) == (hashlib.sha256(raw).hexdigest(), len(raw))
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        streamjson.copy_span(body, span, dst)


def write_body(path: Path, head: bytes, piece: bytes, count: int, tail: bytes) -> Body:
    with path.open("wb") as file:
        file.write(head)
        for _ in range(count):
            file.write(piece)
        file.write(tail)
    return Body(path.stat().st_size, "0" * 64, path=path)


def test_huge_bodies_are_walked_in_bounded_memory(tmp_path: Path) -> None:
    string = b'lorem ipsum \\"quoted\\" {braces} [brackets] \\\\ \\u00e9 caf\xc3\xa9 ' * 1000
    dense = (
        b",".join(
            b'{"id":%d,"name":"item %d","ok":true,"v":{"x":[1.5,2]}}' % (i, i) for i in range(1000)
        )
        + b","
    )
    bodies = {
        "string": write_body(
            tmp_path / "s.json",
            b'{"data": "',
            string,
            100_000_000 // len(string),
            b'", "event_id": "e1"}',
        ),
        "dense": write_body(
            tmp_path / "d.json",
            b'{"data": [',
            dense,
            100_000_000 // len(dense),
            b'null], "event_id": "e1"}',
        ),
    }
    began = time.monotonic()
    tracemalloc.start()
    try:
        for name, body in bodies.items():
            span = streamjson.span_at(body, ("event_id",))
            assert span is not None, name
            assert body.read(*span) == b'"e1"', name
            assert set(streamjson.member_spans(body)) == {"data", "event_id"}
        jsoncheck.validate(bodies["string"])  # ijson would make one 100 MB str of it
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000
    assert time.monotonic() - began < 15


def test_validate_bounds_a_number_that_spans_chunks() -> None:
    # yajl would buffer a token that spans its input chunks, however long
    document = b"1" * (streamjson.SMALL_BYTES + 2)
    for size in (4096, 1 << 18):
        with pytest.raises(InvalidInput, match="longer than"):
            jsoncheck.validate(Body.of(document), chunk_size=size)


class _OpenedLate(type(Path())):  # type: ignore[misc]
    """A path whose first use (the copy's ``os.open``) waits for a gate: the copy's thread has
    started, and its caller gives up before the file exists."""

    gate = threading.Event()

    def __fspath__(self) -> str:
        self.gate.wait(5)
        return super().__fspath__()


def test_an_abandoned_copy_removes_the_file_it_created_after_its_caller_left(
    tmp_path: Path,
) -> None:
    """The caller set ``abandoned`` and removed the file before the thread had created it:
    the thread creates it, sees the event and removes it (it outlived the request before)."""
    body = Body.of(b'{"data": [1, 2, 3]}')
    span = streamjson.span_at(body, ("data",))
    assert span is not None
    dst, abandoned = _OpenedLate(tmp_path / "data.json"), threading.Event()
    outcome: list[BaseException | tuple[str, int]] = []

    def copy() -> None:
        try:
            outcome.append(streamjson.copy_span(body, span, dst, abandoned=abandoned))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=copy)
    thread.start()
    abandoned.set()  # what the caller does on its way out, then it removes the file
    Path(tmp_path / "data.json").unlink(missing_ok=True)
    _OpenedLate.gate.set()
    thread.join(5)
    assert len(outcome) == 1
    assert isinstance(outcome[0], streamjson.Abandoned)
    assert list(tmp_path.iterdir()) == []

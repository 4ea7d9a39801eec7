"""split_object: json.loads' values, but the exact bytes of one top-level member."""

from __future__ import annotations

import json
import random
from typing import Any, NamedTuple

import pytest
from pydantic_core import from_json

from gateway.errors import InvalidInput
from gateway.ingest import rawjson
from gateway.ingest.rawjson import parse_document, raw_at, split_object
from gateway.jsonpointer import parse_pointer, resolve

NO_MEMBER = "\x00"  # a name that none of these tests' objects has


class Member(NamedTuple):
    value: Any
    raw: bytes


def parse_object(body: bytes) -> dict[str, Member]:
    """Every member's value and exact bytes: ``split_object`` asked for none (every value), for
    one that is not there (the same), and for each member in turn (the others' values)."""
    values, raw = split_object(body, None)
    assert raw is None
    assert split_object(body, NO_MEMBER) == (values, None)
    members = {}
    for name in values:
        others, raw = split_object(body, name)
        assert others == without(values, name)
        assert raw is not None
        members[name] = Member(values[name], raw)
    return members


def without(values: dict[str, Any], name: str) -> dict[str, Any]:
    return {n: v for n, v in values.items() if n != name}


def values(members: dict[str, Member]) -> dict[str, Any]:
    return {name: m.value for name, m in members.items()}


def test_values_and_raw_bytes_of_simple_members() -> None:
    members = parse_object(b'{"a":1,"b":"x","c":null,"d":true,"e":[1,2],"f":{"g":1.5}}')
    assert values(members) == {
        "a": 1,
        "b": "x",
        "c": None,
        "d": True,
        "e": [1, 2],
        "f": {"g": 1.5},
    }
    assert {n: m.raw for n, m in members.items()} == {
        "a": b"1",
        "b": b'"x"',
        "c": b"null",
        "d": b"true",
        "e": b"[1,2]",
        "f": b'{"g":1.5}',
    }


def test_empty_object() -> None:
    assert parse_object(b"{}") == {}
    assert parse_object(b" \n{ \t}\r\n") == {}


def test_whitespace_around_members_is_not_part_of_raw() -> None:
    body = b' \n{ "a" :\t[ 1 , 2 ]\n,\r\n"b"  :  {\n "c" : "d"\n}  }\n '
    members = parse_object(body)
    assert members["a"].raw == b"[ 1 , 2 ]"
    assert members["b"].raw == b'{\n "c" : "d"\n}'
    assert values(members) == {"a": [1, 2], "b": {"c": "d"}}


def test_nested_objects_and_arrays_are_kept_verbatim() -> None:
    data = b'{"deep": {"x": [ {"y": [[], {}, [ {"z": null} ]]}, 1e5 ], "w": {}}}'
    members = parse_object(data)
    assert members["deep"].raw == data[len(b'{"deep": ') : -1]
    assert members["deep"].value == json.loads(data)["deep"]


def test_strings_with_braces_quotes_and_escapes() -> None:
    body = rb'{"s":"} { ] [ , : \" \\ \/ \n \u00e9 \ud83d\ude00","t}":"{\"k\":1}","u\"v":2}'
    members = parse_object(body)
    assert values(members) == json.loads(body)
    assert members["s"].raw == rb'"} { ] [ , : \" \\ \/ \n \u00e9 \ud83d\ude00"'
    assert members["t}"].raw == rb'"{\"k\":1}"'
    assert members['u"v'].raw == b"2"


def test_escaped_member_names_are_decoded() -> None:
    members = parse_object(rb'{"\u0061\n":1}')
    assert list(members) == ["a\n"]


def test_numbers_keep_their_exact_spelling() -> None:
    body = b'{"a":1.0000000000000001,"b":123456789012345678901234567890,"c":-0.0,"d":1E+2}'
    members = parse_object(body)
    assert members["a"].raw == b"1.0000000000000001"
    assert members["b"].raw == b"123456789012345678901234567890"
    assert members["b"].value == 123456789012345678901234567890
    assert members["c"].raw == b"-0.0"
    assert members["d"].raw == b"1E+2"


def test_non_ascii_utf8_raw_bytes_are_kept() -> None:
    body = '{"名前":"été 😀","k":"\\u00e9"}'.encode()
    members = parse_object(body)
    assert members["名前"].raw == '"été 😀"'.encode()
    assert members["名前"].value == "été 😀"
    assert members["k"].raw == b'"\\u00e9"'
    assert members["k"].value == "é"


def test_duplicate_keys_last_wins_like_json_loads() -> None:
    body = b'{"a":1,"b":2,"a":{"x":3}}'
    members = parse_object(body)
    assert values(members) == json.loads(body)
    assert list(members) == list(json.loads(body))
    assert members["a"].raw == b'{"x":3}'


# -- a body that the raw member closes goes to the Rust parser first --------------------------

BIG = b"123456789012345678901234567890"


@pytest.mark.parametrize(
    ("body", "raw"),
    [
        (rb'{"id":"a","data":"\ud800"}', rb'"\ud800"'),  # json.loads takes a lone surrogate
        (b'{"id":"a","data":' + BIG + b"}", BIG),  # beyond simdjson's 64 bits
        (rb'{"id":"\udc00","data":1}', b"1"),  # in the part before the name
        (b'{"data":{"x":1},"id":"a"}', b'{"x":1}'),  # a member after it
        (b'{"data":{"x":1},"id":"\\"data\\":2}"}', b'{"x":1}'),  # its name inside a string
        (b'{"id":{"data":2}}', None),  # only inside a nested object
        (b'{"d\\u0061ta":1}', b"1"),  # spelled with an escape
    ],
    ids=[
        "lone-surrogate",
        "bigint",
        "surrogate-before",
        "not-last",
        "in-string",
        "nested",
        "escaped",
    ],
)
def test_what_the_cut_at_the_name_does_not_fit_is_left_to_the_c_scanner(
    body: bytes, raw: bytes | None
) -> None:
    values, data = split_object(body, "data")
    assert values == without(json.loads(body), "data")
    assert data == raw


@pytest.mark.parametrize(
    ("body", "raw"),
    [
        (b'{"id":"a","key":"k","data":{"x":[1,2.50]}}', b'{"x":[1,2.50]}'),
        (b'{"data":1,"data":{"x":[2]}}', b'{"x":[2]}'),  # the last duplicate wins
        (b' {"id":"a" ,\n "data" : {"x" : 1} \n}\n', b'{"x" : 1}'),
        (b'{"data":"only"}', b'"only"'),
        (b'{"id":",\\"data\\":0}","data":3}', b"3"),  # an earlier spelling in a string
        (b'{"id":"a","data":' + b"[" * 300 + b"]" * 300 + b"}", b"[" * 300 + b"]" * 300),
    ],
    ids=["usual", "duplicate", "whitespace", "only-member", "in-string-before", "deep"],
)
def test_a_body_the_raw_member_closes_never_reaches_the_member_walk(
    body: bytes, raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def walked(text: str, member: str) -> Any:
        raise AssertionError("the member walk ran")

    monkeypatch.setattr(rawjson, "_members", walked)
    assert split_object(body, "data") == (without(json.loads(body), "data"), raw)


def test_a_repeated_raw_member_costs_the_parsers_one_pass_over_the_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each try copies part of the body: one per name would make a body of many duplicates
    cost its length squared."""
    tries = []

    def parsed(data: bytes, **options: Any) -> Any:
        tries.append(len(data))
        return from_json(data, **options)

    def checked(data: bytes) -> bool:
        tries.append(len(data))
        return is_json(data)

    is_json = rawjson._is_json
    monkeypatch.setattr(rawjson, "from_json", parsed)
    monkeypatch.setattr(rawjson, "_is_json", checked)
    body = b"{" + b",".join([b'"data":0'] * 1000) + b',"id":"x"}'
    assert split_object(body, "data") == ({"id": "x"}, b"0")
    assert len(tries) == 2  # the part before the last name, and the part after it
    assert sum(tries) <= len(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1,"data":NaN}',
        b'{"data":[1,]}',
        b'{"data":"tab\there"}',
        b'{"data":1 2}',
        b'{"data":{"a":1}}}',
        b'{"data":"\xff"}',
        b'{,"data":2}',
        b'{ \n,"data":[1]}',
        b'{"id":"a","data":\xef\xbb\xbf{"x":1}}',
        b'{"id":"a","data": \xef\xbb\xbf 1}',
        b'{"id":"a","data":' + b"[" * 1000 + b"]" * 1000 + b"}",
    ],
    ids=[
        "nan",
        "trailing-comma",
        "control-char",
        "two-values",
        "extra-brace",
        "not-utf8",
        "leading-comma",
        "leading-comma-after-blanks",
        "byte-order-mark",
        "byte-order-mark-in-blanks",
        "deeper-than-the-walk-goes",
    ],
)
def test_a_closing_raw_member_that_is_not_json_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        split_object(body, "data")


@pytest.mark.parametrize(
    "body",
    [b"[]", b'"x"', b"1", b"null", b"true", b"", b"   ", b'[{"a":1}]'],
    ids=["array", "string", "number", "null", "true", "empty", "blank", "array-of-object"],
)
def test_not_an_object_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="not a JSON object"):
        parse_object(body)


@pytest.mark.parametrize("body", [b"{} x", b"{}{}", b'{"a":1},', b'{"a":1} []', b"{}\x00"])
def test_trailing_garbage_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="not a JSON object"):
        parse_object(body)


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"a', b'{"a"', b'{"a":', b'{"a":1', b'{"a":1,', b'{"a":[1,2', b'{"a":"x', b"{ "],
)
def test_truncated_input_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="not a JSON object"):
        parse_object(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":[1,NaN]}',
        b'{"a":{"b":Infinity}}',
    ],
)
def test_nan_and_infinity_are_rejected(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_object(body)


@pytest.mark.parametrize(
    "body",
    [b'{"a":"\xff"}', b'{"\xc3":1}', b'{"a":"\xed\xa0\x80"}', b"\xef\xbb", b'{"a":"\xe9t\xe9"}'],
)
def test_invalid_utf8_is_rejected(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="not UTF-8"):
        parse_object(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1,}',
        b'{"a" 1}',
        b'{"a":1 "b":2}',
        b"{'a':1}",
        b"{a:1}",
        b'{"a":01}',
        b'{"a":"tab\there"}',
        b'{"a":tru}',
        b'{,"a":1}',
        b'{ \n,"a":[1]}',
        b'\xef\xbb\xbf{"a":1}',
    ],
    ids=[
        "trailing-comma",
        "missing-colon",
        "missing-comma",
        "single-quotes",
        "bare-name",
        "leading-zero",
        "control-char",
        "bad-literal",
        "leading-comma",
        "leading-comma-after-blanks",
        "bom",
    ],
)
def test_malformed_json_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        parse_object(body)


def test_deeply_nested_input_is_invalid_not_a_crash() -> None:
    depth = 100_000
    body = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidInput, match="not a JSON object"):
        parse_object(body)


def test_invalid_input_is_a_422() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_object(b"[]")
    assert info.value.status == 422


# -- agreement with json.loads on generated objects ------------------------------------------

ALPHABET = 'aZ09 _-"\\/{}[]:,\n\t\x01é日😀\u2028'


def random_string(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 8)))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "str", "bool", "null", "bigint"]
    if depth < 3:
        kinds += ["list", "dict"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.randint(-(10**6), 10**6)
    if kind == "bigint":
        return rng.randint(10**20, 10**40) * rng.choice([1, -1])
    if kind == "float":
        return rng.uniform(-1e6, 1e6) * rng.choice([1, 1e-12, 1e12])
    if kind == "str":
        return random_string(rng)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_string(rng): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def random_ws(rng: random.Random) -> str:
    return "".join(rng.choice(" \t\n\r") for _ in range(rng.choice([0, 0, 1, 3])))


def render(value: Any, rng: random.Random) -> str:
    """One member value in a randomly chosen but valid spelling."""
    return json.dumps(
        value,
        ensure_ascii=rng.random() < 0.5,
        indent=rng.choice([None, 0, 2, "\t"]),
        separators=rng.choice([(",", ":"), (", ", ": "), (" ,", " : ")]),
    )


def spell_member(name: str, text: str, rng: random.Random) -> str:
    ws = [random_ws(rng) for _ in range(4)]
    return f"{ws[0]}{json.dumps(name)}{ws[1]}:{ws[2]}{text}{ws[3]}"


def test_agrees_with_json_loads_and_slices_exact_member_bytes() -> None:
    rng = random.Random(2024)
    for _ in range(400):
        names = [random_string(rng) for _ in range(rng.randint(0, 6))]
        if names and rng.random() < 0.2:
            names.append(rng.choice(names))  # a duplicate name
        spelled = [(name, render(random_value(rng), rng)) for name in names]
        parts = [spell_member(name, text, rng) for name, text in spelled]
        body = (
            random_ws(rng) + "{" + ",".join(parts) + random_ws(rng) + "}" + random_ws(rng)
        ).encode()

        members = parse_object(body)

        expected = json.loads(body)
        assert values(members) == expected
        assert list(members) == list(expected)
        last_spelling = dict(spelled)
        assert {n: m.raw for n, m in members.items()} == {
            n: t.encode() for n, t in last_spelling.items()
        }


# -- raw_at: the exact bytes a JSON pointer names (webhook data) ---------------------------


NESTED = b' {"a" : [ 1 , {"b" : {\n "c" : 1.0000000000000001 } } , "\\u00e9" ], "x": true}\n'


@pytest.mark.parametrize(
    ("pointer", "raw"),
    [
        ("", NESTED.strip()),
        ("/a", b'[ 1 , {"b" : {\n "c" : 1.0000000000000001 } } , "\\u00e9" ]'),
        ("/a/0", b"1"),
        ("/a/1/b", b'{\n "c" : 1.0000000000000001 }'),
        ("/a/1/b/c", b"1.0000000000000001"),
        ("/a/2", b'"\\u00e9"'),
        ("/x", b"true"),
    ],
)
def test_raw_at_slices_the_exact_bytes_a_pointer_names(pointer: str, raw: bytes) -> None:
    assert raw_at(NESTED, parse_pointer(pointer)) == raw


@pytest.mark.parametrize(
    "pointer", ["/nope", "/a/3", "/a/-", "/a/01", "/a/x", "/a/0/b", "/x/y", "/a/1/b/c/d"]
)
def test_raw_at_is_none_where_nothing_is(pointer: str) -> None:
    assert raw_at(NESTED, parse_pointer(pointer)) is None


def test_raw_at_empty_containers_and_escaped_names() -> None:
    body = b'{"o": {}, "l": [], "a/b": {"m~n": [ ]}}'
    assert raw_at(body, ("o", "x")) is None
    assert raw_at(body, ("l", "0")) is None
    assert raw_at(body, parse_pointer("/a~1b/m~0n")) == b"[ ]"


def test_raw_at_takes_the_last_duplicate_like_json_loads() -> None:
    body = b'{"a": {"b": 1}, "a": {"b": 2, "b": [3]}}'
    assert raw_at(body, ("a", "b")) == b"[3]"
    assert raw_at(body, ("a",)) == b'{"b": 2, "b": [3]}'


def test_raw_at_refuses_bodies_that_are_not_json() -> None:
    for body in (b'{"a": [1, 2', b"\xff", b'{"a" 1}'):
        with pytest.raises(InvalidInput):
            raw_at(body, ("a", "1"))


def test_parse_document_takes_any_json_value() -> None:
    assert parse_document(b' [1, {"a": null}] ') == [1, {"a": None}]
    assert parse_document(b'"x"') == "x"
    for body in (b"", b"[] []", b"NaN", b"\xff", b"[1,"):
        with pytest.raises(InvalidInput):
            parse_document(body)


def paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for name, child in value.items():
            found += paths(child, (*prefix, name))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, str(index)))
    return found


def test_raw_at_agrees_with_resolve_on_generated_documents() -> None:
    rng = random.Random(6901)
    for _ in range(300):
        document = random_value(rng)
        body = (random_ws(rng) + render(document, rng) + random_ws(rng)).encode()
        decoded = parse_document(body)
        for tokens in paths(decoded):
            raw = raw_at(body, tokens)
            assert raw is not None
            assert raw in body
            assert json.loads(raw) == resolve(decoded, tokens)


def test_the_cut_at_the_name_agrees_with_the_member_walk_on_generated_bodies() -> None:
    """Bodies full of decoys: the raw member's name in strings, in nested objects, repeated,
    first, last, missing. Whatever path ``split_object`` takes, its answer is the walk's."""
    rng = random.Random(7)
    decoys = ['"data"', ',"data":1}', '{"data":', '\\"data\\":', "data"]
    for _ in range(2000):
        members = []
        for _ in range(rng.randint(0, 5)):
            name = rng.choice(["data", "data", "id", random_string(rng), rng.choice(decoys)])
            value: Any = random_value(rng)
            if rng.random() < 0.3:
                value = rng.choice([rng.choice(decoys), {"data": value}, [{"data": 1}, value]])
            members.append(spell_member(name, render(value, rng), rng))
        body = (random_ws(rng) + "{" + ",".join(members) + random_ws(rng) + "}").encode()
        expected = rawjson._members(body.decode(), "data")
        assert split_object(body, "data") == expected
        assert expected[0] == without(json.loads(body), "data")


@pytest.mark.parametrize(
    "body", [b'{"id":"z1","key":"z1","status":"succeeded","data":{"a":1}', b'{"id":"e1",']
)
def test_a_body_cut_short_says_so(body: bytes) -> None:
    """It said "string index out of range", the scanner's IndexError at the body's end."""
    with pytest.raises(InvalidInput) as refused:
        split_object(body, "data")
    assert refused.value.detail == "the body is not a JSON object: it ends before its value does"

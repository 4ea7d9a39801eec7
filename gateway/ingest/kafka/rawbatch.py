"""Record batches read without aiokafka's decoder, for the records it cannot hand out.

aiokafka decodes each header name as UTF-8 and raises on one that is not, and then on every
later fetch of that partition: a record batch is decoded from its first record, so seeking past
the record inside its batch does not help either. Header names are strings in the protocol,
but librdkafka and other clients send whatever bytes they are given. The consumer then fetches
that one batch itself and reads it here (format v2, the only one with headers): names are
decoded with ``surrogateescape``, so the decoder can refuse the record and the dead letter can
keep its headers, and everything else is read as aiokafka reads it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import codec
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.util import calc_crc32c, decode_varint
from aiokafka.structs import TopicPartition

_PREFIX = struct.Struct(">qi")  # base offset, length of the rest
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC_FROM = struct.calcsize(">qiibI")  # the CRC covers the batch from its attributes on
_MAGIC_AT = struct.calcsize(">qii")
_V2 = 2
_CODEC_MASK, _LOG_APPEND_TIME, _CONTROL = 0x07, 0x08, 0x20
_DECOMPRESS: dict[int, Callable[[bytes], bytes]] = {
    1: codec.gzip_decode,
    2: codec.snappy_decode,
    3: codec.lz4_decode,
    4: codec.zstd_decode,
}
READ_UNCOMMITTED = 0


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as ``ConsumerRecord`` has it; a header name that was not UTF-8 holds lone
    surrogates (``surrogateescape``)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class RawBatch:
    """The records of one batch from an offset on (one at least), and where the next batch
    starts."""

    records: list[RawRecord]
    next_offset: int


async def fetch_batch(
    consumer: Any, tp: TopicPartition, offset: int, max_bytes: int, wait_ms: int
) -> RawBatch | None:
    """The batch of ``tp`` holding ``offset``, fetched from the partition's leader; None if
    the leader is unknown for now or the partition has nothing there (yet)."""
    client = consumer._client  # aiokafka has no public call for one raw fetch
    leader = client.cluster.leader_for_partition(tp)
    if leader is None or leader < 0:
        return None
    partitions = [(tp.partition, offset, max_bytes)]
    request = FetchRequest(wait_ms, 1, max_bytes, READ_UNCOMMITTED, [(tp.topic, partitions)])
    response = await client.send(leader, request)
    for topic, answers in response.topics:
        for partition, error_code, _highwater, *rest in answers:
            if (topic, partition) == (tp.topic, tp.partition):
                error = for_code(error_code)
                if error.errno != 0:
                    raise error()
                return batch_at(tp, bytes(rest[-1] or b""), offset)
    return None


def batch_at(tp: TopicPartition, data: bytes, offset: int) -> RawBatch | None:
    """The records at ``offset`` and after of the first batch in ``data`` (a fetch's record
    set) that has any; None if ``data`` ends first (a batch cut off at the size limit)."""
    pos = 0
    while pos + _PREFIX.size <= len(data):
        _, length = _PREFIX.unpack_from(data, pos)
        end = pos + _PREFIX.size + length
        if end > len(data):
            return None
        batch = memoryview(data)[pos:end]
        pos = end
        if batch[_MAGIC_AT] != _V2:  # older formats have no headers: aiokafka reads them
            raise CorruptRecordException(f"{tp}: a batch of format {batch[_MAGIC_AT]} here")
        header = _HEADER.unpack_from(batch)
        base_offset, attributes, last_delta = header[0], header[5], header[6]
        next_offset = base_offset + last_delta + 1
        if next_offset <= offset:
            continue
        if calc_crc32c(batch[_CRC_FROM:].tobytes()) != header[4]:
            raise CorruptRecordException(f"{tp}: invalid CRC in the batch at {base_offset}")
        if attributes & _CONTROL:  # a transaction marker: aiokafka skips it without moving
            continue  # the position, so the batch asked for may come after it
        records = _records(tp, header, _body(batch[_HEADER.size :], attributes))
        after = [r for r in records if r.offset >= offset]
        if after:  # else compacted away: skipped as the marker is
            return RawBatch(after, next_offset)
    return None


def _body(data: memoryview, attributes: int) -> bytes:
    codec_id = attributes & _CODEC_MASK
    if codec_id == 0:
        return data.tobytes()
    decompress = _DECOMPRESS.get(codec_id)
    if decompress is None:
        raise UnsupportedCodecError(f"unknown compression codec {codec_id:#04x}")
    return decompress(data.tobytes())


def _records(tp: TopicPartition, header: tuple[int, ...], body: bytes) -> list[RawRecord]:
    base_offset, attributes, first_ts, max_ts, count = (
        header[0],
        header[5],
        header[7],
        header[8],
        header[12],
    )
    records, pos = [], 0
    for _ in range(count):
        length, start = decode_varint(body, pos)
        end, pos = start + length, start
        _, pos = decode_varint(body, pos)  # the record's attributes: unused
        ts_delta, pos = decode_varint(body, pos)
        offset_delta, pos = decode_varint(body, pos)
        key, pos = _bytes(body, pos)
        value, pos = _bytes(body, pos)
        headers: list[tuple[str, bytes]] = []
        header_count, pos = decode_varint(body, pos)
        for _ in range(header_count):
            name, pos = _bytes(body, pos)
            if name is None:
                raise CorruptRecordException(f"{tp}: a header without a name")
            header_value, pos = _bytes(body, pos)
            # a header's value may be null, as aiokafka hands it out
            headers.append((name.decode("utf-8", "surrogateescape"), header_value))  # type: ignore[arg-type]
        if pos != end:
            raise CorruptRecordException(f"{tp}: a record of {length} bytes read as {pos - start}")
        timestamp = max_ts if attributes & _LOG_APPEND_TIME else first_ts + ts_delta
        offset = base_offset + offset_delta
        records.append(RawRecord(tp.topic, tp.partition, offset, timestamp, key, value, headers))
    if pos != len(body):
        raise CorruptRecordException(f"{tp}: bytes left after the batch's {count} records")
    return records


def _bytes(body: bytes, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(body, pos)
    if length < 0:
        return None, pos
    return body[pos : pos + length], pos + length

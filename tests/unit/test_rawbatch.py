"""Record batches read without aiokafka's decoder (``rawbatch``): the same records as aiokafka
reads, a header name that is not UTF-8 kept as lone surrogates, only the batch that holds the
offset asked for (markers skipped), and corruption refused; and the refusal recognised from
either of aiokafka's decoders."""

from __future__ import annotations

import struct

import pytest
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import (
    DefaultRecordBatch,
    _DefaultRecordBatchBuilderPy,
    _DefaultRecordBatchPy,
)
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from gateway.ingest.kafka.rawbatch import RawRecord, batch_at
from gateway.ingest.kafka.refused import is_refusal

TP = TopicPartition("resume.events", 3)
GZIP, LOG_APPEND_TIME = 1, 0x08


class RawName(str):
    """A header name whose bytes are not UTF-8: aiokafka's builder encodes names with
    ``encode``, which is the only way to get such bytes into a batch from Python."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"bad\xff" + str(self).encode()


def build(
    base_offset: int,
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
    compression: int = 0,
) -> bytes:
    builder = _DefaultRecordBatchBuilderPy(
        2, compression, 0, producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20
    )
    for delta, (key, value, headers) in enumerate(records):
        builder.append(delta, 1_700_000_000_000 + delta, key, value, headers)
    batch = bytearray(builder.build())
    struct.pack_into(">q", batch, 0, base_offset)  # the broker assigns it; the CRC skips it
    return bytes(batch)


@pytest.mark.parametrize("compression", [0, GZIP])
def test_a_batch_reads_as_aiokafka_reads_it(compression: int) -> None:
    rows = [
        (b"k0", b'{"n": 0}', [("trace", b"t0")]),
        (None, b'{"n": 1}', []),
        (b"k2", None, [("a", b"1"), ("\u00fc", b"2")]),
    ]
    data = build(40, rows, compression)
    expected = [
        RawRecord(TP.topic, TP.partition, r.offset, r.timestamp, r.key, r.value, list(r.headers))
        for r in DefaultRecordBatch(data)
    ]
    batch = batch_at(TP, data, 40)
    assert batch is not None
    assert batch.records == expected
    assert [r.offset for r in batch.records] == [40, 41, 42]
    assert batch.next_offset == 43


def test_a_header_name_that_is_not_utf8_keeps_its_bytes_as_surrogates() -> None:
    data = build(7, [(b"k", b"{}", [("ok", b"1"), (RawName("x"), b"v")])])
    with pytest.raises(UnicodeDecodeError):  # why this module exists
        list(DefaultRecordBatch(data))
    batch = batch_at(TP, data, 7)
    assert batch is not None
    (record,) = batch.records
    name = record.headers[1][0]
    assert name.encode("utf-8", "surrogateescape") == b"bad\xffx"
    assert record.headers[0] == ("ok", b"1")


def test_only_the_batch_holding_the_offset_is_read_from_that_offset_on() -> None:
    first = build(10, [(b"a", b"1", []), (b"b", b"2", [])])
    second = build(12, [(b"c", b"3", []), (b"d", b"4", []), (b"e", b"5", [])])
    data = first + second
    batch = batch_at(TP, data, 13)
    assert batch is not None
    assert [(r.offset, r.key) for r in batch.records] == [(13, b"d"), (14, b"e")]
    assert batch.next_offset == 15
    batch = batch_at(TP, data, 11)
    assert batch is not None
    assert [r.offset for r in batch.records] == [11]
    assert batch.next_offset == 12
    assert batch_at(TP, data, 15) is None  # past what was fetched
    assert batch_at(TP, data + second[:30], 15) is None  # a batch cut off at the size limit


def test_a_log_append_time_batch_gives_each_record_the_batch_time() -> None:
    data = bytearray(build(0, [(b"a", b"1", []), (b"b", b"2", [])]))
    attributes_at, max_ts_at = struct.calcsize(">qiibI"), struct.calcsize(">qiibIhiq")
    struct.pack_into(">h", data, attributes_at, LOG_APPEND_TIME)
    struct.pack_into(">q", data, max_ts_at, 1_800_000_000_000)
    struct.pack_into(">I", data, struct.calcsize(">qiib"), calc_crc32c(bytes(data[attributes_at:])))
    batch = batch_at(TP, bytes(data), 0)
    assert batch is not None
    assert [r.timestamp for r in batch.records] == [1_800_000_000_000] * 2


def test_a_corrupt_batch_is_refused() -> None:
    data = bytearray(build(0, [(b"a", b"value", [])]))
    data[-2] ^= 0xFF
    with pytest.raises(CorruptRecordException, match="CRC"):
        batch_at(TP, bytes(data), 0)


def test_a_transaction_marker_and_a_batch_with_nothing_left_are_skipped() -> None:
    """aiokafka skips both without moving its position: the position it reports after the
    last record it handed out may point at them rather than at the batch it refused."""
    marker = bytearray(build(5, [(b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00", [])]))
    attributes_at = struct.calcsize(">qiibI")
    struct.pack_into(">h", marker, attributes_at, 0x30)  # control, transactional
    crc = calc_crc32c(bytes(marker[attributes_at:]))
    struct.pack_into(">I", marker, struct.calcsize(">qiib"), crc)
    compacted = build(2, [(b"a", b"1", []), (b"b", b"2", [])])  # offsets 2 and 3, both < 4
    data = compacted + bytes(marker) + build(6, [(b"c", b"3", [])])
    batch = batch_at(TP, data, 4)
    assert batch is not None
    assert [(r.offset, r.key) for r in batch.records] == [(6, b"c")]
    assert batch.next_offset == 7


def test_both_of_aiokafkas_decoders_refusals_are_recognised() -> None:
    data = build(0, [(b"k", b"{}", [(RawName("x"), b"v")])])
    refusals = []
    for decoder in (DefaultRecordBatch, _DefaultRecordBatchPy):  # compiled, pure Python
        with pytest.raises(Exception) as refused:  # noqa: PT011  # each raises its own
            list(decoder(data))
        refusals.append(refused.value)
    assert [type(e) for e in refusals] == [UnicodeDecodeError, CorruptRecordException]
    assert all(is_refusal(e) for e in refusals)
    assert not is_refusal(CorruptRecordException("Invalid CRC"))

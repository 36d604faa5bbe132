"""The disk spool: records survive reopen in order, a torn tail is cut, the cap drops and counts, replay truncates."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.redirector.spool import Spool, SpoolLocked, decode_records, encode_record


def test_frame_round_trip() -> None:
    """A framed record decodes to its key and value, including an empty key."""
    data = encode_record(b"link-1", b"value") + encode_record(b"", b"\x00\xff")
    records, used = decode_records(data)
    assert records == [(b"link-1", b"value"), (b"", b"\x00\xff")]
    assert used == len(data)


async def test_records_survive_reopen_in_order(tmp_path: Path) -> None:
    """Flushed records are read back in append order after the file is closed and reopened."""
    spool = Spool(tmp_path / "s.spool", 1 << 20)
    spool.open()
    for i in range(100):
        assert spool.append(b"k%d" % (i % 3), b"v%d" % i)
    await spool.close()
    again = Spool(tmp_path / "s.spool", 1 << 20)
    assert again.open() > 0
    records, _ = await again.read_chunk()
    assert [v for _, v in records] == [b"v%d" % i for i in range(100)]
    await again.close()


async def test_torn_tail_is_cut_and_earlier_records_kept(tmp_path: Path) -> None:
    """A half-written last record (or one with a bad CRC) is cut off at open; the records before it stay."""
    path = tmp_path / "s.spool"
    good = encode_record(b"k", b"one") + encode_record(b"k", b"two")
    torn = encode_record(b"k", b"three")[:-2]
    path.write_bytes(good + torn)
    spool = Spool(path, 1 << 20)
    assert spool.open() == len(good)
    assert path.stat().st_size == len(good)
    records, _ = await spool.read_chunk()
    assert [v for _, v in records] == [b"one", b"two"]
    await spool.close()

    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    spool = Spool(path, 1 << 20)
    assert spool.open() == len(encode_record(b"k", b"one"))
    await spool.close()


async def test_cap_drops_and_counts(tmp_path: Path) -> None:
    """Past the size cap a record is refused and counted, never written."""
    one = len(encode_record(b"k", b"x" * 100))
    spool = Spool(tmp_path / "s.spool", one * 3)
    spool.open()
    assert all(spool.append(b"k", b"x" * 100) for _ in range(3))
    assert spool.append(b"k", b"x" * 100) is False
    assert spool.dropped == 1
    await spool.flush()
    assert (tmp_path / "s.spool").stat().st_size == one * 3
    await spool.close()


async def test_commit_keeps_offset_then_truncates(tmp_path: Path) -> None:
    """A partial commit survives a reopen (no record replayed twice); committing everything truncates the file."""
    path = tmp_path / "s.spool"
    spool = Spool(path, 1 << 20)
    spool.open()
    for i in range(10):
        spool.append(b"k", b"v%d" % i)
    records, _ = await spool.read_chunk(max_bytes=len(encode_record(b"k", b"v0")) * 4)
    assert len(records) == 4
    await spool.commit(len(encode_record(b"k", b"v0")) * 4)
    await spool.close()

    spool = Spool(path, 1 << 20)
    spool.open()
    records, end = await spool.read_chunk()
    assert [v for _, v in records] == [b"v%d" % i for i in range(4, 10)]
    await spool.commit(end)
    assert spool.unread == 0
    assert path.stat().st_size == 0
    await spool.close()


async def test_one_process_per_spool(tmp_path: Path) -> None:
    """A second open of the same spool file is refused while the first holds it."""
    first = Spool(tmp_path / "s.spool", 1 << 20)
    first.open()
    with pytest.raises(SpoolLocked):
        Spool(tmp_path / "s.spool", 1 << 20).open()
    await first.close()

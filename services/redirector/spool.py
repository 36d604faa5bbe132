"""The disk spool: clicks the broker could not take yet, kept in order until they are published.

One append-only file per redirector worker (``$CLICKWIRE_HOME/spool/redirector-w<N>.spool``, held
with an exclusive ``flock`` so two processes never share one). Each record is framed as

    u32 length | u32 crc32(payload) | payload = u16 key length | key | value        (little-endian)

Appends are buffered in memory and written + fsync'd in small batches by :meth:`Spool.flush` (the
publisher calls it every few milliseconds), so the response path never touches the disk. A torn
tail (power cut mid-write) fails its length or CRC check and is cut off at the next open; nothing
before it is lost. Replay reads from a committed offset kept in ``<file>.offset`` (fsync'd after
each published chunk, so a restart mid-replay does not publish a chunk twice); when everything has
been read and committed the file is truncated to zero.

The file is capped (CLICKWIRE_REDIRECTOR_SPOOL_MAX_MB): a record that would pass the cap is dropped
and counted, and from 80% of the cap a warning is logged every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import zlib
from pathlib import Path
from typing import Final

import structlog
from prometheus_client import Counter, Gauge

from clickwire.logs import RateLimited

log = structlog.get_logger(__name__)

_FRAME: Final = struct.Struct("<II")
_KEYLEN: Final = struct.Struct("<H")
WARN_FRACTION: Final = 0.8

SPOOL_BYTES = Gauge("clickwire_redirector_spool_bytes", "Bytes in the click spool (written and pending)")
SPOOL_FULLNESS = Gauge("clickwire_redirector_spool_fullness", "Spool size as a fraction of its cap")
SPOOLED = Counter("clickwire_redirector_spooled_total", "Clicks written to the disk spool")
DROPPED = Counter("clickwire_redirector_spool_dropped_total", "Clicks dropped because the spool was full")


class SpoolLocked(RuntimeError):
    """Another process holds this spool file."""


def encode_record(key: bytes, value: bytes) -> bytes:
    """Frame one (key, value) record: length, CRC32, key length, key, value."""
    payload = _KEYLEN.pack(len(key)) + key + value
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode_records(data: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """Return the valid records at the start of `data` and how many bytes they take (stops at a torn tail)."""
    records: list[tuple[bytes, bytes]] = []
    pos = 0
    end = len(data)
    while pos + _FRAME.size <= end:
        length, crc = _FRAME.unpack_from(data, pos)
        start = pos + _FRAME.size
        if length < _KEYLEN.size or start + length > end:
            break
        payload = data[start:start + length]
        if zlib.crc32(payload) != crc:
            break
        (klen,) = _KEYLEN.unpack_from(payload)
        if _KEYLEN.size + klen > length:
            break
        records.append((payload[2:2 + klen], payload[2 + klen:]))
        pos = start + length
    return records, pos


class Spool:
    """An append-only, CRC-framed, size-capped file of (key, value) records, replayed in order."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._offset_path = path.with_name(path.name + ".offset")
        self._fd = -1
        self._size = 0  # bytes on disk (valid records only)
        self._read = 0  # committed replay offset
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._lock = asyncio.Lock()
        self._warn = RateLimited(5.0)
        self.dropped = 0

    def open(self) -> int:
        """Lock and open the file, cut a torn tail, load the replay offset; return unread bytes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLocked(f"{self.path} is held by another redirector process") from None
        self._fd = fd
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0) if size else b""
        _, valid = decode_records(data)
        if valid != size:
            log.warning("spool tail was torn, cut off", path=str(self.path), lost_bytes=size - valid)
            os.ftruncate(fd, valid)
            os.fsync(fd)
        self._size = valid
        self._read = min(self._load_offset(), valid)
        self._update_gauges()
        return self._size - self._read

    def _load_offset(self) -> int:
        try:
            return int(self._offset_path.read_text().strip() or "0")
        except (FileNotFoundError, ValueError):
            return 0

    @property
    def unread(self) -> int:
        """Bytes appended (on disk or pending) and not yet committed as published."""
        return self._size + self._pending_bytes - self._read

    @property
    def size(self) -> int:
        """Bytes on disk plus bytes waiting for the next flush."""
        return self._size + self._pending_bytes

    def append(self, key: bytes, value: bytes) -> bool:
        """Queue one record for the next flush; False (and counted) when the cap would be passed."""
        frame = encode_record(key, value)
        if self._size + self._pending_bytes + len(frame) > self.max_bytes:
            self.dropped += 1
            DROPPED.inc()
            if self._warn.allow("full"):
                log.error("click spool is FULL, clicks are being dropped", path=str(self.path),
                          max_bytes=self.max_bytes, dropped=self.dropped)
            return False
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        return True

    async def flush(self) -> None:
        """Write and fsync every pending record (in a thread: the event loop keeps serving)."""
        async with self._lock:
            if not self._pending:
                return
            frames, self._pending = self._pending, []
            data = b"".join(frames)
            await asyncio.to_thread(self._write, data)
            self._size += len(data)
            self._pending_bytes -= len(data)
            SPOOLED.inc(len(frames))
            self._update_gauges()
            if self.size >= WARN_FRACTION * self.max_bytes and self._warn.allow("near"):
                log.warning("click spool is nearly full: is the broker down?", path=str(self.path),
                            bytes=self.size, max_bytes=self.max_bytes)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    async def read_chunk(self, max_bytes: int = 1 << 20) -> tuple[list[tuple[bytes, bytes]], int]:
        """Return the next unread records on disk (at most about `max_bytes`) and the offset after them."""
        await self.flush()
        want = min(self._size - self._read, max_bytes)
        if want <= 0:
            return [], self._read
        data = await asyncio.to_thread(os.pread, self._fd, want, self._read)
        records, used = decode_records(data)
        if not records and want < self._size - self._read:
            # One record larger than max_bytes: read exactly that record.
            length, _ = _FRAME.unpack_from(data)
            data = await asyncio.to_thread(os.pread, self._fd, _FRAME.size + length, self._read)
            records, used = decode_records(data)
        return records, self._read + used

    async def commit(self, offset: int) -> None:
        """Mark everything before `offset` as published; truncate the file once all of it is."""
        async with self._lock:
            self._read = offset
            if self._read >= self._size and not self._pending:
                await asyncio.to_thread(self._truncate)
                self._size = self._read = 0
            else:
                await asyncio.to_thread(self._store_offset, offset)
            self._update_gauges()

    def _truncate(self) -> None:
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        with contextlib.suppress(FileNotFoundError):
            self._offset_path.unlink()

    def _store_offset(self, offset: int) -> None:
        tmp = self._offset_path.with_name(self._offset_path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(str(offset))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._offset_path)

    def _update_gauges(self) -> None:
        SPOOL_BYTES.set(self.size)
        SPOOL_FULLNESS.set(self.size / self.max_bytes if self.max_bytes else 0.0)

    async def close(self) -> None:
        """Flush what is pending and release the file."""
        await self.flush()
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1

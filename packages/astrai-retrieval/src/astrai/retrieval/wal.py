"""The write-ahead log: length + CRC32 framed records, appended and fsynced one batch at a time.

    frame = u32 payload length | u32 CRC32(payload) | payload

A crash can only tear the last frame (a record is acknowledged after its fsync, and nothing is
written after an unacknowledged one), so reading stops at the first frame that is short or
fails its CRC: that frame and anything after it were never acknowledged. `scan` reports where
the good part ends; the writer truncates there on open, a follower just waits for more. A bad
frame followed by a good one is not a torn tail but damage (`corrupt`): the store refuses to
open rather than silently drop acknowledged writes.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

_FRAME = struct.Struct("<II")
MAX_RECORD_BYTES = 1 << 31


@dataclass
class Scan:
    records: list[bytes]
    end: int       # offset just past the last good frame
    torn: bool     # bytes after `end` that do not form a good frame
    corrupt: bool  # ...and good frames follow them: damage, not a torn tail


def scan(path: Path, start: int = 0) -> Scan:
    """The good frames of `path` from byte `start`."""
    records: list[bytes] = []
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    offset = 0
    corrupt = False
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        body_start = offset + _FRAME.size
        if length > MAX_RECORD_BYTES or body_start + length > len(data):
            break
        payload = data[body_start: body_start + length]
        if zlib.crc32(payload) != crc:
            corrupt = _good_frame_at(data, body_start + length)
            break
        records.append(payload)
        offset = body_start + length
    return Scan(records, start + offset, offset != len(data), corrupt)


def _good_frame_at(data: bytes, offset: int) -> bool:
    """Whether a complete frame with a matching CRC starts at `offset`."""
    if offset + _FRAME.size > len(data):
        return False
    length, crc = _FRAME.unpack_from(data, offset)
    end = offset + _FRAME.size + length
    return end <= len(data) and zlib.crc32(data[offset + _FRAME.size: end]) == crc


class WalWriter:
    """Appends frames to one log file; `append` returns after the bytes are on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self._fd).st_size

    def append(self, payload: bytes) -> None:
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        view = memoryview(frame)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.size += len(frame)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def truncate(path: Path, end: int) -> None:
    """Cut a torn tail off (writer only), durably."""
    with open(path, "r+b") as f:
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())

"""Self-checking binary containers and atomic file writes.

A blob is `MAGIC | u32 header length | header JSON | arrays... | u32 CRC32 of everything
before it`; the header names each array's dtype and shape, in order. `atomic_write` writes a
temporary file in the same folder, fsyncs it, renames it over the target and fsyncs the folder,
so a reader sees the old file or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .errors import StoreCorruptError

MAGIC = b"ASTRAIRB"
_U32 = struct.Struct("<I")


def pack(kind: str, header: Mapping, arrays: Mapping[str, np.ndarray]) -> bytes:
    """One blob: `kind` and `header` as JSON, then each array's bytes (C order, little-endian)."""
    layout = [{"name": name, "dtype": np.dtype(a.dtype).newbyteorder("<").str, "shape": list(a.shape)}
              for name, a in arrays.items()]
    head = json.dumps({"kind": kind, "header": dict(header), "arrays": layout}).encode()
    parts = [MAGIC, _U32.pack(len(head)), head]
    parts += [np.ascontiguousarray(a, dtype=np.dtype(a.dtype).newbyteorder("<")).tobytes() for a in arrays.values()]
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


def unpack(data: bytes | memoryview, kind: str, source: str = "blob") -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a blob of `kind`; StoreCorruptError if anything does not check out.
    The arrays are copies (writable, independent of `data`)."""
    view = memoryview(data)
    if len(view) < len(MAGIC) + 8 or bytes(view[: len(MAGIC)]) != MAGIC:
        raise StoreCorruptError(f"{source}: not an astrai.retrieval file (bad magic)")
    (crc,) = _U32.unpack(view[-4:])
    if zlib.crc32(view[:-4]) != crc:
        raise StoreCorruptError(f"{source}: checksum mismatch (the file is damaged)")
    (head_len,) = _U32.unpack(view[len(MAGIC): len(MAGIC) + 4])
    offset = len(MAGIC) + 4
    try:
        head = json.loads(bytes(view[offset: offset + head_len]))
    except ValueError as exc:
        raise StoreCorruptError(f"{source}: unreadable header ({exc})") from None
    if head.get("kind") != kind:
        raise StoreCorruptError(f"{source}: holds a {head.get('kind')!r}, expected a {kind!r}")
    offset += head_len
    arrays = {}
    for spec in head["arrays"]:
        dtype = np.dtype(spec["dtype"])
        count = int(np.prod(spec["shape"], dtype=np.int64))
        size = count * dtype.itemsize
        if offset + size > len(view) - 4:
            raise StoreCorruptError(f"{source}: truncated array {spec['name']!r}")
        arrays[spec["name"]] = np.frombuffer(view[offset: offset + size], dtype=dtype).reshape(spec["shape"]).astype(
            dtype.newbyteorder("="), copy=True)
        offset += size
    return head["header"], arrays


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, chunks: bytes | Iterable[bytes]) -> int:
    """Replace `path` with `chunks` atomically and durably; returns the bytes written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    written = 0
    with open(tmp, "wb") as f:
        for chunk in [chunks] if isinstance(chunks, (bytes, bytearray, memoryview)) else chunks:
            f.write(chunk)
            written += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return written

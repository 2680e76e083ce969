"""A small, fast GGUF container reader (metadata + tensor views over memory maps).

The `gguf` package's reader builds numpy views for every metadata element, which takes
seconds on a 49k-token vocabulary; this one parses the header with `struct` in well under a
second. Dequantization still uses `gguf.quants`.

Split files (llama.cpp's gguf-split: `name-00001-of-00003.gguf`, ...) are opened from the first
part: its metadata is the model's, every part's tensors are listed together, each read from its
own file.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
STRING, ARRAY = 8, 9
SPLIT_NAME = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


class GGUFFormatError(ValueError):
    """The file is not a well-formed GGUF container."""


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order (outermost first), i.e. ggml dims reversed
    type_id: int
    offset: int  # absolute byte offset in its file
    nbytes: int
    part: int = 0  # which file of a split model holds it (0: the first / only one)


class GGUFContainer:
    """Parsed header(s): `metadata` dict (the first part's) and `tensors` (name -> TensorInfo) of
    every part, data via `raw()`."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._maps: list[mmap.mmap] = []
        self.tensors: dict[str, TensorInfo] = {}
        self.metadata = self._read_part(self.path)
        count = int(self.metadata.get("split.count", 1))
        if count > 1:
            self._read_other_parts(count)

    @property
    def parts(self) -> int:
        return len(self._maps)

    def _read_other_parts(self, count: int) -> None:
        match = SPLIT_NAME.match(Path(self.path).name)
        if match is None or int(match["no"]) != 1:
            raise GGUFFormatError(f"part of a {count}-file split model: open its first part, "
                                  "named <name>-00001-of-<count>.gguf")
        for no in range(2, count + 1):
            part = Path(self.path).with_name(f"{match['prefix']}-{no:05d}-of-{count:05d}.gguf")
            if not part.is_file():
                raise GGUFFormatError(f"split part {part.name} not found next to the first part")
            try:
                meta = self._read_part(str(part))
            except GGUFFormatError as exc:
                raise GGUFFormatError(f"split part {part.name}: {exc}") from exc
            if int(meta.get("split.no", -1)) != no - 1:
                raise GGUFFormatError(f"{part.name} says it is split part {meta.get('split.no')}, expected {no - 1}")
        expected = self.metadata.get("split.tensors.count")
        if expected is not None and int(expected) != len(self.tensors):
            raise GGUFFormatError(f"the {count} parts hold {len(self.tensors)} tensors, the first part promises {expected}")

    def _read_part(self, path: str) -> dict[str, Any]:
        """Parse one file's header, add its tensors, keep its memory map; returns its metadata."""
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        part = len(self._maps)
        with open(path, "rb") as handle:
            if handle.seek(0, 2) == 0:
                raise GGUFFormatError("empty file")
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps.append(self._map)
        self._pos = 0
        if self._map[:4] != MAGIC:
            raise GGUFFormatError("bad magic: not a GGUF file")
        self._pos = len(MAGIC)
        version = self._scalar(4)
        if version not in (2, 3):
            raise GGUFFormatError(f"unsupported GGUF version {version}")
        tensor_count, kv_count = self._scalar(10), self._scalar(10)
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = self._string()
            metadata[key] = self._value(self._scalar(4))
        infos = []
        for _ in range(tensor_count):
            name = self._string()
            dims = [self._scalar(10) for _ in range(self._scalar(4))]
            infos.append((name, dims, self._scalar(4), self._scalar(10)))
        alignment = int(metadata.get("general.alignment", 32))
        data_start = -(-self._pos // alignment) * alignment
        for name, dims, type_id, offset in infos:
            try:
                block, size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
            except (ValueError, KeyError) as exc:
                raise GGUFFormatError(f"tensor {name}: unknown ggml type id {type_id}") from exc
            count = int(np.prod(dims)) if dims else 1
            nbytes = count // block * size
            start = data_start + offset
            if start + nbytes > len(self._map):
                raise GGUFFormatError(f"tensor {name} extends past the end of the file (truncated?)")
            if name in self.tensors:
                raise GGUFFormatError(f"tensor {name} is listed twice")
            self.tensors[name] = TensorInfo(name, tuple(reversed(dims)), type_id, start, nbytes, part)
        return metadata

    def raw(self, info: TensorInfo) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 array (no copy)."""
        return np.frombuffer(self._maps[info.part], dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def _take(self, size: int) -> memoryview:
        if self._pos + size > len(self._map):
            raise GGUFFormatError("unexpected end of file in the header (truncated?)")
        view = memoryview(self._map)[self._pos : self._pos + size]
        self._pos += size
        return view

    def _scalar(self, type_id: int) -> Any:
        fmt = _SCALARS.get(type_id)
        if fmt is None:
            raise GGUFFormatError(f"unknown metadata value type {type_id}")
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

    def _string(self) -> str:
        length = self._scalar(10)
        return bytes(self._take(length)).decode("utf-8", errors="replace")

    def _value(self, type_id: int) -> Any:
        if type_id == STRING:
            return self._string()
        if type_id != ARRAY:
            return self._scalar(type_id)
        item_type, count = self._scalar(4), self._scalar(10)
        if item_type == STRING:
            return [self._string() for _ in range(count)]
        if item_type in _NUMPY:
            dtype = np.dtype(_NUMPY[item_type])
            return np.frombuffer(self._take(count * dtype.itemsize), dtype=dtype).tolist()
        return [self._value(item_type) for _ in range(count)]

"""Uploaded files (`/v1/files`, purpose `assistants`): UTF-8 text kept as blobs in the data folder.

    <data>/files/<file_id>/content     the bytes as uploaded
    <data>/files/<file_id>/file.json   id, filename, bytes, created_at, purpose

The content is written (and fsynced) before file.json, which is renamed into place: a file
exists once its record does, and a crash in between leaves a folder without a record, which
is removed on the next start.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from astrai.server.errors import APIError, bad_request
from astrai.server.rag.durable import read_json, sync_folder, write_atomic, write_json

PURPOSES = ("assistants",)


@dataclass(frozen=True)
class FileRecord:
    id: str
    filename: str
    bytes: int
    created_at: int
    purpose: str

    def body(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "expires_at": None,
                "status_details": None}


def decode_text(data: bytes, filename: str) -> str:
    """The file as text: strict UTF-8 (a BOM dropped), no NUL bytes; otherwise a 400."""
    if b"\x00" in data:
        raise bad_request(f"file: {filename!r} is not a text file (it contains NUL bytes); only UTF-8 text files "
                          "can be searched", "file", code="unsupported_file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise bad_request(f"file: {filename!r} is not valid UTF-8 text (byte {exc.start}); only UTF-8 text files "
                          "can be searched", "file", code="unsupported_file") from None


class FileStore:
    """The files of one data folder. Thread-safe."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._records: dict[str, FileRecord] = {}
        for entry in folder.iterdir():
            record = entry / "file.json"
            if record.is_file():
                rec = FileRecord(**read_json(record))
                self._records[rec.id] = rec
            elif entry.is_dir():  # interrupted upload: never acknowledged
                shutil.rmtree(entry, ignore_errors=True)

    def add(self, filename: str, purpose: str, data: bytes) -> FileRecord:
        decode_text(data, filename)
        rec = FileRecord(id=f"file-{uuid.uuid4().hex}", filename=filename, bytes=len(data),
                         created_at=int(time.time()), purpose=purpose)
        where = self.folder / rec.id
        where.mkdir()
        write_atomic(where / "content", data)
        write_json(where / "file.json", asdict(rec))
        sync_folder(self.folder)
        with self._lock:
            self._records[rec.id] = rec
        return rec

    def get(self, file_id: str) -> FileRecord:
        with self._lock:
            rec = self._records.get(file_id)
        if rec is None:
            raise APIError(404, f"No such file: {file_id!r}", param="file_id", code="not_found")
        return rec

    def content(self, file_id: str) -> bytes:
        return (self.folder / self.get(file_id).id / "content").read_bytes()

    def text(self, file_id: str) -> str:
        rec = self.get(file_id)
        return decode_text(self.content(file_id), rec.filename)

    def all(self) -> list[FileRecord]:
        with self._lock:
            return list(self._records.values())

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        with self._lock:
            self._records.pop(file_id, None)
        where = self.folder / file_id
        (where / "file.json").unlink(missing_ok=True)  # gone from now on, even if the rest fails
        sync_folder(where)
        shutil.rmtree(where, ignore_errors=True)

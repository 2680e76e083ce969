"""The errors astrai.retrieval raises.

`RetrievalInputError` (a `ValueError`) always means the caller's input is wrong and names the
offending field in `param` (dotted, OpenAI's request names where they exist), so a server can
answer it as a 400 without parsing the message.
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class of every astrai.retrieval error."""


class RetrievalInputError(RetrievalError, ValueError):
    """A caller's input is invalid; `param` names the field (e.g. "filters.filters[1].type")."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class FilterError(RetrievalInputError):
    """A metadata filter is not in OpenAI's comparison / compound shape."""


class StoreMismatchError(RetrievalError):
    """A store folder was opened with settings that differ from the ones it was created with."""

    def __init__(self, folder: str, field: str, stored: object, expected: object) -> None:
        super().__init__(
            f"vector store {folder} was built with {field}={stored!r}, but {expected!r} was expected; "
            f"re-ingest into a new store to change {field}"
        )
        self.folder = folder
        self.field = field
        self.stored = stored
        self.expected = expected


class StoreCorruptError(RetrievalError):
    """A store file fails its checksum or format check somewhere other than a torn log tail."""


class StoreClosedError(RetrievalError):
    """The store was closed; open it again."""


class StoreLockedError(RetrievalError):
    """Another writer holds the store folder (one writer per folder; readers use read_only=True)."""


class StoreReadOnlyError(RetrievalError):
    """A write was attempted on a store opened with read_only=True."""

"""Server settings: one dataclass filled from the command line (or directly in tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024


def default_data_dir() -> Path:
    """Where `astrai serve` keeps files and vector stores unless told: $XDG_DATA_HOME/astrai."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "astrai"


@dataclass
class ServerConfig:
    """What the server needs to know; engine_kwargs go straight to Engine.from_pretrained."""

    model: str = DEFAULT_MODEL
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_queue: int = 256
    max_num_seqs: int | None = None  # requests the server counts as one batch; None: the engine's own
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_prompts: bool = False
    shutdown_timeout: float = 10.0
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    embedding_model: str | None = None  # a built-in encoder name or a sentence-transformers folder; None: no embeddings
    served_embedding_name: str | None = None  # the id clients use (default: the name, or the folder's name)
    data_dir: str | None = None  # files and vector stores (astrai-server[rag]); None: those endpoints are off
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # largest upload to /v1/files

    @property
    def model_name(self) -> str:
        """The id clients must send as `model` (and see in /v1/models)."""
        return self.served_model_name or self.model

    @property
    def embedding_model_name(self) -> str | None:
        """The id `/v1/embeddings` requests must send as `model`."""
        if self.embedding_model is None:
            return None
        return self.served_embedding_name or Path(self.embedding_model).name.lower()

    def max_outstanding(self, engine_max_num_seqs: int) -> int:
        """Requests the server admits at once: the batch (this config's, else the engine's) plus the queue."""
        batch = self.max_num_seqs if self.max_num_seqs is not None else engine_max_num_seqs
        return batch + self.max_queue

    @staticmethod
    def api_key_from_env() -> str | None:
        return os.environ.get("ASTRAI_API_KEY") or None

"""Server settings: one dataclass filled from the command line (or directly in tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


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

    @property
    def model_name(self) -> str:
        """The id clients must send as `model` (and see in /v1/models)."""
        return self.served_model_name or self.model

    def max_outstanding(self, engine_max_num_seqs: int) -> int:
        """Requests the server admits at once: the batch (this config's, else the engine's) plus the queue."""
        batch = self.max_num_seqs if self.max_num_seqs is not None else engine_max_num_seqs
        return batch + self.max_queue

    @staticmethod
    def api_key_from_env() -> str | None:
        return os.environ.get("ASTRAI_API_KEY") or None

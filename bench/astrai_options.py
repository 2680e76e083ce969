"""AstrAI's settings in the bench: its defaults, plus whatever `--astrai-args` adds.

The same option string goes to `astrai serve` as flags and, translated by the CLI's own parser,
to `Engine.from_pretrained(...)` for the in-process sections, so both paths run with exactly
what a user of `astrai serve ARGS` gets. New engine flags (e.g. --quantization,
--kv-cache-dtype) work here as soon as the CLI has them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AstraiOptions:
    serve_args: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> AstraiOptions:
        args = shlex.split(text or "")
        options = cls(args)
        options.engine_kwargs()  # fail at start-up, not half-way through a run
        return options

    def engine_kwargs(self) -> dict[str, Any]:
        """Engine.from_pretrained keyword arguments for these flags (empty: the engine's defaults)."""
        if not self.serve_args:
            return {}
        from astrai.server import cli

        parser = cli.build_parser()
        try:
            ns = parser.parse_args(["serve", *self.serve_args])
        except SystemExit as exc:
            raise ValueError(f"--astrai-args {' '.join(self.serve_args)!r} is not valid for `astrai serve`") from exc
        return cli.engine_kwargs(ns)

    def describe(self) -> str:
        return " ".join(self.serve_args) if self.serve_args else "defaults"

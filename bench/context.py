"""What a section gets: the scale, the switches from the command line, and earlier results."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.config import Scale


@dataclass
class Context:
    scale: Scale
    quick: bool
    skip_peers: bool
    results: dict = field(default_factory=dict)  # section name -> its result, as they finish

    def wants_peers(self) -> bool:
        return not self.skip_peers

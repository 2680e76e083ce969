"""The one error type for bad model input, so callers can catch it without guessing."""

from __future__ import annotations


class ModelLoadError(ValueError):
    """A model could not be loaded; the message names the file and the problem."""

    def __init__(self, source: object, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")

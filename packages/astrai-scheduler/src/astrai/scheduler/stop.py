"""Stop-string matching over streamed text, across token boundaries.

Text arrives in pieces (one per token). A stop string may span several pieces, so any tail of
the text that could still grow into a stop string is held back until it either completes a
match (then the stop text and everything after it is dropped) or stops being a prefix.
"""

from __future__ import annotations


class StopMatcher:
    """Feeds text pieces in, gets safe-to-emit text out."""

    __slots__ = ("_stops", "_held", "_max_len")

    def __init__(self, stops: list[str]) -> None:
        self._stops = list(stops)
        self._held = ""
        self._max_len = max((len(s) for s in stops), default=0)

    def push(self, piece: str) -> tuple[str, str | None]:
        """Add `piece`; return (text safe to emit now, the stop string that matched or None).

        After a match the emitted text ends right before the stop string.
        """
        if not self._stops:
            return piece, None
        text = self._held + piece
        # Earliest complete match wins: it is the first point at which generation "stopped".
        cut, matched = -1, None
        for s in self._stops:
            i = text.find(s)
            if i != -1 and (cut == -1 or i < cut):
                cut, matched = i, s
        if matched is not None:
            self._held = ""
            return text[:cut], matched
        keep = self._hold_from(text)
        self._held = text[keep:]
        return text[:keep], None

    def flush(self) -> str:
        """Release the held-back tail (generation ended for another reason)."""
        out, self._held = self._held, ""
        return out

    def _hold_from(self, text: str) -> int:
        """Smallest index whose suffix is a proper prefix of some stop string."""
        start = max(0, len(text) - self._max_len + 1)
        for i in range(start, len(text)):
            tail = text[i:]
            for s in self._stops:
                if s.startswith(tail):
                    return i
        return len(text)

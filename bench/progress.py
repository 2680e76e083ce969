"""Progress bars (tqdm when installed, a plain counter otherwise)."""

from __future__ import annotations

import sys

try:
    from tqdm import tqdm as _tqdm
except ImportError:  # tqdm comes with transformers; keep working without it
    _tqdm = None


class _Plain:
    def __init__(self, total=None, desc="", **_):
        self.total, self.desc, self.n = total, desc, 0

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, s):
        pass

    def close(self):
        print(f"  {self.desc}: {self.n}/{self.total}", file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def bar(total=None, desc: str = "", unit: str = "it"):
    if _tqdm is None:
        return _Plain(total=total, desc=desc)
    return _tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

"""`python -m bench.serve_engine --scheduling static <astrai serve options>`.

Fallback used only while `astrai serve` has no `--scheduling` option: runs the very same
`astrai serve` code path, with the one engine option added, so static scheduling can be
served over HTTP for the continuous-vs-static comparison.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from astrai.server import cli

    if "--scheduling" not in argv:
        raise SystemExit("usage: python -m bench.serve_engine --scheduling continuous|static <serve options>")
    i = argv.index("--scheduling")
    scheduling, rest = argv[i + 1], argv[:i] + argv[i + 2:]
    original = cli.engine_kwargs
    cli.engine_kwargs = lambda args: {**original(args), "scheduling": scheduling}
    return cli.main(["serve", *rest])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Perplexity of the real Gemma 3 270M Q4_K_M file, computed llama-perplexity's way, vs llama.cpp.

    python -m bench.gemma_perplexity [--text tests/data/perplexity_long.txt] [--skip-peers]

Every AstrAI variant ("served": the engine's native forward with its float16 KV cache, "auto":
the packed weights through the torch layers, "none": dequantized to float32) and both peers
(`llama-perplexity` on the file and on its F32 dequantization); the method is bench/perplexity.py's,
which is also the suite's `perplexity` section (`python -m bench --model gemma3-270m --only
perplexity`). Prints one JSON object; a bench, never a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.fixtures.gemma_file import gemma_gguf
from bench.perplexity import TEXT, VARIANTS, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", type=Path, default=TEXT)
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    result = measure(gemma_gguf(), args.text.resolve(), VARIANTS, peers=not args.skip_peers, f32_peer=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

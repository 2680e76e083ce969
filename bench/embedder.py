"""Embedder throughput: astrai.model's SentenceEncoder vs sentence-transformers, same model, same machine.

    python -m bench.embedder [--texts 512] [--tokens 128] [--batch 64] [--repeats 3]

Both encode the same texts of exactly `--tokens` tokens (special tokens included) in batches of
`--batch`, float32 on the CPU with torch's default threads; the best of `--repeats` timed runs
after one warm-up. Prints texts/s for each, their ratio, and the minimum cosine between the two
outputs (a parity sanity check; tests/model/test_encoder.py pins it).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch


def texts_of_length(encoder, count: int, tokens: int, seed: int = 0) -> list[str]:
    """`count` texts that tokenize to exactly `tokens` ids with [CLS] and [SEP]."""
    rng = random.Random(seed)
    words = [w for w in encoder.tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) > 2]
    words.sort()
    out = []
    while len(out) < count:
        text = " ".join(rng.choice(words) for _ in range(tokens))
        ids = encoder.tokenize([text])[0]
        body = encoder.tokenizer.decode(ids[1 : tokens - 1])
        if len(encoder.tokenize([body])[0]) == tokens:
            out.append(body)
    return out


def best_rate(fn, count: int, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from astrai.model import bundled_encoder_path, load_encoder
    from sentence_transformers import SentenceTransformer

    ours = load_encoder()
    theirs = SentenceTransformer(str(bundled_encoder_path()), device="cpu")
    texts = texts_of_length(ours, args.texts, args.tokens)
    budget = args.batch * args.tokens
    ours_rate = best_rate(lambda: ours.encode(texts, max_batch_tokens=budget), len(texts), args.repeats)
    st_rate = best_rate(lambda: theirs.encode(texts, batch_size=args.batch, convert_to_tensor=True),
                        len(texts), args.repeats)
    a = ours.encode(texts)
    b = theirs.encode(texts, batch_size=args.batch, convert_to_tensor=True)
    cosine = float(torch.nn.functional.cosine_similarity(a, b).min())
    result = {"tokens": args.tokens, "texts": len(texts), "batch": args.batch, "threads": torch.get_num_threads(),
              "astrai_texts_per_s": round(ours_rate, 1), "sentence_transformers_texts_per_s": round(st_rate, 1),
              "ratio": round(ours_rate / st_rate, 3), "min_cosine": cosine}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""GPU: the astrai-1b preset with random bf16 weights on nano-vllm's exact workload.

256 sequences, prompts and outputs uniform 100-1024, ignore_eos; transformers `generate`
(static batches, random weights of the same shape) as the baseline; batch-1 decode against
the measured HBM bandwidth roofline. Skipped cleanly where torch sees no CUDA device.
"""

from __future__ import annotations

import gc
import time
import traceback

import torch

from bench.context import Context
from bench.progress import log
from bench.timing import rate
from bench.workload import describe, offline_workload

PRESET = "astrai-1b"


def _hbm_bandwidth_gbs() -> float:
    src = torch.ones(2**28, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


def _astrai_engine(batch_size: int, max_len: int):
    from astrai.model import ModelConfig, Transformer, load_model
    from astrai.scheduler import Engine

    config = ModelConfig.preset(PRESET)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Transformer(config).to(torch.bfloat16)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model.eval()
    # The preset ships no tokenizer; SmolLM2's only serves the engine's detokenizer here.
    _, tokenizer = load_model("smollm2-135m-instruct")
    engine = Engine(model, tokenizer, max_num_seqs=batch_size, max_model_len=max_len,
                    enable_prefix_cache=False)
    return engine, config


def _run_astrai(requests, batch_size: int, max_len: int) -> dict:
    from astrai.scheduler import SamplingParams

    engine, config = _astrai_engine(batch_size, max_len)
    try:
        params = [SamplingParams(max_tokens=r.max_tokens, temperature=0.6, ignore_eos=True)
                  for r in requests]
        engine.generate([[1, 2, 3]], SamplingParams(max_tokens=4, ignore_eos=True))
        start = time.perf_counter()
        outs = engine.generate([r.prompt_token_ids for r in requests], params)
        seconds = time.perf_counter() - start
        tokens = sum(len(o.token_ids) for o in outs)
        start = time.perf_counter()
        engine.generate([requests[0].prompt_token_ids], SamplingParams(max_tokens=257, ignore_eos=True))
        single = time.perf_counter() - start
        return {"status": "ok", "output_tokens": tokens, "seconds": seconds,
                "output_tok_s": rate(tokens, seconds), "batch1_decode_tok_s_approx": 257 / single,
                "num_parameters": config.num_parameters()}
    finally:
        engine.shutdown()


def _run_transformers(requests, batch_size: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=100_000, hidden_size=1536, intermediate_size=6912,
                      num_hidden_layers=24, num_attention_heads=24, num_key_value_heads=4,
                      max_position_embeddings=2048, tie_word_embeddings=False)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    start = time.perf_counter()
    for i in range(0, len(requests), batch_size):
        batch = requests[i:i + batch_size]
        width = max(len(r.prompt_token_ids) for r in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long, device="cuda")
        mask = torch.zeros_like(ids)
        for row, r in enumerate(batch):
            ids[row, width - len(r.prompt_token_ids):] = torch.tensor(r.prompt_token_ids)
            mask[row, width - len(r.prompt_token_ids):] = 1
        new = max(r.max_tokens for r in batch)
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                           min_new_tokens=new, do_sample=True, temperature=0.6, top_k=0, pad_token_id=0)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(r.max_tokens for r in requests)
    del model
    return {"status": "ok", "output_tokens": tokens, "seconds": seconds,
            "output_tok_s": rate(tokens, seconds), "batch_size": batch_size}


def run(ctx: Context) -> dict:
    if not torch.cuda.is_available():
        return {"status": "skipped", "reason": "torch.cuda.is_available() is False on this machine"}
    if ctx.out_of_time():
        return {"status": "skipped", "reason": ctx.out_of_time()}
    s = ctx.scale
    requests = offline_workload(s.gpu_requests, s.gpu_len, s.gpu_len, seed=0)
    out = {"status": "ok", "device": torch.cuda.get_device_name(0), "preset": PRESET,
           "workload": describe(requests), "hbm_copy_bandwidth_gbs": _hbm_bandwidth_gbs()}
    for key, fn in (("astrai", lambda: _run_astrai(requests, 256, 2 * s.gpu_len[1] + 8)),
                    ("transformers", lambda: _run_transformers(requests, 64))):
        if key == "transformers" and not ctx.wants_peers():
            continue
        try:
            out[key] = fn()
        except Exception as error:
            out[key] = {"status": "error", "reason": f"{type(error).__name__}: {error}",
                        "traceback": traceback.format_exc(limit=5)}
        gc.collect()
        torch.cuda.empty_cache()
        log(f"[gpu] {key}: {out[key].get('output_tok_s', out[key].get('reason'))}")
    a = out.get("astrai", {})
    if "num_parameters" in a:
        ceiling = out["hbm_copy_bandwidth_gbs"] * 1e9 / (a["num_parameters"] * 2)
        out["batch1_ceiling_tok_s"] = ceiling
        out["batch1_fraction_of_ceiling"] = a["batch1_decode_tok_s_approx"] / ceiling
    return out

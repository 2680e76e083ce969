"""Quantized-linear kernel bench: AstrAI's native Q4_1 / Q8_0 kernels on the bundled model's real
weights, next to torch fp32 F.linear on the dequantized weight and the machine's read bandwidth.

    python -m bench.kernels.qlinear [--repeats 7] [--ms 1,4,16,64,512] [--out bench/results/...]

Native times are measured in C++ (`qlinear_chain_seconds`), so they exclude Python's per-call
dispatch (~4 us, which the fused C++ forward does not pay; reported separately). "cold" rotates
through copies of the weight totalling several times the last-level cache, as a decode step
streams each weight from DRAM once; "hot" repeats one weight (cache-resident when it fits).
F.linear is timed hot, from Python. Every figure is the best of --repeats passes; the machine is
shared, so the load average is recorded at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from astrai.model import bundled_gguf_path
from astrai.model.gguf_loader import GGUFFile, unpermute_rows
from astrai.model.kernels import kernels, native, native_unavailable_reason, ops
from astrai.model.kernels.quant import PackedWeight, QuantType, dequantize, pack_gguf

from bench.machine import machine_info

RESULTS = Path(__file__).resolve().parents[1] / "results"
COLD_BYTES = 64 * 2**20  # twice the 32 MiB L3 of the dev VM: each pass streams from DRAM


def raw_rows(file: GGUFFile, name: str) -> torch.Tensor:
    """The tensor's GGUF block rows, a view of the memory map (read only, never written)."""
    info = file.tensors[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(file.container.raw(info)).reshape(info.shape[0], -1)


def pack_model(file: GGUFFile) -> tuple[dict[str, PackedWeight], float]:
    """Every linear of the bundled model packed as astrai fuses them, and the seconds it took."""
    config = file.config("smollm2-135m-instruct")
    start = time.perf_counter()
    packed: dict[str, PackedWeight] = {}
    for layer in range(config.num_layers):
        p = f"model.layers.{layer}."
        attn = p + "self_attn."
        qkv = torch.cat([unpermute_rows(raw_rows(file, attn + "q_proj.weight"), config.num_heads),
                         unpermute_rows(raw_rows(file, attn + "k_proj.weight"), config.num_kv_heads),
                         raw_rows(file, attn + "v_proj.weight")])
        qtype = QuantType(file.tensors[attn + "q_proj.weight"].type_id)
        packed[f"{layer}.qkv"] = pack_gguf(qkv, qtype, config.hidden_size)
        packed[f"{layer}.o"] = pack_gguf(raw_rows(file, attn + "o_proj.weight"), qtype, config.hidden_size)
        gate_up = torch.cat([raw_rows(file, p + "mlp.gate_proj.weight"), raw_rows(file, p + "mlp.up_proj.weight")])
        packed[f"{layer}.gate_up"] = pack_gguf(gate_up, qtype, config.hidden_size)
        packed[f"{layer}.down"] = pack_gguf(raw_rows(file, p + "mlp.down_proj.weight"), qtype, config.intermediate_size)
    embedding = "model.embed_tokens.weight"
    packed["lm_head"] = pack_gguf(raw_rows(file, embedding), QuantType(file.tensors[embedding].type_id), config.hidden_size)
    return packed, time.perf_counter() - start


def best(fn, repeats: int) -> float:
    fn()
    result = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        result = min(result, time.perf_counter() - start)
    return result


def chain_seconds(xs: list[torch.Tensor], weights: list[PackedWeight], repeats: int) -> float:
    """Best seconds of one pass over (xs[i], weights[i]), timed in C++."""
    passes = kernels().testing_ops().qlinear_chain_seconds(
        xs, [w.data for w in weights], [int(w.qtype) for w in weights], [w.out_features for w in weights], repeats + 1)
    return min(passes[1:])


def read_bandwidth(repeats: int) -> dict[str, float]:
    """Streaming read GB/s over 256 MiB: a C++ AVX2 loop and torch.sum, both on torch's threads."""
    data = torch.ones(256 * 2**20, dtype=torch.uint8)
    probe = best(lambda: kernels().testing_ops().read_bandwidth_probe(data, 1), repeats)
    summed = best(lambda: data.view(torch.float32).sum(), repeats)
    return {"cpp_read_gbs": data.numel() / probe / 1e9, "torch_sum_gbs": data.numel() / summed / 1e9}


def dispatch_overhead_us(repeats: int) -> float:
    """Python -> torch.ops call of a trivial 8x32 qlinear: what each Python-level call adds."""
    w = pack_gguf(torch.zeros(8, 20, dtype=torch.uint8), QuantType.Q4_1, 32)
    x = torch.zeros(1, 32)
    calls = 2000

    def run():
        for _ in range(calls):
            ops().qlinear(x, w.data, 3, 8, 32, None)

    native_one = chain_seconds([x], [w], repeats)
    return (best(run, repeats) / calls - native_one) * 1e6


def shape_rows(weights: dict[str, PackedWeight], ms: list[int], repeats: int) -> list[dict]:
    rows = []
    for label in ("0.qkv", "0.o", "0.gate_up", "0.down", "lm_head"):
        w = weights[label]
        copies = max(2, COLD_BYTES // w.nbytes)
        cold_set = [PackedWeight(w.qtype, w.out_features, w.in_features, w.data.clone()) for _ in range(copies)]
        dense = dequantize(w)
        generator = torch.Generator().manual_seed(0)
        for m in ms:
            x = torch.randn(m, w.in_features, generator=generator)
            flops = 2 * m * w.out_features * w.in_features
            hot = chain_seconds([x], [w], repeats)
            row = {"weight": label.split(".", 1)[-1], "qtype": w.qtype.name, "N": w.out_features, "K": w.in_features,
                   "M": m, "weight_bytes": w.nbytes, "native_hot_us": hot * 1e6, "native_hot_gflops": flops / hot / 1e9}
            if m <= 16:
                cold = chain_seconds([x] * copies, cold_set, repeats) / copies
                row.update(native_cold_us=cold * 1e6, native_cold_gbs=w.nbytes / cold / 1e9,
                           native_cold_gflops=flops / cold / 1e9)
            fp32 = best(lambda x=x, dense=dense: F.linear(x, dense), repeats)
            row.update(torch_fp32_us=fp32 * 1e6, torch_fp32_gflops=flops / fp32 / 1e9, speedup_vs_fp32=fp32 / hot)
            rows.append(row)
            print(format_row(row), flush=True)
        del cold_set
    return rows


def decode_step(weights: dict[str, PackedWeight], repeats: int, layers: int) -> dict:
    """One batch-1 decode step's linears (every layer's, then the LM head) over DRAM-resident weights."""
    order = [weights[f"{layer}.{part}"] for layer in range(layers) for part in ("qkv", "o", "gate_up", "down")]
    order.append(weights["lm_head"])
    xs = [torch.randn(1, w.in_features) for w in order]
    seconds = chain_seconds(xs, order, repeats)
    total = sum(w.nbytes for w in order)
    return {"calls": len(order), "weight_bytes": total, "seconds": seconds, "gbs": total / seconds / 1e9,
            "tokens_per_s_ceiling_from_linears": 1.0 / seconds}


def format_row(row: dict) -> str:
    cold = f"{row['native_cold_us']:9.1f} {row['native_cold_gbs']:6.1f}" if "native_cold_us" in row else " " * 16
    return (f"{row['weight']:>8} {row['qtype']} {row['N']:5d}x{row['K']:<5d} M={row['M']:<4d} "
            f"hot {row['native_hot_us']:9.1f} us {row['native_hot_gflops']:6.1f} GF/s | cold {cold} GB/s | "
            f"fp32 F.linear {row['torch_fp32_us']:9.1f} us {row['torch_fp32_gflops']:6.1f} GF/s | x{row['speedup_vs_fp32']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ms", default="1,4,16,64,512", help="batch rows to time, comma-separated")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/<UTC>-qlinear.json)")
    args = parser.parse_args()
    if native() is None:
        raise SystemExit(f"the native kernels are unavailable: {native_unavailable_reason()}")
    if args.threads:
        torch.set_num_threads(args.threads)
    ms = [int(m) for m in args.ms.split(",")]
    started = datetime.now(timezone.utc)
    result: dict = {"format": "astrai-bench-qlinear", "started": started.isoformat(), "machine": machine_info(),
                    "threads": torch.get_num_threads()}
    print(f"load average {os.getloadavg()}, {torch.get_num_threads()} threads")
    file = GGUFFile(bundled_gguf_path())
    weights, first_seconds = pack_model(file)  # includes paging the GGUF's memory map in
    weights, pack_seconds = pack_model(file)
    packed_bytes = sum(w.nbytes for w in weights.values())
    result["pack"] = {"seconds": pack_seconds, "first_seconds": first_seconds, "weights": len(weights),
                      "bytes": packed_bytes, "gguf_file_bytes": Path(file.path).stat().st_size,
                      "elements": sum(w.out_features * w.in_features for w in weights.values())}
    print(f"packed {len(weights)} weights ({result['pack']['elements'] / 1e6:.0f}M values, {packed_bytes / 1e6:.1f} MB; "
          f"GGUF file {result['pack']['gguf_file_bytes'] / 1e6:.1f} MB) in {pack_seconds:.2f} s "
          f"({first_seconds:.2f} s the first time)")
    result["read_bandwidth"] = read_bandwidth(args.repeats)
    result["dispatch_overhead_us"] = dispatch_overhead_us(args.repeats)
    print(f"read bandwidth: C++ {result['read_bandwidth']['cpp_read_gbs']:.1f} GB/s, torch.sum "
          f"{result['read_bandwidth']['torch_sum_gbs']:.1f} GB/s; Python dispatch per call "
          f"{result['dispatch_overhead_us']:.1f} us")
    result["decode_step"] = decode_step(weights, args.repeats, file.config("smollm2").num_layers)
    step = result["decode_step"]
    ceiling = max(result["read_bandwidth"].values())
    print(f"batch-1 decode step, {step['calls']} linears over {step['weight_bytes'] / 1e6:.1f} MB: "
          f"{step['seconds'] * 1e3:.2f} ms = {step['gbs']:.1f} GB/s ({step['gbs'] / ceiling:.0%} of the read bandwidth), "
          f"{step['tokens_per_s_ceiling_from_linears']:.0f} tok/s if the linears were all")
    result["shapes"] = shape_rows(weights, ms, args.repeats)
    result["load_average_end"] = os.getloadavg()
    out = args.out or RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}-qlinear.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"load average at the end {result['load_average_end']}; wrote {out}")


if __name__ == "__main__":
    main()

// The fused decoder step: sequences the tested kernels over one reused activation workspace.
#include "forward.h"


#include <cmath>
#include <cstring>

#include "attention.h"
#include "ops.h"
#include "qlinear.h"
#include "quant_pack.h"
#include "parallel.h"

namespace astrai {
namespace {

at::Tensor slice2d(const at::Tensor& flat, int64_t& offset, int64_t rows, int64_t cols) {
  at::Tensor view = flat.narrow(0, offset, rows * cols).view({rows, cols});
  offset += rows * cols;
  return view;
}

}  // namespace

void LinearWeight::validate(const char* name) const {
  TORCH_CHECK(out_features > 0 && in_features > 0, name, ": empty weight");
  if (!parts.empty()) {
    TORCH_CHECK(qtype == 0 && !packed.defined() && !dense.defined() && !bias.has_value(), name,
                ": a weight split into parts holds no weight or bias of its own");
    int64_t total = 0;
    for (const LinearWeight& part : parts) {
      TORCH_CHECK(part.qtype != 0 && part.parts.empty(), name, ": every part must be a packed weight");
      TORCH_CHECK(part.in_features == in_features, name, ": part in_features ", part.in_features, " != ", in_features);
      part.validate(name);
      total += part.out_features;
    }
    TORCH_CHECK(total == out_features, name, ": parts have ", total, " outputs, the weight ", out_features);
    return;
  }
  if (qtype != 0) {
    TORCH_CHECK(packed.defined(), name, ": packed weight missing");
    check_packed(packed, checked_qtype(qtype), out_features, in_features, name);
  } else {
    TORCH_CHECK(dense.defined() && dense.scalar_type() == at::kFloat && dense.is_contiguous() &&
                    dense.dim() == 2 && dense.size(0) == out_features && dense.size(1) == in_features,
                name, ": dense weight must be contiguous float32 [", out_features, ", ", in_features, "]");
  }
  if (bias.has_value())
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == out_features && bias->is_contiguous(), name,
                ": bias must be contiguous float32 [", out_features, "]");
}

void LinearWeight::run(const at::Tensor& x, const at::Tensor& out) const {
  at::Tensor target = out;
  if (!parts.empty()) {
    // Each output column is computed exactly as if its part were a weight of its own.
    const QuantizedActivations a = quantize_activations(x);
    int64_t column = 0;
    for (const LinearWeight& part : parts) {
      at::Tensor columns = out.narrow(1, column, part.out_features);
      qlinear_out(a, part.packed, static_cast<QType>(part.qtype), part.out_features, in_features, part.bias, columns);
      column += part.out_features;
    }
    return;
  }
  if (qtype != 0) {
    qlinear_out(quantize_activations(x), packed, static_cast<QType>(qtype), out_features, in_features, bias, target);
    return;
  }
  // Dense float32 through BLAS with the rows padded to a multiple of 8: sgemm gives a row the same
  // result at any such M (a few-row call takes a different, gemv-like path), so a row's output
  // does not depend on its batch (tests/model check this on the machine that runs them).
  const int64_t M = x.size(0), padded = (M + 7) / 8 * 8;
  if (padded == M) {
    at::mm_out(target, x, dense.t());
  } else {
    at::Tensor rows = at::zeros({padded, in_features}, x.options());
    rows.narrow(0, 0, M).copy_(x);
    target.copy_(at::mm(rows, dense.t()).narrow(0, 0, M));
  }
  if (bias.has_value()) target.add_(*bias);
}

void embedding_rows_into(const LinearWeight& table, const at::Tensor& ids, const at::Tensor& out) {
  TORCH_CHECK(ids.scalar_type() == at::kLong && ids.dim() == 1, "embedding_rows: ids must be int64 [T]");
  const int64_t T = ids.size(0), K = table.in_features, N = table.out_features;
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.dim() == 2 && out.size(0) == T && out.size(1) == K &&
                  out.stride(1) == 1,
              "embedding_rows: out must be float32 [", T, ", ", K, "] with unit column stride");
  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK(id[t] >= 0 && id[t] < N, "embedding_rows: token id ", id[t], " outside [0, ", N, ")");
  float* dst = out.data_ptr<float>();
  const int64_t ld = out.stride(0);
  const float* dense = table.qtype == 0 ? table.dense.data_ptr<float>() : nullptr;
  const uint8_t* packed = table.qtype == 0 ? nullptr : table.packed.data_ptr<uint8_t>();
  parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (dense != nullptr) std::memcpy(dst + t * ld, dense + id[t] * K, K * sizeof(float));
      else dequantize_row(packed, static_cast<QType>(table.qtype), N, K, id[t], dst + t * ld);
    }
  });
}

at::Tensor embedding_rows(const LinearWeight& table, const at::Tensor& ids) {
  at::Tensor out = at::empty({ids.size(0), table.in_features}, at::kFloat);
  embedding_rows_into(table, ids, out);
  return out;
}

namespace {

// out[r] = a[rows[r]] + b[rows[r]]: the final residual add, for the logits rows only. Plain
// loops, not torch ops: a torch op here would wake torch's OpenMP pool, whose spinning workers
// would compete with the kernels' own team for the cores during the LM head.
at::Tensor sum_rows(const at::Tensor& a, const at::Tensor& b, const at::Tensor& rows) {
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.dim() == 1, "forward: logits_indices must be int64 [R]");
  const int64_t R = rows.size(0), T = a.size(0), C = a.size(1);
  const int64_t* idx = rows.data_ptr<int64_t>();
  for (int64_t r = 0; r < R; ++r)
    TORCH_CHECK(idx[r] >= 0 && idx[r] < T, "forward: logits index ", idx[r], " outside the batch's ", T, " rows");
  at::Tensor out = at::empty({R, C}, at::kFloat);
  float* o = out.data_ptr<float>();
  const float* ap = a.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  const int64_t as = a.stride(0), bs = b.stride(0);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) o[r * C + c] = ap[idx[r] * as + c] + bp[idx[r] * bs + c];
  return out;
}

}  // namespace

NativeDecoder::NativeDecoder(DecoderShape shape, LinearWeight embedding, std::vector<DecoderLayerWeights> layers,
                             at::Tensor final_norm, LinearWeight head)
    : shape_(shape), embedding_(std::move(embedding)), layers_(std::move(layers)),
      final_norm_(std::move(final_norm)), head_(std::move(head)) {
  const DecoderShape& s = shape_;
  TORCH_CHECK(s.num_kv_heads > 0 && s.num_heads % s.num_kv_heads == 0, "NativeDecoder: bad head counts");
  TORCH_CHECK(s.head_dim % 8 == 0, "NativeDecoder: head_dim must be a multiple of 8, got ", s.head_dim);
  embedding_.validate("embedding");
  head_.validate("lm_head");
  TORCH_CHECK(embedding_.out_features == s.vocab && embedding_.in_features == s.hidden, "embedding shape mismatch");
  const int64_t q = s.num_heads * s.head_dim, kv = s.num_kv_heads * s.head_dim;
  for (const DecoderLayerWeights& layer : layers_) {
    layer.qkv.validate("qkv_proj");
    layer.o.validate("o_proj");
    layer.gate_up.validate("gate_up_proj");
    layer.down.validate("down_proj");
    TORCH_CHECK(layer.qkv.out_features == q + 2 * kv && layer.qkv.in_features == s.hidden, "qkv_proj shape");
    TORCH_CHECK(layer.o.out_features == s.hidden && layer.o.in_features == q, "o_proj shape");
    TORCH_CHECK(layer.gate_up.out_features == 2 * s.intermediate && layer.gate_up.in_features == s.hidden,
                "gate_up_proj shape");
    TORCH_CHECK(layer.down.out_features == s.hidden && layer.down.in_features == s.intermediate, "down_proj shape");
    TORCH_CHECK(layer.q_norm.has_value() == layer.k_norm.has_value(), "q_norm and k_norm come together");
    TORCH_CHECK(layer.window >= 0 && (layer.rope == 0 || layer.rope == 1), "layer window must be >= 0, rope 0 or 1");
  }
}

at::Tensor NativeDecoder::forward(const at::Tensor& token_ids, const at::Tensor& positions,
                                  const at::Tensor& slot_mapping, const at::Tensor& block_tables,
                                  const at::Tensor& context_lens, const at::Tensor& query_start_loc,
                                  const at::Tensor& logits_indices, const std::vector<at::Tensor>& k_caches,
                                  const std::vector<at::Tensor>& v_caches, const at::Tensor& cos,
                                  const at::Tensor& sin, const std::optional<at::Tensor>& local_cos,
                                  const std::optional<at::Tensor>& local_sin) {
  std::lock_guard<std::mutex> guard(mutex_);
  const DecoderShape& s = shape_;
  const int64_t L = num_layers();
  TORCH_CHECK(static_cast<int64_t>(k_caches.size()) == L && static_cast<int64_t>(v_caches.size()) == L,
              "forward: expected ", L, " K and V caches");
  const int64_t T = token_ids.size(0), C = s.hidden, H = s.num_heads, KVH = s.num_kv_heads, D = s.head_dim;
  const int64_t I = s.intermediate, QKV = (H + 2 * KVH) * D;
  const double eps = s.rms_norm_eps;
  const double scale = s.attention_scale > 0.0 ? s.attention_scale : 1.0 / std::sqrt(static_cast<double>(D));

  const int64_t need = T * (2 * C + QKV + H * D + 3 * I);
  if (!workspace_.defined() || workspace_.numel() < need) workspace_ = at::empty({need}, at::kFloat);
  int64_t offset = 0;
  at::Tensor residual = slice2d(workspace_, offset, T, C);
  at::Tensor hidden = slice2d(workspace_, offset, T, C);  // the current sublayer's input or output
  at::Tensor qkv = slice2d(workspace_, offset, T, QKV);
  at::Tensor attn = slice2d(workspace_, offset, T, H * D);
  at::Tensor gate_up = slice2d(workspace_, offset, T, 2 * I);
  at::Tensor act = slice2d(workspace_, offset, T, I);

  if (profiling_) mark_ = std::chrono::steady_clock::now();
  embedding_rows_into(embedding_, token_ids, residual);
  if (s.embedding_scale != 1.0) residual.mul_(static_cast<float>(s.embedding_scale));  // one fp32 multiply, as torch
  lap(kEmbed);
  at::Tensor q = qkv.narrow(1, 0, H * D).view({T, H, D});
  at::Tensor k = qkv.narrow(1, H * D, KVH * D).view({T, KVH, D});
  at::Tensor v = qkv.narrow(1, (H + KVH) * D, KVH * D).view({T, KVH, D});
  at::Tensor qk = qkv.narrow(1, 0, (H + KVH) * D).view({T, H + KVH, D});
  at::Tensor attn_heads = attn.view({T, H, D});
  for (int64_t l = 0; l < L; ++l) {
    const DecoderLayerWeights& layer = layers_[l];
    if (l == 0) {
      rms_norm(residual, layer.input_norm, eps, hidden);
    } else {
      add_rms_norm(hidden, residual, layer.input_norm, eps);  // hidden held the previous MLP output
    }
    lap(kNorm);
    layer.qkv.run(hidden, qkv);
    lap(kQkv);
    if (layer.q_norm.has_value()) {
      head_rms_norm(q, *layer.q_norm, eps);
      head_rms_norm(k, *layer.k_norm, eps);
    }
    if (layer.rope == 1) {
      TORCH_CHECK(local_cos.has_value() && local_sin.has_value(), "forward: layer ", l, " needs the local RoPE tables");
      rotary(qk, positions, *local_cos, *local_sin);
    } else {
      rotary(qk, positions, cos, sin);
    }
    lap(kRope);
    kv_write(k, v, k_caches[l], v_caches[l], slot_mapping);
    lap(kKvWrite);
    paged_attention(q, k_caches[l], v_caches[l], block_tables, context_lens, query_start_loc, scale, layer.window,
                    attn_heads);
    lap(kAttention);
    layer.o.run(attn, hidden);
    lap(kO);
    if (layer.attn_out_norm.has_value()) rms_norm(hidden, *layer.attn_out_norm, eps, hidden);
    add_rms_norm(hidden, residual, layer.mlp_norm, eps);
    lap(kNorm);
    layer.gate_up.run(hidden, gate_up);
    lap(kGateUp);
    if (s.activation == Activation::kGeluTanh) gelu_tanh_mul(gate_up, act);
    else silu_mul(gate_up, act);
    lap(kActivation);
    layer.down.run(act, hidden);
    lap(kDown);
    if (layer.mlp_out_norm.has_value()) {
      rms_norm(hidden, *layer.mlp_out_norm, eps, hidden);
      lap(kNorm);
    }
  }
  // Only the rows whose logits are wanted get the final norm and the LM head.
  at::Tensor last = sum_rows(residual, hidden, logits_indices);
  rms_norm(last, final_norm_, eps, last);
  lap(kNorm);
  at::Tensor logits = at::empty({last.size(0), s.vocab}, at::kFloat);
  head_.run(last, logits);
  lap(kHead);
  steps_ += profiling_ ? 1 : 0;
  return logits;
}

void NativeDecoder::lap(Phase phase) {
  if (!profiling_) return;
  const auto now = std::chrono::steady_clock::now();
  seconds_[phase] += std::chrono::duration<double>(now - mark_).count();
  mark_ = now;
}

void NativeDecoder::set_profiling(bool on) {
  std::lock_guard<std::mutex> guard(mutex_);
  profiling_ = on;
  for (double& s : seconds_) s = 0.0;
  steps_ = 0;
}

std::vector<std::pair<std::string, double>> NativeDecoder::profile() const {
  static const char* names[kPhases] = {"embedding", "rms_norm", "qkv_proj", "rotary", "kv_write", "attention",
                                       "o_proj", "gate_up_proj", "activation", "down_proj", "lm_head"};
  std::vector<std::pair<std::string, double>> out;
  out.emplace_back("steps", static_cast<double>(steps_));
  for (int p = 0; p < kPhases; ++p) out.emplace_back(names[p], seconds_[p]);
  return out;
}

}  // namespace astrai

// The whole ragged decoder step in one native call: embedding, every layer, final norm, LM head.
//
// One call per engine step instead of ~12 Python-dispatched torch ops per layer: at batch 1 on
// a small model the dispatch alone cost more than the weight reads. The kernels it calls are
// the same ones tested one by one (qlinear.h, attention.h, ops.h); this file only sequences
// them and owns the activation buffers. float32 activations; each linear is either a packed
// low-bit weight (qlinear) or a dense float32 matrix (at::mm, MKL).
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <optional>
#include <vector>

namespace astrai {

// One projection: packed low-bit (qtype != 0), dense float32 [N, K], or a fused projection whose
// parts are packed in different block types (a Q4_K_M file's Q4_K q/k with a Q6_K v): `parts`
// stacked along the outputs, each run into its own columns of out over one quantization of x.
struct LinearWeight {
  int64_t qtype = 0;  // 0: dense (or split into parts); else a GGML type id served by qlinear
  int64_t out_features = 0;
  int64_t in_features = 0;
  at::Tensor packed;  // uint8, qlinear's layout (quantized)
  at::Tensor dense;   // float32 [N, K] contiguous (dense)
  std::optional<at::Tensor> bias;  // float32 [N] (a split weight's parts carry their own)
  std::vector<LinearWeight> parts;  // non-empty: packed parts, in output order

  void validate(const char* name) const;
  // out [M, N] (rows of any stride >= N, unit column stride) = x [M, K] W^T (+ bias).
  void run(const at::Tensor& x, const at::Tensor& out) const;
};

// One decoder layer. Pre-norm llama-style layers have input_norm and mlp_norm; "sandwich" layers
// (gemma3) also norm each sublayer's output before its residual add.
struct DecoderLayerWeights {
  at::Tensor input_norm;  // [hidden], before attention
  at::Tensor mlp_norm;    // [hidden], before the MLP (llama's post_attention_layernorm)
  std::optional<at::Tensor> attn_out_norm, mlp_out_norm;  // [hidden], on the sublayer outputs (gemma3)
  std::optional<at::Tensor> q_norm, k_norm;  // [head_dim] (qwen3, gemma3)
  LinearWeight qkv, o, gate_up, down;
  int64_t window = 0;  // > 0: sliding-window attention over that many keys
  int64_t rope = 0;    // RoPE table: 0 the model's, 1 the local layers' own
};

enum class Activation : int64_t { kSilu = 0, kGeluTanh = 1 };  // the gated MLP's activation

struct DecoderShape {
  int64_t hidden = 0, intermediate = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0, vocab = 0;
  double rms_norm_eps = 1e-6;
  double attention_scale = 0.0;  // softmax scale (0: head_dim ** -0.5)
  double embedding_scale = 1.0;  // the token embeddings are multiplied by it (gemma: sqrt(hidden))
  Activation activation = Activation::kSilu;
};

class NativeDecoder {
 public:
  // embedding: the token table as a LinearWeight ([vocab, hidden]; rows are looked up);
  // head: the LM head (often the same weight when embeddings are tied).
  NativeDecoder(DecoderShape shape, LinearWeight embedding, std::vector<DecoderLayerWeights> layers,
                at::Tensor final_norm, LinearWeight head);

  // The INTERFACES.md forward: ForwardBatch's tensors, the per-layer K/V caches, the RoPE
  // cos/sin tables covering every position in the batch (and the local layers' own tables where
  // a layer has rope == 1). Returns float32 logits [R, vocab].
  at::Tensor forward(const at::Tensor& token_ids, const at::Tensor& positions, const at::Tensor& slot_mapping,
                     const at::Tensor& block_tables, const at::Tensor& context_lens,
                     const at::Tensor& query_start_loc, const at::Tensor& logits_indices,
                     const std::vector<at::Tensor>& k_caches, const std::vector<at::Tensor>& v_caches,
                     const at::Tensor& cos, const at::Tensor& sin, const std::optional<at::Tensor>& local_cos,
                     const std::optional<at::Tensor>& local_sin);

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }

  // Per-kernel wall time summed over steps while profiling is on (bench/ reads it): name -> seconds.
  void set_profiling(bool on);
  std::vector<std::pair<std::string, double>> profile() const;

 private:
  enum Phase { kEmbed, kNorm, kQkv, kRope, kKvWrite, kAttention, kO, kGateUp, kActivation, kDown, kHead, kPhases };
  void lap(Phase phase);
  bool profiling_ = false;
  double seconds_[kPhases] = {};
  int64_t steps_ = 0;
  std::chrono::steady_clock::time_point mark_;

  DecoderShape shape_;
  LinearWeight embedding_;
  std::vector<DecoderLayerWeights> layers_;
  at::Tensor final_norm_;
  LinearWeight head_;
  std::mutex mutex_;  // one step at a time: the activation buffers below are reused
  at::Tensor workspace_;
};

// Rows `ids` of a [N, K] weight as float32 [T, K]: the embedding lookup, also for packed tables.
at::Tensor embedding_rows(const LinearWeight& table, const at::Tensor& ids);

}  // namespace astrai

// The packed weight layout of every quantization the native kernels serve: defined here once,
// written by the packer (quant_pack.cpp), read by the linear kernels (qlinear.cpp) and the
// embedding lookup (forward.cpp). astrai.model.kernels.quant documents it for Python and checks
// its constants against packed_nbytes.
//
// Every type is described per row and block of 32 weights by integer codes q (unsigned, or int8
// for Q8_0), a scale per span (32 weights, or 16 for the "half" types Q6_K / Q3_K), an integer
// offset o and, for the "min" types, an additive float m per block:
//     w[k] = s(span of k) * float(q[k] - o)  +  m(block of k)
// which is exactly how the `gguf` package dequantizes each type (s and m are exact float32
// products of the file's fp16 and small-integer scales; for Q4_1 / Q5_1, m is the file's m, for
// Q4_K / Q5_K it is -(dmin * m)).
//
// Bytes: G = ceil(N / 8) groups of 8 output rows (rows past N are zero), nb = K / 32 blocks,
// ns = K / 256 super-blocks (K types only):
//     [quants: G x nb x QB][scales: G x nb x SB][super: G x ns x XB]
// In a group-block the quants hold, for weight vector j = 0..7 (k = 4j .. 4j+3 of all 8 rows;
// byte 4r+i of a 32-byte chunk is row r, k = 4j+i):
//   nibbles (128 B)  chunk c = 0..3: low nibble = bits 0-3 of q for vector j = c, high nibble for
//                    vector j = c + 4
//   plane2  (64 B)   chunk c = 0..1: bits 2s..2s+1 = two bits of q for vector j = 4c + s
//                    (bits 4-5 for Q6_K, bits 0-1 for Q3_K)
//   plane1  (32 B)   one chunk: bit j of byte 4r+i = one bit of q for vector j (bit 4 for the
//                    Q5 types, bit 2 for Q3_K)
//   int8s   (256 B)  Q8_0: chunk j = the int8 weights of vector j
// in that order. Scales, per group-block: fp16 d[8] (Q4_0, Q5_0, Q8_0); fp16 d[8], fp16 m[8]
// (Q4_1, Q5_1); uint8 sc[8], uint8 m[8] (Q4_K, Q5_K); int8 sc[2][8], half 0 then half 1 (Q6_K,
// Q3_K, 6-bit scales already decoded). Super, per group-super-block: fp16 d[8], fp16 dmin[8]
// (Q4_K, Q5_K); fp16 d[8] (Q6_K, Q3_K).
#pragma once

#include <cstdint>

namespace astrai {

enum class QType : int64_t {  // GGML type ids
  Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14,
};

constexpr int64_t kQBlock = 32;        // weights per block (and per activation scale)
constexpr int64_t kRowsPerGroup = 8;   // output rows interleaved in one group
constexpr int64_t kSuperBlock = 256;   // weights per K-quant super-block
constexpr int64_t kBlocksPerSuper = kSuperBlock / kQBlock;

struct Layout {
  int64_t nibbles = 0, plane2 = 0, plane1 = 0, int8s = 0;  // quant bytes per group-block, by part
  int64_t scales = 0;       // SB
  int64_t super = 0;        // XB (K types)
  int offset = 0;           // o
  int max_code = 0;         // largest q (the AVX2 kernel's int16 headroom depends on it)
  bool halves = false;      // scales per 16 weights
  bool has_min = false;
  bool k_scales = false;    // per-block integer scales times per-super-block fp16 (K types)
  int64_t gguf_block_bytes = 0, gguf_block_weights = 0;

  constexpr int64_t quant_bytes() const { return nibbles + plane2 + plane1 + int8s; }
};

constexpr Layout layout_of(QType t) {
  Layout l;
  switch (t) {
    case QType::Q4_0: l.nibbles = 128; l.scales = 16; l.offset = 8; l.max_code = 15; l.gguf_block_bytes = 18; break;
    case QType::Q4_1: l.nibbles = 128; l.scales = 32; l.has_min = true; l.max_code = 15; l.gguf_block_bytes = 20; break;
    case QType::Q5_0: l.nibbles = 128; l.plane1 = 32; l.scales = 16; l.offset = 16; l.max_code = 31;
                      l.gguf_block_bytes = 22; break;
    case QType::Q5_1: l.nibbles = 128; l.plane1 = 32; l.scales = 32; l.has_min = true; l.max_code = 31;
                      l.gguf_block_bytes = 24; break;
    case QType::Q8_0: l.int8s = 256; l.scales = 16; l.max_code = 127; l.gguf_block_bytes = 34; break;
    case QType::Q3_K: l.plane2 = 64; l.plane1 = 32; l.scales = 16; l.super = 16; l.offset = 4; l.max_code = 7;
                      l.halves = true; l.k_scales = true; l.gguf_block_bytes = 110; break;
    case QType::Q4_K: l.nibbles = 128; l.scales = 16; l.super = 32; l.has_min = true; l.max_code = 15;
                      l.k_scales = true; l.gguf_block_bytes = 144; break;
    case QType::Q5_K: l.nibbles = 128; l.plane1 = 32; l.scales = 16; l.super = 32; l.has_min = true;
                      l.max_code = 31; l.k_scales = true; l.gguf_block_bytes = 176; break;
    case QType::Q6_K: l.nibbles = 128; l.plane2 = 64; l.scales = 16; l.super = 16; l.offset = 32; l.max_code = 63;
                      l.halves = true; l.k_scales = true; l.gguf_block_bytes = 210; break;
  }
  l.gguf_block_weights = l.k_scales ? kSuperBlock : kQBlock;
  return l;
}

// The GGML type id as a QType; throws naming the supported types otherwise.
QType checked_qtype(int64_t id);

// K must be a multiple of 32 (256 for the K types).
int64_t packed_nbytes(QType qtype, int64_t N, int64_t K);

// Where each region of a packed [N, K] weight starts, and its per-group strides.
struct PackedRegions {
  int64_t groups = 0, blocks = 0, supers = 0;
  int64_t quants = 0, scales = 0, super = 0;  // byte offsets of the regions
  int64_t quant_group = 0, scale_group = 0, super_group = 0;  // bytes per group in each
};
PackedRegions packed_regions(QType qtype, int64_t N, int64_t K);

}  // namespace astrai

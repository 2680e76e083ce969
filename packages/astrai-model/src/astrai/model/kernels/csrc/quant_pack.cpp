// GGUF block decoding (one place per type, mirroring the `gguf` package's dequantization) and
// the packer / unpacker of the kernels' layout. Scalar code: it runs once per weight at load.
#include "quant_pack.h"

#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>

#include "parallel.h"

namespace astrai {

QType checked_qtype(int64_t id) {
  switch (id) {
    case 2: case 3: case 6: case 7: case 8: case 11: case 12: case 13: case 14: return static_cast<QType>(id);
    default:
      TORCH_CHECK(false, "unsupported quantization type id ", id,
                  " (supported GGML types: Q4_0=2, Q4_1=3, Q5_0=6, Q5_1=7, Q8_0=8, Q3_K=11, Q4_K=12, Q5_K=13, Q6_K=14)");
  }
}

PackedRegions packed_regions(QType qtype, int64_t N, int64_t K) {
  const Layout l = layout_of(qtype);
  PackedRegions r;
  r.groups = (N + kRowsPerGroup - 1) / kRowsPerGroup;
  r.blocks = K / kQBlock;
  r.supers = l.k_scales ? K / kSuperBlock : 0;
  r.quant_group = r.blocks * l.quant_bytes();
  r.scale_group = r.blocks * l.scales;
  r.super_group = r.supers * l.super;
  r.quants = 0;
  r.scales = r.groups * r.quant_group;
  r.super = r.scales + r.groups * r.scale_group;
  return r;
}

int64_t packed_nbytes(QType qtype, int64_t N, int64_t K) {
  const PackedRegions r = packed_regions(qtype, N, K);
  return r.super + r.groups * r.super_group;
}

void check_packed(const at::Tensor& packed, QType qtype, int64_t N, int64_t K, const char* what) {
  const Layout l = layout_of(qtype);
  TORCH_CHECK(N > 0, what, ": out_features must be positive, got ", N);
  TORCH_CHECK(K > 0 && K % l.gguf_block_weights == 0, what, ": in_features must be a positive multiple of ",
              l.gguf_block_weights, " for type ", static_cast<int64_t>(qtype), ", got ", K);
  TORCH_CHECK(packed.device().is_cpu() && packed.scalar_type() == at::kByte && packed.dim() == 1 &&
                  packed.is_contiguous(),
              what, ": packed weight must be a contiguous 1-D uint8 CPU tensor (from pack_gguf)");
  TORCH_CHECK(packed.numel() == packed_nbytes(qtype, N, K), what, ": packed weight has ", packed.numel(),
              " bytes, expected ", packed_nbytes(qtype, N, K), " for type ", static_cast<int64_t>(qtype), ", N=", N,
              ", K=", K);
}

namespace {

uint16_t u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

float half_bits_to_float(uint16_t bits) { return static_cast<float>(c10::Half(bits, c10::Half::from_bits())); }

// One 32-weight block of a GGUF row, decoded into what the packed layout stores.
struct Block {
  int16_t q[kQBlock];  // codes: unsigned (0 .. max_code), or the int8 weight for Q8_0
  uint16_t d = 0;      // fp16 bits: d (32-weight types) or the super-block's d (K types)
  uint16_t e = 0;      // fp16 bits: m (Q4_1, Q5_1) or the super-block's dmin (Q4_K, Q5_K)
  int sc[2] = {0, 0};  // K types: the block's scale (sc[0]), or the two 16-weight halves' scales
  int mc = 0;          // Q4_K / Q5_K: the block's integer min
};

// Q4_K / Q5_K: the 6-bit scale and min of sub-block j from the 12 packed bytes.
void k_scale_min(const uint8_t* s, int j, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Block b (32 weights) of a GGUF row.
Block decode(QType t, const uint8_t* row, int64_t b) {
  const Layout l = layout_of(t);
  Block out;
  if (!l.k_scales) {
    const uint8_t* p = row + b * l.gguf_block_bytes;
    out.d = u16(p);
    switch (t) {
      case QType::Q8_0:
        for (int k = 0; k < 32; ++k) out.q[k] = static_cast<int8_t>(p[2 + k]);
        break;
      case QType::Q4_0: case QType::Q4_1: {
        const uint8_t* qs = p + (t == QType::Q4_1 ? 4 : 2);
        if (t == QType::Q4_1) out.e = u16(p + 2);
        for (int k = 0; k < 16; ++k) {
          out.q[k] = qs[k] & 15;
          out.q[k + 16] = qs[k] >> 4;
        }
        break;
      }
      default: {  // Q5_0, Q5_1: fp16 d (, fp16 m), uint32 qh, qs[16]
        const int head = t == QType::Q5_1 ? 4 : 2;
        if (t == QType::Q5_1) out.e = u16(p + 2);
        uint32_t qh;
        std::memcpy(&qh, p + head, 4);
        const uint8_t* qs = p + head + 4;
        for (int k = 0; k < 16; ++k) {
          out.q[k] = (qs[k] & 15) | (((qh >> k) & 1) << 4);
          out.q[k + 16] = (qs[k] >> 4) | (((qh >> (k + 16)) & 1) << 4);
        }
      }
    }
    return out;
  }
  const uint8_t* p = row + (b / kBlocksPerSuper) * l.gguf_block_bytes;
  const int jb = static_cast<int>(b % kBlocksPerSuper);  // block within the super-block
  switch (t) {
    case QType::Q4_K: case QType::Q5_K: {
      out.d = u16(p);
      out.e = u16(p + 2);
      k_scale_min(p + 4, jb, out.sc[0], out.mc);
      const uint8_t* qh = p + 16;
      const uint8_t* qs = p + 16 + (t == QType::Q5_K ? 32 : 0);
      for (int k = 0; k < 32; ++k) {
        const uint8_t byte = qs[32 * (jb / 2) + k];
        out.q[k] = (jb % 2 == 0 ? byte & 15 : byte >> 4);
        if (t == QType::Q5_K) out.q[k] |= ((qh[k] >> jb) & 1) << 4;
      }
      break;
    }
    case QType::Q6_K: {  // ql[128], qh[64], int8 scales[16], fp16 d
      const uint8_t* ql = p;
      const uint8_t* qh = p + 128;
      const int8_t* scales = reinterpret_cast<const int8_t*>(p + 192);
      out.d = u16(p + 208);
      for (int k = 0; k < 32; ++k) {
        const int w = jb * 32 + k, h = w / 128, r = w % 128;
        const int low = r < 64 ? ql[64 * h + r] & 15 : ql[64 * h + r - 64] >> 4;
        const int high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        out.q[k] = static_cast<int16_t>(low | (high << 4));
      }
      out.sc[0] = scales[2 * jb];
      out.sc[1] = scales[2 * jb + 1];
      break;
    }
    default: {  // Q3_K: hmask[32], qs[64], scales[12], fp16 d
      const uint8_t* hmask = p;
      const uint8_t* qs = p + 32;
      const uint8_t* s = p + 96;
      out.d = u16(p + 108);
      for (int half = 0; half < 2; ++half) {
        const int i = 2 * jb + half;
        const int low = (i < 8 ? s[i] : s[i - 8] >> 4) & 0x0F;
        const int high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        out.sc[half] = (low | (high << 4)) - 32;
      }
      for (int k = 0; k < 32; ++k) {
        const int w = jb * 32 + k, h = w / 128, r = w % 128;
        const int low = (qs[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        const int bit = (hmask[w % 32] >> (w / 32)) & 1;
        out.q[k] = static_cast<int16_t>(low | (bit << 2));  // gguf's low - 4 * (1 - bit), offset by 4
      }
    }
  }
  return out;
}

// ---- writing and reading one group-block of the packed layout ----

struct GroupPtrs {
  uint8_t* quants;  // the group-block's quant bytes
  uint8_t* scales;  // its scale bytes
  uint8_t* super;   // its group-super-block's bytes (K types), or nullptr
};

GroupPtrs group_ptrs(uint8_t* base, const PackedRegions& r, QType t, int64_t g, int64_t b) {
  const Layout l = layout_of(t);
  GroupPtrs p;
  p.quants = base + r.quants + g * r.quant_group + b * l.quant_bytes();
  p.scales = base + r.scales + g * r.scale_group + b * l.scales;
  p.super = l.k_scales ? base + r.super + g * r.super_group + (b / kBlocksPerSuper) * l.super : nullptr;
  return p;
}

// Store row r's block (codes and scales) into the group-block.
void put(QType t, const Block& blk, int r, const GroupPtrs& p, bool first_of_super) {
  const Layout l = layout_of(t);
  uint8_t* q = p.quants;
  if (l.int8s) {
    for (int k = 0; k < 32; ++k) q[32 * (k / 4) + 4 * r + k % 4] = static_cast<uint8_t>(static_cast<int8_t>(blk.q[k]));
  }
  if (l.nibbles) {
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < 4; ++i)
        q[32 * c + 4 * r + i] = static_cast<uint8_t>((blk.q[4 * c + i] & 15) | ((blk.q[16 + 4 * c + i] & 15) << 4));
    q += 128;
  }
  if (l.plane2) {
    const int shift = t == QType::Q6_K ? 4 : 0;
    for (int c = 0; c < 2; ++c)
      for (int i = 0; i < 4; ++i) {
        uint8_t byte = 0;
        for (int s = 0; s < 4; ++s) byte |= ((blk.q[4 * (4 * c + s) + i] >> shift) & 3) << (2 * s);
        q[32 * c + 4 * r + i] = byte;
      }
    q += 64;
  }
  if (l.plane1) {
    const int shift = t == QType::Q3_K ? 2 : 4;
    for (int i = 0; i < 4; ++i) {
      uint8_t byte = 0;
      for (int j = 0; j < 8; ++j) byte |= ((blk.q[4 * j + i] >> shift) & 1) << j;
      q[4 * r + i] = byte;
    }
  }
  uint8_t* s = p.scales;
  switch (t) {
    case QType::Q4_0: case QType::Q5_0: case QType::Q8_0: std::memcpy(s + 2 * r, &blk.d, 2); break;
    case QType::Q4_1: case QType::Q5_1:
      std::memcpy(s + 2 * r, &blk.d, 2);
      std::memcpy(s + 16 + 2 * r, &blk.e, 2);
      break;
    case QType::Q4_K: case QType::Q5_K:
      s[r] = static_cast<uint8_t>(blk.sc[0]);
      s[8 + r] = static_cast<uint8_t>(blk.mc);
      if (first_of_super) {
        std::memcpy(p.super + 2 * r, &blk.d, 2);
        std::memcpy(p.super + 16 + 2 * r, &blk.e, 2);
      }
      break;
    default:  // Q6_K, Q3_K
      s[r] = static_cast<uint8_t>(static_cast<int8_t>(blk.sc[0]));
      s[8 + r] = static_cast<uint8_t>(static_cast<int8_t>(blk.sc[1]));
      if (first_of_super) std::memcpy(p.super + 2 * r, &blk.d, 2);
  }
}

// Row r's block back from the group-block: codes, the two 16-weight scales, the min.
void get(QType t, const GroupPtrs& p, int r, int16_t* q, float* s, float& m) {
  const Layout l = layout_of(t);
  const uint8_t* src = p.quants;
  if (l.int8s) {
    for (int k = 0; k < 32; ++k) q[k] = static_cast<int8_t>(src[32 * (k / 4) + 4 * r + k % 4]);
  } else {
    for (int k = 0; k < 32; ++k) q[k] = 0;
  }
  if (l.nibbles) {
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < 4; ++i) {
        const uint8_t byte = src[32 * c + 4 * r + i];
        q[4 * c + i] = byte & 15;
        q[16 + 4 * c + i] = byte >> 4;
      }
    src += 128;
  }
  if (l.plane2) {
    const int shift = t == QType::Q6_K ? 4 : 0;
    for (int j = 0; j < 8; ++j)
      for (int i = 0; i < 4; ++i) q[4 * j + i] |= ((src[32 * (j / 4) + 4 * r + i] >> (2 * (j % 4))) & 3) << shift;
    src += 64;
  }
  if (l.plane1) {
    const int shift = t == QType::Q3_K ? 2 : 4;
    for (int j = 0; j < 8; ++j)
      for (int i = 0; i < 4; ++i) q[4 * j + i] |= ((src[4 * r + i] >> j) & 1) << shift;
  }
  const uint8_t* sc = p.scales;
  m = 0.0f;
  switch (t) {
    case QType::Q4_0: case QType::Q5_0: case QType::Q8_0:
      s[0] = s[1] = half_bits_to_float(u16(sc + 2 * r));
      break;
    case QType::Q4_1: case QType::Q5_1:
      s[0] = s[1] = half_bits_to_float(u16(sc + 2 * r));
      m = half_bits_to_float(u16(sc + 16 + 2 * r));
      break;
    case QType::Q4_K: case QType::Q5_K:
      s[0] = s[1] = half_bits_to_float(u16(p.super + 2 * r)) * static_cast<float>(sc[r]);
      m = -(half_bits_to_float(u16(p.super + 16 + 2 * r)) * static_cast<float>(sc[8 + r]));
      break;
    default: {
      const float d = half_bits_to_float(u16(p.super + 2 * r));
      s[0] = d * static_cast<float>(static_cast<int8_t>(sc[r]));
      s[1] = d * static_cast<float>(static_cast<int8_t>(sc[8 + r]));
    }
  }
}

void check_k(QType t, int64_t K, const char* what) {
  const Layout l = layout_of(t);
  TORCH_CHECK(K > 0 && K % l.gguf_block_weights == 0, what, ": in_features must be a positive multiple of ",
              l.gguf_block_weights, " for GGML type ", static_cast<int64_t>(t), ", got ", K);
}

}  // namespace

at::Tensor pack_gguf(const at::Tensor& raw, QType qtype, int64_t K) {
  check_k(qtype, K, "pack_gguf");
  const Layout l = layout_of(qtype);
  const int64_t row_bytes = K / l.gguf_block_weights * l.gguf_block_bytes;
  TORCH_CHECK(raw.device().is_cpu() && raw.scalar_type() == at::kByte && raw.dim() == 2 && raw.size(0) > 0 &&
                  raw.size(1) == row_bytes,
              "pack_gguf: GGML type ", static_cast<int64_t>(qtype), " rows of ", K, " weights need shape [N, ",
              row_bytes, "] uint8, got ", raw.scalar_type(), " ", raw.sizes());
  TORCH_CHECK(raw.stride(1) == 1, "pack_gguf: raw rows need a contiguous last dimension");
  const int64_t N = raw.size(0);
  const PackedRegions regions = packed_regions(qtype, N, K);
  at::Tensor packed = at::zeros({packed_nbytes(qtype, N, K)}, at::kByte);
  uint8_t* base = packed.data_ptr<uint8_t>();
  const uint8_t* src = raw.data_ptr<uint8_t>();
  const int64_t stride = raw.stride(0);
  parallel_for(0, regions.groups, 16, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      for (int64_t b = 0; b < regions.blocks; ++b) {
        const GroupPtrs p = group_ptrs(base, regions, qtype, g, b);
        for (int r = 0; r < kRowsPerGroup && g * kRowsPerGroup + r < N; ++r)
          put(qtype, decode(qtype, src + (g * kRowsPerGroup + r) * stride, b), r, p, b % kBlocksPerSuper == 0);
      }
  });
  return packed;
}

void dequantize_row(const uint8_t* packed, QType qtype, int64_t N, int64_t K, int64_t n, float* out) {
  const Layout l = layout_of(qtype);
  const PackedRegions regions = packed_regions(qtype, N, K);
  const int64_t g = n / kRowsPerGroup;
  const int r = static_cast<int>(n % kRowsPerGroup);
  int16_t q[kQBlock];
  float s[2], m;
  for (int64_t b = 0; b < regions.blocks; ++b) {
    get(qtype, group_ptrs(const_cast<uint8_t*>(packed), regions, qtype, g, b), r, q, s, m);
    for (int k = 0; k < kQBlock; ++k) {
      const float w = s[k / 16] * static_cast<float>(q[k] - l.offset);
      out[b * kQBlock + k] = l.has_min ? w + m : w;
    }
  }
}

at::Tensor dequantize_packed(const at::Tensor& packed, QType qtype, int64_t N, int64_t K) {
  check_packed(packed, qtype, N, K, "dequantize");
  at::Tensor out = at::empty({N, K}, at::kFloat);
  const uint8_t* base = packed.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) dequantize_row(base, qtype, N, K, n, dst + n * K);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> packed_components(const at::Tensor& packed, QType qtype, int64_t N,
                                                                 int64_t K) {
  check_packed(packed, qtype, N, K, "packed_components");
  const PackedRegions regions = packed_regions(qtype, N, K);
  at::Tensor codes = at::empty({N, K}, at::kShort);
  at::Tensor scales = at::empty({N, K / 16}, at::kFloat);
  at::Tensor mins = at::zeros({N, K / kQBlock}, at::kFloat);
  uint8_t* base = packed.data_ptr<uint8_t>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b < regions.blocks; ++b) {
      float s[2], m;
      get(qtype, group_ptrs(base, regions, qtype, n / kRowsPerGroup, b), static_cast<int>(n % kRowsPerGroup),
          codes.data_ptr<int16_t>() + n * K + b * kQBlock, s, m);
      scales.data_ptr<float>()[n * (K / 16) + 2 * b] = s[0];
      scales.data_ptr<float>()[n * (K / 16) + 2 * b + 1] = s[1];
      mins.data_ptr<float>()[n * (K / kQBlock) + b] = m;
    }
  return {codes, scales, mins};
}

}  // namespace astrai

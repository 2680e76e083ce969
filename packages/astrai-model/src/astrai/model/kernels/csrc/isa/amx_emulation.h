// AMX tile instructions in software, for the test-only build `amx_emulated` (ASTRAI_AMX_EMULATION):
// the amx variant's code runs unchanged on a CPU without AMX, so its tile shapes, strides,
// operand order and signedness are checked against the same oracles as the other variants.
// Written from the Intel SDM's pseudocode for LDTILECFG, TILELOADD, TILESTORED, TILEZERO,
// TDPBSSD and TDPBSUD, palette 1 (8 tiles of at most 16 rows x 64 bytes), including the shape
// checks for which the hardware raises #UD: here they throw. It proves nothing about speed, and
// nothing about a CPU's own AMX unit (tests/model/test_amx_code.py checks that where AMX exists).
// Included by isa/amx.h after <immintrin.h>, whose _tile_* macros it replaces.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace astrai::isa::emulated {

constexpr int kTiles = 8, kMaxRows = 16, kMaxColsb = 64;

// One thread's tile state, as the hardware keeps it per thread.
struct TileFile {
  bool configured = false;
  uint8_t rows[kTiles] = {};
  uint16_t colsb[kTiles] = {};
  alignas(64) uint8_t data[kTiles][kMaxRows][kMaxColsb] = {};
};

inline TileFile& tile_file() {
  static thread_local TileFile file;
  return file;
}

[[noreturn]] inline void fault(const std::string& what) {
  throw std::logic_error("emulated AMX (the hardware would raise #UD or #GP): " + what);
}

// LDTILECFG with palette 1. Reads the SDM's 64-byte layout on its own (palette, start_row,
// 14 reserved bytes, 16 x colsb, 16 x rows), not through isa::TileConfig, so a struct that
// strayed from it faults here as it would on the hardware. Loading zeroes every tile.
inline void load_config(const void* config) {
  const auto* bytes = static_cast<const uint8_t*>(config);
  TileFile& f = tile_file();
  if (bytes[0] != 1) fault("palette " + std::to_string(bytes[0]) + " (only palette 1 is emulated)");
  for (int i = 2; i < 16; ++i)
    if (bytes[i] != 0) fault("a reserved byte of the tile configuration is not zero");
  for (int t = 0; t < 16; ++t) {
    uint16_t colsb;
    std::memcpy(&colsb, bytes + 16 + 2 * t, 2);
    const uint8_t rows = bytes[48 + t];
    if (t >= kTiles) {
      if (colsb != 0 || rows != 0) fault("tile " + std::to_string(t) + " configured beyond palette 1's 8 tiles");
      continue;
    }
    if (rows > kMaxRows || colsb > kMaxColsb) fault("tile " + std::to_string(t) + " larger than 16 rows x 64 bytes");
    if ((rows == 0) != (colsb == 0)) fault("tile " + std::to_string(t) + " has rows or bytes but not both");
    f.rows[t] = rows;
    f.colsb[t] = colsb;
  }
  std::memset(f.data, 0, sizeof(f.data));
  f.configured = true;
}

inline void check_tile(int t) {
  const TileFile& f = tile_file();
  if (!f.configured) fault("tile instruction before a tile configuration was loaded");
  if (t < 0 || t >= kTiles || f.rows[t] == 0) fault("tile " + std::to_string(t) + " is not configured");
}

// TILELOADD: rows(t) rows of colsb(t) bytes from base + r * stride; the rest of the tile zeroed.
inline void load(int t, const void* base, int64_t stride) {
  check_tile(t);
  TileFile& f = tile_file();
  std::memset(f.data[t], 0, sizeof(f.data[t]));
  for (int r = 0; r < f.rows[t]; ++r)
    std::memcpy(f.data[t][r], static_cast<const uint8_t*>(base) + r * stride, f.colsb[t]);
}

// TILESTORED: rows(t) rows of colsb(t) bytes to base + r * stride.
inline void store(int t, void* base, int64_t stride) {
  check_tile(t);
  const TileFile& f = tile_file();
  for (int r = 0; r < f.rows[t]; ++r) std::memcpy(static_cast<uint8_t*>(base) + r * stride, f.data[t][r], f.colsb[t]);
}

inline void zero(int t) {
  check_tile(t);
  std::memset(tile_file().data[t], 0, sizeof(tile_file().data[t]));
}

// TDPB[S|U][S|U]D: c[m][n] += sum_i a[m][4k+i] * b[k][4n+i] over k < colsb(a)/4, in int32 with
// wrap-around; A's bytes signed or unsigned as `ASigned`, B's as `BSigned`.
template <bool ASigned, bool BSigned>
inline void dot_products(int c, int a, int b) {
  check_tile(c);
  check_tile(a);
  check_tile(b);
  TileFile& f = tile_file();
  if (c == a || c == b || a == b) fault("the three tiles of a dot product must differ");
  if (f.rows[c] != f.rows[a]) fault("rows(C) != rows(A)");
  if (f.colsb[c] != f.colsb[b]) fault("colsb(C) != colsb(B)");
  if (f.colsb[a] != 4 * f.rows[b]) fault("colsb(A) != 4 * rows(B)");
  if (f.colsb[a] % 4 != 0 || f.colsb[c] % 4 != 0) fault("colsb(A) or colsb(C) is not a multiple of 4");
  const auto byte_a = [&](int m, int j) -> int32_t {
    const uint8_t v = f.data[a][m][j];
    return ASigned ? static_cast<int32_t>(static_cast<int8_t>(v)) : static_cast<int32_t>(v);
  };
  const auto byte_b = [&](int k, int j) -> int32_t {
    const uint8_t v = f.data[b][k][j];
    return BSigned ? static_cast<int32_t>(static_cast<int8_t>(v)) : static_cast<int32_t>(v);
  };
  for (int m = 0; m < f.rows[c]; ++m) {
    for (int k = 0; k < f.colsb[a] / 4; ++k) {
      for (int n = 0; n < f.colsb[c] / 4; ++n) {
        int32_t sum;
        std::memcpy(&sum, &f.data[c][m][4 * n], 4);
        uint32_t wrapped = static_cast<uint32_t>(sum);
        for (int i = 0; i < 4; ++i) wrapped += static_cast<uint32_t>(byte_a(m, 4 * k + i) * byte_b(k, 4 * n + i));
        std::memcpy(&f.data[c][m][4 * n], &wrapped, 4);
      }
    }
  }
}

}  // namespace astrai::isa::emulated

#undef _tile_loadconfig
#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbssd
#undef _tile_dpbsud
#undef _tile_release
#define _tile_loadconfig(config) ::astrai::isa::emulated::load_config(config)
#define _tile_loadd(t, base, stride) ::astrai::isa::emulated::load(t, base, stride)
#define _tile_stored(t, base, stride) ::astrai::isa::emulated::store(t, base, stride)
#define _tile_zero(t) ::astrai::isa::emulated::zero(t)
#define _tile_dpbssd(c, a, b) ::astrai::isa::emulated::dot_products<true, true>(c, a, b)
#define _tile_dpbsud(c, a, b) ::astrai::isa::emulated::dot_products<true, false>(c, a, b)
#define _tile_release() (::astrai::isa::emulated::tile_file() = ::astrai::isa::emulated::TileFile{})

// AMX tile helpers for the amx variant: the tile configuration the quantized linear uses, and
// the per-thread state it needs (Linux's permission to use tile data, a loaded configuration).
// The test-only build `amx_emulated` runs the same code with the tile instructions in software.
#pragma once

#if defined(ASTRAI_ISA_AMX)
#include <immintrin.h>
#if defined(ASTRAI_AMX_EMULATION)
#include "isa/amx_emulation.h"
#endif
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace astrai::isa {

// ldtilecfg's 64-byte memory operand (palette 1).
struct TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// The quantized linear's tiles for one span width (32 or 16 int8 weights per integer sum):
//   tmm0, tmm1: activations q_hi / q_lo, 16 rows x span bytes      (A, signed)
//   tmm2:       weights, span/4 rows x 64 bytes (16 outputs x 4)    (B, unsigned / signed)
//   tmm3, tmm4: the int32 sums, 16 activation rows x 16 outputs     (C)
//   tmm5..7:    the same for the second 16-weight half (span 16 only): B, C_hi, C_lo
inline TileConfig qlinear_tiles(int span) {
  TileConfig c;
  c.rows[0] = c.rows[1] = 16;
  c.colsb[0] = c.colsb[1] = static_cast<uint16_t>(span);
  c.rows[2] = static_cast<uint8_t>(span / 4);
  c.colsb[2] = 64;
  c.rows[3] = c.rows[4] = 16;
  c.colsb[3] = c.colsb[4] = 64;
  if (span == 16) {
    c.rows[5] = 4;
    c.colsb[5] = 64;
    c.rows[6] = c.rows[7] = 16;
    c.colsb[6] = c.colsb[7] = 64;
  }
  return c;
}

// Ask Linux once per process for the AMX tile data state (without it the first tile
// instruction faults); the probe has already shown the request succeeds on this machine.
// (Software tiles need none.)
inline void request_tile_permission() {
#if !defined(ASTRAI_AMX_EMULATION)
  static const bool granted = [] {
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  if (!granted) throw std::runtime_error("AMX: Linux refused the tile data permission (arch_prctl)");
#endif
}

// Load `config` on this thread unless it is already the loaded one.
inline void load_tile_config(const TileConfig& config, int span) {
  static thread_local int loaded = 0;
  if (loaded == span) return;
  _tile_loadconfig(&config);
  loaded = span;
}

}  // namespace astrai::isa
#endif

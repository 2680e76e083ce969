// Which of AstrAI's kernel instruction sets this machine can really run.
//
// For each variant: CPUID says the CPU has the instructions, XGETBV says the OS saves their
// register state (XCR0), for AMX Linux grants the tile data permission (arch_prctl), and then a
// forked child executes a few of the variant's instructions: a VM that advertises what it cannot
// run kills the child with SIGILL instead of the caller. Prints one line per variant:
//   <variant> yes|no <reason>
// Standalone C (no torch), built with the same compiler the kernels use.
#include <cpuid.h>
#include <immintrin.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

struct cpu {
  int avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16, amx_tile, amx_int8, amx_bf16;
  int osxsave;
  uint64_t xcr0;
};

static uint64_t xgetbv0(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

static struct cpu read_cpu(void) {
  struct cpu c;
  memset(&c, 0, sizeof c);
  unsigned a, b, cx, d;
  if (!__get_cpuid(1, &a, &b, &cx, &d)) return c;
  c.fma = (cx >> 12) & 1;
  c.osxsave = (cx >> 27) & 1;
  c.f16c = (cx >> 29) & 1;
  if (c.osxsave) c.xcr0 = xgetbv0();
  if (__get_cpuid_max(0, 0) < 7) return c;
  __cpuid_count(7, 0, a, b, cx, d);
  c.avx2 = (b >> 5) & 1;
  c.avx512f = (b >> 16) & 1;
  c.avx512dq = (b >> 17) & 1;
  c.avx512bw = (b >> 30) & 1;
  c.avx512vl = (b >> 31) & 1;
  c.avx512vnni = (cx >> 11) & 1;
  c.amx_bf16 = (d >> 22) & 1;
  c.amx_tile = (d >> 24) & 1;
  c.amx_int8 = (d >> 25) & 1;
  __cpuid_count(7, 1, a, b, cx, d);
  c.avx512bf16 = (a >> 5) & 1;
  return c;
}

__attribute__((target("avx2,fma,f16c"))) static int run_avx2(void) {
  volatile float in[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  __m256 v = _mm256_loadu_ps((const float*)in);
  v = _mm256_fmadd_ps(v, v, v);
  __m128i h = _mm256_cvtps_ph(v, 0);
  __m256i i = _mm256_maddubs_epi16(_mm256_set1_epi8(3), _mm256_set1_epi8(-2));
  return (int16_t)_mm256_extract_epi16(i, 0) == -12 && _mm_extract_epi16(h, 0) != 0 ? 0 : 1;
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16"))) static int run_avx512(void) {
  __m512i acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(3), _mm512_set1_epi8(-2));
  __m512i w = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_set1_epi16(3), _mm512_set1_epi16(-2));
  __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1.5f), _mm512_set1_ps(2.0f));
  __m512 dot = _mm512_dpbf16_ps(_mm512_setzero_ps(), x, x);
  __mmask64 k = _mm512_cmpeq_epi8_mask(_mm512_set1_epi8(1), _mm512_set1_epi8(1));
  int ok = _mm512_reduce_add_epi32(acc) == -24 * 16 && _mm512_reduce_add_epi32(w) == -12 * 16 &&
           _mm512_reduce_add_ps(dot) > 0.0f && k == ~0ULL;
  return ok ? 0 : 1;
}

struct tile_config {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

__attribute__((target("amx-tile,amx-int8,amx-bf16"))) static int run_amx(void) {
  if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return 2;
  struct tile_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 3; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  static int8_t a[16 * 64], b[16 * 64];
  static int32_t c[16 * 16];
  memset(a, 1, sizeof a);
  memset(b, 2, sizeof b);
  _tile_loadconfig(&cfg);
  _tile_zero(0);
  _tile_loadd(1, a, 64);
  _tile_loadd(2, b, 64);
  _tile_dpbssd(0, 1, 2);
  _tile_stored(0, c, 64);
  _tile_release();
  return c[0] == 128 && c[255] == 128 ? 0 : 1;
}

// Runs f in a child; 0 if it returned 0, else the reason.
static const char* in_child(int (*f)(void)) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) _exit(f());
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return "waitpid failed";
  if (WIFSIGNALED(status)) return WTERMSIG(status) == SIGILL ? "SIGILL in the probe" : "the probe crashed";
  if (WEXITSTATUS(status) == 2) return "Linux refused the AMX tile permission (arch_prctl)";
  return WEXITSTATUS(status) == 0 ? NULL : "wrong results in the probe";
}

static void report(const char* name, const char* missing, int (*f)(void)) {
  const char* why = missing ? missing : in_child(f);
  printf("%s %s %s\n", name, why ? "no" : "yes", why ? why : "probe ran");
}

int main(void) {
  struct cpu c = read_cpu();
  const int ymm_state = c.osxsave && (c.xcr0 & 0x6) == 0x6;
  const int zmm_state = ymm_state && (c.xcr0 & 0xe0) == 0xe0;
  const int tile_state = (c.xcr0 & 0x60000) == 0x60000;
  report("avx2", !(c.avx2 && c.fma && c.f16c) ? "the CPU lacks AVX2/FMA/F16C"
                 : !ymm_state                 ? "the OS does not enable AVX state (XCR0)"
                                              : NULL,
         run_avx2);
  const int has512 = c.avx512f && c.avx512bw && c.avx512vl && c.avx512dq && c.avx512vnni && c.avx512bf16;
  report("avx512", !has512     ? "the CPU lacks AVX-512 F/BW/VL/DQ/VNNI/BF16"
                   : !zmm_state ? "the OS does not enable AVX-512 state (XCR0)"
                                : NULL,
         run_avx512);
  const int has_amx = has512 && c.amx_tile && c.amx_int8 && c.amx_bf16;
  report("amx", !has_amx                   ? "the CPU lacks AMX-TILE/INT8/BF16 (or AVX-512)"
                : !zmm_state || !tile_state ? "the OS does not enable AMX tile state (XCR0)"
                                            : NULL,
         run_amx);
  return 0;
}

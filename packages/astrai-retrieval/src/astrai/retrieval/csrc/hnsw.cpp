// HNSW graph kernels for astrai.retrieval: insert, search, repair.
//
// The C++ twin of graph.py (read that first: the layout and every ordering rule are the same,
// so both build the same graph when distances are exact). Plain C ABI over numpy buffers owned
// by Python; no allocation of graph memory here. Distances pick AVX-512 / AVX2+FMA / scalar
// code at run time from the CPU's features (function target attributes, never -march=native).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <queue>
#include <unordered_set>
#include <utility>
#include <vector>

#define ASTRAI_API __attribute__((visibility("default")))

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define ASTRAI_X86 1
#endif

extern "C" {

struct AstraiGraph {
  const float* vectors;   // [cap, dim]
  const int32_t* levels;  // [cap]
  const int32_t* upper;   // [cap] first upper row or -1
  int32_t* links0;        // [cap, M0]
  int32_t* count0;        // [cap]
  int32_t* links_up;      // [rows, M]
  int32_t* count_up;      // [rows]
  const uint8_t* deleted; // [cap]
  int32_t dim;
  int32_t M;
  int32_t M0;
  int32_t metric;         // 0: 1 - dot, 1: squared L2
  int32_t n;              // slots in use
  int32_t entry;          // in/out
  int32_t max_level;      // in/out
  int32_t num_deleted;
};

}  // extern "C"

namespace {

using Dist = float (*)(const float*, const float*, int);

float dot_scalar(const float* a, const float* b, int d) {
  float s = 0.f;
  for (int i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

float l2_scalar(const float* a, const float* b, int d) {
  float s = 0.f;
  for (int i = 0; i < d; ++i) {
    float t = a[i] - b[i];
    s += t * t;
  }
  return s;
}

#ifdef ASTRAI_X86
__attribute__((target("avx2,fma"))) float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

__attribute__((target("avx2,fma"))) float dot_avx2(const float* a, const float* b, int d) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= d; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= d; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; i < d; ++i) s += a[i] * b[i];
  return s;
}

__attribute__((target("avx2,fma"))) float l2_avx2(const float* a, const float* b, int d) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= d; i += 16) {
    __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    __m256 t1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
    s0 = _mm256_fmadd_ps(t0, t0, s0);
    s1 = _mm256_fmadd_ps(t1, t1, s1);
  }
  for (; i + 8 <= d; i += 8) {
    __m256 t = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    s0 = _mm256_fmadd_ps(t, t, s0);
  }
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; i < d; ++i) {
    float t = a[i] - b[i];
    s += t * t;
  }
  return s;
}

__attribute__((target("avx512f"))) float dot_avx512(const float* a, const float* b, int d) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= d; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i + 16 <= d; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  if (i < d) {
    __mmask16 m = (__mmask16)((1u << (d - i)) - 1u);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

__attribute__((target("avx512f"))) float l2_avx512(const float* a, const float* b, int d) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= d; i += 32) {
    __m512 t0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    __m512 t1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
    s0 = _mm512_fmadd_ps(t0, t0, s0);
    s1 = _mm512_fmadd_ps(t1, t1, s1);
  }
  for (; i + 16 <= d; i += 16) {
    __m512 t = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    s0 = _mm512_fmadd_ps(t, t, s0);
  }
  if (i < d) {
    __mmask16 m = (__mmask16)((1u << (d - i)) - 1u);
    __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
    s1 = _mm512_fmadd_ps(t, t, s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
#endif

// 0: scalar, 1: AVX2+FMA, 2: AVX-512F; ASTRAI_RETRIEVAL_ISA caps it (Python passes the cap).
int g_isa_cap = 2;

int best_isa() {
#ifdef ASTRAI_X86
  __builtin_cpu_init();
  int isa = 0;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = 1;
  if (isa == 1 && __builtin_cpu_supports("avx512f")) isa = 2;
  return std::min(isa, g_isa_cap);
#else
  return 0;
#endif
}

struct Kernels {
  Dist dot, l2;
};

Kernels kernels() {
  switch (best_isa()) {
#ifdef ASTRAI_X86
    case 2: return {dot_avx512, l2_avx512};
    case 1: return {dot_avx2, l2_avx2};
#endif
    default: return {dot_scalar, l2_scalar};
  }
}

using Pair = std::pair<float, int32_t>;  // (distance, slot): ordered lexicographically everywhere
using MaxHeap = std::priority_queue<Pair>;
using MinHeap = std::priority_queue<Pair, std::vector<Pair>, std::greater<Pair>>;

// Visited marks by epoch: no clearing between searches.
struct Visited {
  std::vector<uint32_t> tag;
  uint32_t epoch = 0;
  void reset(int32_t n) {
    if ((int32_t)tag.size() < n) tag.assign((size_t)n + (size_t)n / 2 + 64, 0);
    if (++epoch == 0) {
      std::fill(tag.begin(), tag.end(), 0);
      epoch = 1;
    }
  }
  bool test_and_set(int32_t s) {
    if (tag[s] == epoch) return true;
    tag[s] = epoch;
    return false;
  }
};

thread_local Visited tls_visited;  // reused by every call on this thread: no per-search allocation

struct Ctx {
  AstraiGraph* g;
  Dist dist_fn;
  bool l2;
  Visited& visited = tls_visited;

  explicit Ctx(AstraiGraph* graph) : g(graph) {
    Kernels k = kernels();
    l2 = graph->metric == 1;
    dist_fn = l2 ? k.l2 : k.dot;
  }
  const float* vec(int32_t s) const { return g->vectors + (size_t)s * g->dim; }
  float dist(const float* q, int32_t s) const {
    float v = dist_fn(q, vec(s), g->dim);
    return l2 ? v : 1.0f - v;
  }
  int32_t* links(int32_t s, int layer, int32_t** count) const {
    if (layer == 0) {
      *count = g->count0 + s;
      return g->links0 + (size_t)s * g->M0;
    }
    int32_t row = g->upper[s] + layer - 1;
    *count = g->count_up + row;
    return g->links_up + (size_t)row * g->M;
  }
  int max_links(int layer) const { return layer == 0 ? g->M0 : g->M; }

  // SEARCH-LAYER (graph.search_layer): results ascending in `out`.
  void search_layer(const float* q, const std::vector<Pair>& entry, int ef, int layer, bool filtered,
                    const uint8_t* allowed, std::vector<Pair>& out) {
    visited.reset(g->n);
    MinHeap candidates;
    MaxHeap results;
    auto eligible = [&](int32_t s) {
      return !filtered || (!g->deleted[s] && (allowed == nullptr || allowed[s]));
    };
    for (const Pair& p : entry) visited.test_and_set(p.second);
    for (const Pair& p : entry) candidates.push(p);
    for (const Pair& p : entry) {
      if (eligible(p.second)) {
        results.push(p);
        if ((int)results.size() > ef) results.pop();
      }
    }
    float bound = results.empty() ? std::numeric_limits<float>::infinity() : results.top().first;
    while (!candidates.empty()) {
      Pair c = candidates.top();
      if (c.first > bound && ((int)results.size() >= ef || !filtered)) break;
      candidates.pop();
      int32_t* count;
      const int32_t* nb = links(c.second, layer, &count);
      int32_t cnt = *count;
#ifdef ASTRAI_X86
      for (int32_t i = 0; i < cnt; ++i) _mm_prefetch((const char*)vec(nb[i]), _MM_HINT_T0);
#endif
      for (int32_t i = 0; i < cnt; ++i) {
        int32_t e = nb[i];
        if (visited.test_and_set(e)) continue;
        float de = dist(q, e);
        if ((int)results.size() < ef || de < bound) {
          candidates.push({de, e});
          if (eligible(e)) {
            results.push({de, e});
            if ((int)results.size() > ef) results.pop();
          }
          if (!results.empty()) bound = results.top().first;
        }
      }
    }
    out.resize(results.size());
    for (size_t i = results.size(); i-- > 0;) {
      out[i] = results.top();
      results.pop();
    }
  }

  // Algorithm 4 (graph.select_neighbours); `cands` ascending.
  void select(const std::vector<Pair>& cands, int m, bool keep_pruned, std::vector<int32_t>& chosen) {
    chosen.clear();
    if ((int)cands.size() <= m) {
      for (const Pair& p : cands) chosen.push_back(p.second);
      return;
    }
    std::vector<int32_t> pruned;
    for (const Pair& p : cands) {
      if ((int)chosen.size() >= m) break;
      bool good = true;
      const float* v = vec(p.second);
      for (int32_t r : chosen) {
        if (dist(v, r) < p.first) {
          good = false;
          break;
        }
      }
      if (good) chosen.push_back(p.second);
      else pruned.push_back(p.second);
    }
    if (keep_pruned) {
      for (size_t i = 0; i < pruned.size() && (int)chosen.size() < m; ++i) chosen.push_back(pruned[i]);
    }
  }

  void set_links(int32_t s, int layer, const std::vector<int32_t>& nb) {
    int32_t* count;
    int32_t* dst = links(s, layer, &count);
    std::copy(nb.begin(), nb.end(), dst);
    *count = (int32_t)nb.size();
  }

  void connect(int32_t e, int32_t fresh, int layer, bool keep_pruned) {
    int32_t* count;
    int32_t* nb = links(e, layer, &count);
    int cap = max_links(layer);
    if (*count < cap) {
      nb[(*count)++] = fresh;
      return;
    }
    std::vector<Pair> cands;
    cands.reserve(cap + 1);
    const float* v = vec(e);
    for (int32_t i = 0; i < *count; ++i) cands.push_back({dist(v, nb[i]), nb[i]});
    cands.push_back({dist(v, fresh), fresh});
    std::sort(cands.begin(), cands.end());
    std::vector<int32_t> chosen;
    select(cands, cap, keep_pruned, chosen);
    set_links(e, layer, chosen);
  }

  void descend(const float* q, int down_to, std::vector<Pair>& entry) {
    entry.assign(1, {dist(q, g->entry), g->entry});
    std::vector<Pair> found;
    for (int layer = g->max_level; layer > down_to; --layer) {
      search_layer(q, entry, 1, layer, false, nullptr, found);
      entry.assign(found.begin(), found.begin() + std::min<size_t>(1, found.size()));
    }
  }

  void insert(int32_t s, int ef_construction, bool keep_pruned) {
    int level = g->levels[s];
    if (g->entry < 0) {
      g->entry = s;
      g->max_level = level;
      return;
    }
    const float* q = vec(s);
    std::vector<Pair> entry, found;
    descend(q, level, entry);
    bool filtered = g->num_deleted > 0;
    std::vector<int32_t> chosen;
    for (int layer = std::min(level, g->max_level); layer >= 0; --layer) {
      search_layer(q, entry, ef_construction, layer, filtered, nullptr, found);
      select(found, g->M, keep_pruned, chosen);
      set_links(s, layer, chosen);
      for (int32_t e : chosen) connect(e, s, layer, keep_pruned);
      if (!found.empty()) entry = found;
    }
    if (level > g->max_level) {
      g->entry = s;
      g->max_level = level;
    }
  }
};

}  // namespace

extern "C" {

ASTRAI_API int astrai_hnsw_isa(int cap) {
  g_isa_cap = cap;
  return best_isa();
}

ASTRAI_API void astrai_hnsw_insert(AstraiGraph* g, int32_t first, int32_t count, int32_t ef_construction, int32_t keep_pruned) {
  Ctx ctx(g);
  for (int32_t s = first; s < first + count; ++s) ctx.insert(s, ef_construction, keep_pruned != 0);
}

// Up to k results per query (ascending distance), padded with slot -1 / distance +inf.
ASTRAI_API void astrai_hnsw_search(AstraiGraph* g, const float* queries, int32_t nq, int32_t k, int32_t ef,
                        const uint8_t* allowed, int32_t* out_slots, float* out_dists) {
  Ctx ctx(g);
  std::vector<Pair> entry, found;
  bool filtered = g->num_deleted > 0 || allowed != nullptr;
  for (int32_t qi = 0; qi < nq; ++qi) {
    const float* q = queries + (size_t)qi * g->dim;
    int32_t* slots = out_slots + (size_t)qi * k;
    float* dists = out_dists + (size_t)qi * k;
    std::fill(slots, slots + k, -1);
    std::fill(dists, dists + k, std::numeric_limits<float>::infinity());
    if (g->entry < 0) continue;
    ctx.descend(q, 0, entry);
    ctx.search_layer(q, entry, std::max(ef, k), 0, filtered, allowed, found);
    for (int32_t i = 0; i < k && i < (int32_t)found.size(); ++i) {
      slots[i] = found[i].second;
      dists[i] = found[i].first;
    }
  }
}

// graph.repair: re-select the lists of live nodes that link to deleted ones.
ASTRAI_API void astrai_hnsw_repair(AstraiGraph* g, int32_t keep_pruned) {
  Ctx ctx(g);
  std::vector<int32_t> pool, chosen;
  std::vector<Pair> cands;
  for (int32_t u = 0; u < g->n; ++u) {
    if (g->deleted[u]) continue;
    for (int layer = 0; layer <= g->levels[u]; ++layer) {
      int32_t* count;
      int32_t* nb = ctx.links(u, layer, &count);
      bool any_dead = false;
      for (int32_t i = 0; i < *count; ++i) any_dead |= g->deleted[nb[i]] != 0;
      if (!any_dead) continue;
      pool.clear();
      for (int32_t i = 0; i < *count; ++i) {
        int32_t x = nb[i];
        if (!g->deleted[x]) {
          pool.push_back(x);
          continue;
        }
        int32_t* xcount;
        const int32_t* xnb = ctx.links(x, layer, &xcount);
        for (int32_t j = 0; j < *xcount; ++j) {
          int32_t y = xnb[j];
          if (!g->deleted[y] && y != u) pool.push_back(y);
        }
      }
      std::sort(pool.begin(), pool.end());
      pool.erase(std::unique(pool.begin(), pool.end()), pool.end());
      cands.clear();
      const float* v = ctx.vec(u);
      for (int32_t y : pool) cands.push_back({ctx.dist(v, y), y});
      std::sort(cands.begin(), cands.end());
      ctx.select(cands, ctx.max_links(layer), keep_pruned != 0, chosen);
      ctx.set_links(u, layer, chosen);
    }
  }
}

}  // extern "C"

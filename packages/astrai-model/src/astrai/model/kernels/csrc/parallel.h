// AstrAI's own worker team for the native kernels, in place of at::parallel_for.
//
// A decode step runs a few hundred short parallel regions from the engine's thread; the team's
// workers spin (with pause) for a bounded time after each job before they sleep, so the regions
// of one step find them awake whichever thread submits, and an idle engine costs no CPU. (Why not
// torch's OpenMP pool: docs/kernels.md.)
//
// Work splitting: at most num_threads() contiguous chunks of at least `grain`, chunk i =
// [begin + i*c, begin + (i+1)*c) with c = ceil(n / chunks). No kernel's result depends on how
// its work is split (batch invariance: every row's reductions run on one thread in one order).
#pragma once

#include <cstdint>
#include <functional>

namespace astrai {

// Threads a parallel_for splits over: torch's intra-op setting (torch.set_num_threads).
int num_threads();

// f(chunk_begin, chunk_end) over [begin, end). Runs inline when one chunk suffices, inside
// another parallel_for, or while another thread holds the team. Rethrows a chunk's exception.
void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

}  // namespace astrai

// AstrAI's own worker team for the native kernels, in place of at::parallel_for.
//
// A decode step runs a few hundred short parallel regions from the engine's thread; the team's
// workers spin (with pause) for a bounded time after each job before they sleep, so the regions
// of one step find them awake whichever thread submits, and an idle engine costs no CPU. (Why not
// torch's OpenMP pool: docs/kernels.md.)
//
// Work splitting: parallel_for makes at most num_threads() contiguous chunks of at least `grain`,
// chunk i = [begin + i*c, begin + (i+1)*c) with c = ceil(n / chunks). parallel_for_stealing cuts
// the range into pieces, each thread owning a contiguous run of them, and a thread that has run
// out takes pieces from the far end of another's run. No kernel's result depends on how its work
// is split (batch invariance: every row's reductions run on one thread in one order).
#pragma once

#include <cstdint>
#include <functional>

namespace astrai {

// Threads a parallel_for splits over: torch's intra-op setting (torch.set_num_threads).
int num_threads();

// f(chunk_begin, chunk_end) over [begin, end). Runs inline when one chunk suffices, inside
// another parallel_for, or while another thread holds the team. Rethrows a chunk's exception.
void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

// f(piece_begin, piece_end) over [begin, end) in pieces of `piece` items. Each thread runs its
// own pieces in order, then takes the remaining ones of others from the far end, so a thread the
// OS preempts (a client or an event loop sharing the cores) holds the job up by at most the
// piece it is in, not by the rest of its share. With one thread (or one piece) f runs once over
// [begin, end); inline where parallel_for would run inline.
void parallel_for_stealing(int64_t begin, int64_t end, int64_t piece, const std::function<void(int64_t, int64_t)>& f);

}  // namespace astrai

// AstrAI's own worker team for the native kernels, in place of at::parallel_for.
//
// Why not torch's OpenMP pool: a decode step runs ~250 short parallel regions, and the engine
// calls them from its own thread while the caller's thread has an OpenMP pool of its own. libgomp
// then counts more managed threads than cores and throttles its spin-wait to ~1000 iterations,
// so the workers fall asleep between regions and every region pays a futex wake-up: measured on
// the 2-core dev VM, the same batch-1 forward took 8.9 ms on the main thread and 11.5 ms from a
// second thread. This team's workers spin (pause, then yield) for a bounded time after each job
// before they sleep, whichever thread submits, so the regions of one step stay warm and an idle
// engine costs no CPU.
//
// Work splitting is at::parallel_for's (OpenMP backend): at most num_threads() contiguous chunks
// of at least `grain`, chunk i = [begin + i*c, begin + (i+1)*c) with c = ceil(n / chunks); so a
// kernel's results do not change with the switch.
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

#ifndef DSEEK_THREADPOOL_H
#define DSEEK_THREADPOOL_H
#include <stddef.h>
#include <stdint.h>

/* Processes indices [start, end) of a job. */
typedef void (*pool_task_fn)(void *ctx, int64_t start, int64_t end);

/* Runs fn over [0, n) in chunks of `grain` indices on all pool threads; returns when done. */
void pool_run(pool_task_fn fn, void *ctx, int64_t n, int64_t grain);
/* Sets the total thread count (the caller included). Returns 0 on success. */
int pool_set_threads(int threads);
int pool_threads(void);
/* Stops and joins the workers and frees the calling thread's scratch: before the addon's code is
   unmapped (its last Node environment exits), no pool thread may still run it. */
void pool_shutdown(void);
/* Jobs handed to the workers since start (jobs small enough for the caller alone are not counted). */
int64_t pool_jobs(void);
/*
 * Per-thread scratch that outlives a job: slot `slot` (0 … POOL_SCRATCH_SLOTS−1) of the calling
 * thread, grown to at least `bytes`, 64-byte aligned, valid until this thread asks for the same
 * slot again; NULL when out of memory. Kernels that need hundreds of KB per work item would
 * otherwise get fresh zeroed pages on every call (glibc serves blocks above 128 KB with mmap):
 * a page fault per 4 KB, measured as 30 % of a long-context attention call.
 */
#define POOL_SCRATCH_SLOTS 16
void *pool_scratch(int slot, size_t bytes);
/* Slots 0 … 9 are kernels.c's; from POOL_SCRATCH_LEVEL on, an instruction level's own kernels
   (arch/), which kernels.c calls from inside its work items, so they never share a slot with it. */
#define POOL_SCRATCH_LEVEL 10

/* Mean µs of a job with no work on all threads: the wake-up and barrier a job costs. */
double pool_overhead_us(int iterations);

#endif

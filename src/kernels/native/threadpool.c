/*
 * A persistent thread pool: workers sleep on a condition variable between jobs and take chunks
 * of a job's index range from an atomic counter; the calling thread works too. Each output
 * element is computed by exactly one thread in a fixed order, so results do not depend on the
 * thread count (deterministic reductions).
 */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct {
  pool_task_fn fn;
  void *ctx;
  int64_t n;
  int64_t grain;
  atomic_llong next;
  atomic_int active; /* workers still inside this job */
} job_t;

static pthread_t *workers = NULL;
static int worker_count = 0; /* threads besides the caller */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
static job_t current;
static long generation = 0;
static int shutting_down = 0;

static void run_chunks(job_t *job) {
  for (;;) {
    int64_t start = atomic_fetch_add(&job->next, job->grain);
    if (start >= job->n) break;
    int64_t end = start + job->grain;
    if (end > job->n) end = job->n;
    job->fn(job->ctx, start, end);
  }
}

static void *worker_main(void *arg) {
  (void)arg;
  long seen = 0;
  pthread_mutex_lock(&lock);
  for (;;) {
    while (generation == seen && !shutting_down) pthread_cond_wait(&wake, &lock);
    if (shutting_down) break;
    seen = generation;
    pthread_mutex_unlock(&lock);
    run_chunks(&current);
    pthread_mutex_lock(&lock);
    if (atomic_fetch_sub(&current.active, 1) == 1) pthread_cond_signal(&done);
  }
  pthread_mutex_unlock(&lock);
  return NULL;
}

int pool_threads(void) { return worker_count + 1; }

int pool_set_threads(int threads) {
  if (threads < 1) threads = 1;
  if (threads - 1 == worker_count) return 0;
  /* Stop the old workers, then start the new number. */
  pthread_mutex_lock(&lock);
  shutting_down = 1;
  pthread_cond_broadcast(&wake);
  pthread_mutex_unlock(&lock);
  for (int i = 0; i < worker_count; i++) pthread_join(workers[i], NULL);
  free(workers);
  workers = NULL;
  worker_count = 0;
  shutting_down = 0;
  if (threads == 1) return 0;
  workers = calloc((size_t)(threads - 1), sizeof(pthread_t));
  if (!workers) return -1;
  for (int i = 0; i < threads - 1; i++) {
    if (pthread_create(&workers[i], NULL, worker_main, NULL) != 0) return -1;
    worker_count++;
  }
  return 0;
}

void pool_run(pool_task_fn fn, void *ctx, int64_t n, int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (worker_count == 0 || n <= grain) {
    fn(ctx, 0, n);
    return;
  }
  pthread_mutex_lock(&lock);
  current.fn = fn;
  current.ctx = ctx;
  current.n = n;
  current.grain = grain;
  atomic_store(&current.next, 0);
  atomic_store(&current.active, worker_count);
  generation++;
  pthread_cond_broadcast(&wake);
  pthread_mutex_unlock(&lock);

  run_chunks(&current);

  pthread_mutex_lock(&lock);
  while (atomic_load(&current.active) > 0) pthread_cond_wait(&done, &lock);
  pthread_mutex_unlock(&lock);
}

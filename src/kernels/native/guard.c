/* See guard.h. Everything the handler touches is lock-free and async-signal-safe (mmap is a plain
   system call on the platforms dseek builds on). */
#define _GNU_SOURCE
#include "guard.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif

/* One slot per live mapping (one per weight file); a model has a handful, tests a few hundred. */
#define MAX_WATCHED 1024

typedef struct {
  _Atomic uintptr_t start;
  _Atomic uintptr_t end; /* rounded up to a page */
} span_t;

static span_t spans[MAX_WATCHED];
static atomic_long faults;
static struct sigaction previous;
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static int installed = 0;
static uintptr_t page_size;

static void on_sigbus(int sig, siginfo_t *si, void *context) {
  uintptr_t at = (uintptr_t)si->si_addr;
  for (int i = 0; i < MAX_WATCHED; i++) {
    uintptr_t start = atomic_load(&spans[i].start), end = atomic_load(&spans[i].end);
    if (start == 0 || at < start || at >= end) continue;
    /* Past the file's new end every page would fault: replace them all at once with zeros, and
       the faulting load, retried on return, reads 0. */
    uintptr_t from = at & ~(page_size - 1);
    if (mmap((void *)from, end - from, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
      atomic_fetch_add(&faults, 1);
      return;
    }
    break;
  }
  /* Not a watched mapping: behave as without the guard. */
  if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction) {
    previous.sa_sigaction(sig, si, context);
    return;
  }
  if (!(previous.sa_flags & SA_SIGINFO) && previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(sig);
    return;
  }
  /* Default action: restore it; the faulting instruction runs again and the process dies of SIGBUS as before. */
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(sig, &dfl, NULL);
}

static void install(void) {
  page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &previous);
}

void guard_uninstall(void) {
  pthread_mutex_lock(&install_lock);
  if (installed) sigaction(SIGBUS, &previous, NULL);
  installed = 0;
  pthread_mutex_unlock(&install_lock);
}

void guard_watch(void *base, size_t length) {
  pthread_mutex_lock(&install_lock);
  if (!installed) install();
  installed = 1;
  pthread_mutex_unlock(&install_lock);
  uintptr_t start = (uintptr_t)base;
  uintptr_t end = (start + length + page_size - 1) & ~(page_size - 1);
  for (int i = 0; i < MAX_WATCHED; i++) {
    uintptr_t expected = 0;
    if (atomic_compare_exchange_strong(&spans[i].start, &expected, start)) {
      atomic_store(&spans[i].end, end);
      return;
    }
  }
  /* All slots taken: this mapping is unguarded (the per-step file checks still apply). */
}

void guard_forget(void *base) {
  uintptr_t start = (uintptr_t)base;
  for (int i = 0; i < MAX_WATCHED; i++) {
    if (atomic_load(&spans[i].start) == start) {
      atomic_store(&spans[i].end, 0);
      atomic_store(&spans[i].start, 0);
      return;
    }
  }
}

long guard_faults(void) { return atomic_load(&faults); }

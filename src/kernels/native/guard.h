/*
 * Mapped weight files that shrink underneath the process. Reading a page of a file mapping that
 * lies past the file's end raises SIGBUS, which would kill the server with no reply and no log
 * line. The guard turns such a fault into zeros (the rest of the mapping is replaced by anonymous
 * zero pages) and counts it; the engine checks the count and the files after every step and
 * fails the requests rather than serve what it computed (model/fileGuard.ts).
 */
#ifndef DSEEK_GUARD_H
#define DSEEK_GUARD_H

#include <stddef.h>

/* Watch a read-only mapping of `length` bytes at `base` (installs the SIGBUS handler once). */
void guard_watch(void *base, size_t length);
/* Stop watching the mapping at `base` (before it is unmapped). */
void guard_forget(void *base);
/* Faults repaired since the process started. */
long guard_faults(void);
/* Puts back the SIGBUS handler found at install: the handler is this addon's code, which is
   unmapped when its last Node environment exits. */
void guard_uninstall(void);

#endif

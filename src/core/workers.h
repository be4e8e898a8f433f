/*
 * workers.h: the one pool of worker threads of an engine ("workers", so
 * that "pool" only ever means a pooling layer of a network).
 *
 * fvi_workers_run splits the index range [0, n) into contiguous chunks and runs
 * fn(ctx, begin, end, worker) on the workers and the calling thread, then
 * waits for all of them.  Chunk boundaries depend only on n, grain and the
 * pool size, so work split by rows gives the same results run after run.
 * Calls from several threads are serialised on the pool (one job at a
 * time); a job never runs nested inside another (a nested call runs inline).
 */
#ifndef FVI_WORKERS_H
#define FVI_WORKERS_H

typedef struct fvi_workers fvi_workers;

typedef void (*fvi_task_fn)(void *ctx, int begin, int end, int worker);

/* threads >= 1 (the caller counts as one).  NULL on failure. */
fvi_workers *fvi_workers_create(int threads);
void fvi_workers_destroy(fvi_workers *pool);
/* Number of threads including the caller; 1 for a NULL pool. */
int fvi_workers_size(const fvi_workers *pool);
/* Runs fn over [0, n) in chunks of at least grain indices.  pool may be
 * NULL (runs inline as worker 0). */
void fvi_workers_run(fvi_workers *pool, int n, int grain, fvi_task_fn fn, void *ctx);

#endif

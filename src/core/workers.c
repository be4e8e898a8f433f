/*
 * workers.c: a fixed set of worker threads (see workers.h).
 *
 * Workers sleep on a condition variable; a job is published under the
 * mutex with a generation counter, every worker takes its one chunk index
 * (worker i runs chunk i), and the caller runs chunk 0 then waits until all
 * have finished.  A job lock serialises concurrent callers; a thread-local
 * flag makes nested calls from inside a job run inline instead of
 * deadlocking.
 */
#include "core/workers.h"

#include <pthread.h>

#include "core/fvi.h"

struct fvi_workers {
    int nthreads; /* including the caller */
    pthread_t *threads;
    pthread_mutex_t job_lock; /* one job at a time */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t done;
    unsigned long generation;
    int pending; /* workers still running the current job */
    int stop;
    /* current job */
    fvi_task_fn fn;
    void *ctx;
    int n, chunk;
};

static _Thread_local int in_job;

typedef struct {
    fvi_workers *pool;
    int index;
} worker_arg;

/* Runs this worker's chunk of the current job. */
static void run_chunk(fvi_workers *p, int index) {
    int begin = index * p->chunk;
    int end = begin + p->chunk;
    if (end > p->n) end = p->n;
    if (begin < end) p->fn(p->ctx, begin, end, index);
}

static void *worker_main(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    fvi_free(arg);
    fvi_workers *p = wa.pool;
    unsigned long seen = 0;
    in_job = 1;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunk(p, wa.index);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

fvi_workers *fvi_workers_create(int threads) {
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    fvi_workers *p = fvi_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->nthreads = 1;
    pthread_mutex_init(&p->job_lock, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (threads > 1) {
        p->threads = fvi_calloc((size_t)threads - 1, sizeof *p->threads);
        if (!p->threads) {
            fvi_workers_destroy(p);
            return NULL;
        }
        for (int i = 1; i < threads; i++) {
            worker_arg *wa = fvi_malloc(sizeof *wa);
            if (!wa) break;
            wa->pool = p;
            wa->index = i;
            if (pthread_create(&p->threads[i - 1], NULL, worker_main, wa) != 0) {
                fvi_free(wa);
                break;
            }
            p->nthreads++;
        }
        if (p->nthreads != threads) {
            fvi_workers_destroy(p);
            return NULL;
        }
    }
    return p;
}

void fvi_workers_destroy(fvi_workers *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads - 1; i++) pthread_join(p->threads[i], NULL);
    fvi_free(p->threads);
    pthread_mutex_destroy(&p->job_lock);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    fvi_free(p);
}

int fvi_workers_size(const fvi_workers *p) {
    return p ? p->nthreads : 1;
}

void fvi_workers_run(fvi_workers *p, int n, int grain, fvi_task_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int workers = p ? p->nthreads : 1;
    int max_chunks = (n + grain - 1) / grain;
    if (!p || workers == 1 || max_chunks == 1 || in_job) {
        fn(ctx, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->job_lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = (n + workers - 1) / workers;
    if (p->chunk < grain) p->chunk = grain;
    pthread_mutex_lock(&p->mu);
    p->pending = workers - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    in_job = 1;
    run_chunk(p, 0);
    in_job = 0;
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->job_lock);
}

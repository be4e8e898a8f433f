/*
 * fvi.h: internal helpers shared by every module of libfaceverify.
 *
 * All heap memory goes through fvi_malloc/fvi_calloc/fvi_realloc/fvi_free so
 * that tests can make the Nth allocation fail (fvi_alloc_fail_after) and
 * check that every path returns FV_E_NO_MEMORY cleanly.  Size arithmetic
 * uses the overflow-checked fvi_size_mul/fvi_size_add.  fvi_seterr writes a
 * formatted message into a caller-supplied error buffer.
 */
#ifndef FVI_H
#define FVI_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "faceverify.h"

#define FVI_UNUSED(x) ((void)(x))

/* Programmer invariants only; never for input validation. */
#ifdef NDEBUG
#define FVI_ASSERT(c) ((void)0)
#else
#include <assert.h>
#define FVI_ASSERT(c) assert(c)
#endif

/* Allocation wrapper.  Returns NULL on failure (or injected failure). */
void *fvi_malloc(size_t n);
void *fvi_calloc(size_t count, size_t size);
void *fvi_realloc(void *p, size_t n);
void fvi_free(void *p);
/* 64-byte aligned memory for tensors (SIMD and BLAS friendly); free with
 * fvi_free_aligned. */
void *fvi_malloc_aligned(size_t n);
void fvi_free_aligned(void *p);
char *fvi_strdup(const char *s);

/* Test hook: after n more successful allocations, every allocation fails
 * (n < 0 disables).  Process-global, for single-threaded tests only. */
void fvi_alloc_fail_after(long n);

/* Overflow-checked size arithmetic: return 0 on success, -1 on overflow. */
static inline int fvi_size_mul(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}
static inline int fvi_size_add(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

/* Writes a printf-style message into err (if err && errlen) and returns st,
 * so callers can write `return fvi_seterr(err, errlen, FV_E_X, "...")`. */
fv_status fvi_seterr(char *err, size_t errlen, fv_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Reads the whole regular file at path, refusing it before reading when
 * it holds more than max_bytes.  On FV_OK *data (fvi_malloc'ed, the
 * caller's to fvi_free) holds the *len bytes plus a NUL after them.  One
 * mapping of failures, whatever the file:
 *  - absent (ENOENT, ENOTDIR): `absent` (FV_E_MODEL_MISSING for models);
 *  - present but unreadable (EACCES, a directory or other non-regular
 *    file, a read error, a file that shrinks while read): FV_E_IO;
 *  - larger than max_bytes: `too_large` (FV_E_MODEL_CORRUPT for models);
 *  - no memory: FV_E_NO_MEMORY.
 * The message names `what` and path ("cannot open MMOD detector /x: No
 * such file or directory").  What the bytes mean is the caller's to check.
 * Thread-safe. */
fv_status fvi_read_file(const char *path, size_t max_bytes, const char *what, fv_status absent,
                        fv_status too_large, unsigned char **data, size_t *len, char *err,
                        size_t errlen);

/* fvi_read_file for model files (dlib models, Haar cascades, trained
 * models): absent FV_E_MODEL_MISSING, unreadable FV_E_IO, too large
 * FV_E_MODEL_CORRUPT (no valid model is that large). */
fv_status fvi_read_model_file(const char *path, size_t max_bytes, const char *what,
                              unsigned char **data, size_t *len, char *err, size_t errlen);

/* Parses len bytes of a model file into *out (out is the loader's
 * `T **`); a message without the path goes into err. */
typedef fv_status (*fvi_parse_fn)(const void *data, size_t len, void *out, char *err,
                                  size_t errlen);

/* The whole load of a model file: fvi_read_model_file, then parse on the
 * bytes, a parse failure reported as "<what> <path>: <parser's message>"
 * with the parser's status.  The bytes are freed before returning. */
fv_status fvi_load_model_file(const char *path, size_t max_bytes, const char *what,
                              fvi_parse_fn parse, void *out, char *err, size_t errlen);

/* Monotonic clock in milliseconds. */
double fvi_now_ms(void);

#endif

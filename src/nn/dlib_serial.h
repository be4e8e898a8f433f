/*
 * dlib_serial.h: a bounds-checked reader for dlib's binary serialization
 * format, the container of the three .dat model files we load.
 *
 * The format (from dlib/serialize.h, dlib/float_details.h):
 *  - integers: one control byte (low 4 bits: count of following bytes,
 *    0x80: negative), then that many little-endian magnitude bytes;
 *  - float/double: an int64 mantissa then an int16 exponent, both as
 *    integers above; value = mantissa * 2^exponent; exponents 32000,
 *    32001, 32002 mean +inf, -inf, NaN;
 *  - std::string: an integer length then raw bytes;
 *  - bool: the ASCII character '0' or '1';
 *  - matrix: rows, cols (negated in the newer format), then elements;
 *  - std::vector: an integer size then the elements;
 *  - dnn tensors: version 2, num_samples, k, nr, nc, then raw
 *    little-endian IEEE-754 float32 values.
 *
 * Every read checks the remaining length; the reader becomes sticky-failed
 * on the first error so callers may check once at the end.  Nothing here
 * trusts a size from the file: counts are compared with the bytes left and
 * with caller-supplied maxima before anything is allocated.
 */
#ifndef FVI_DLIB_SERIAL_H
#define FVI_DLIB_SERIAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct fvi_dser {
    const uint8_t *p;
    size_t len;
    size_t off;
    int failed;     /* sticky: 1 after the first error */
    char what[128]; /* first error, for messages */
} fvi_dser;

void fvi_dser_init(fvi_dser *d, const void *data, size_t len);
/* Marks the reader failed with a message (first failure wins); returns -1. */
int fvi_dser_fail(fvi_dser *d, const char *what);

/* Each returns 0 on success, -1 on failure (reader then failed). */
int fvi_dser_int(fvi_dser *d, int64_t *v);
/* An integer that must lie in [lo, hi]. */
int fvi_dser_int_range(fvi_dser *d, int64_t lo, int64_t hi, int64_t *v);
int fvi_dser_float(fvi_dser *d, float *v);
int fvi_dser_double(fvi_dser *d, double *v);
int fvi_dser_bool(fvi_dser *d, int *v);
/* Reads a string into buf (NUL-terminated); fails if longer than cap-1. */
int fvi_dser_string(fvi_dser *d, char *buf, size_t cap);
/* Reads a string and fails unless it equals expect. */
int fvi_dser_expect_string(fvi_dser *d, const char *expect);
/* Reads n raw little-endian float32 values. */
int fvi_dser_raw_floats(fvi_dser *d, float *out, size_t n);

/* A dnn tensor header: reads version (must be 2) and the 4 dims; fails if
 * the element count exceeds max_elems or the bytes left. */
int fvi_dser_tensor_header(fvi_dser *d, int64_t dims[4], size_t max_elems, size_t *count);

/* A dlib matrix<float> header: rows, cols (either sign convention); fails if
 * rows*cols exceeds max_elems. */
int fvi_dser_matrix_header(fvi_dser *d, int64_t *rows, int64_t *cols, size_t max_elems);

/* ---- pieces of dlib's dnn serialization that every network shares, so
 * the MMOD and ResNet loaders parse them in one place ---- */

/* Largest tensor fvi_dser_skip_tensor skips (floats; training tensors such
 * as cached outputs may be large, and the bytes must still be there). */
#define FVI_DSER_MAX_SKIP ((size_t)1 << 30)

/* An integer that must equal want; fails with `what` otherwise. */
int fvi_dser_expect_int(fvi_dser *d, int64_t want, const char *what);
/* Skips a resizable_tensor (header and data) whose values we ignore. */
int fvi_dser_skip_tensor(fvi_dser *d);
/* Skips n serialized doubles (e.g. a layer's learning-rate multipliers). */
int fvi_dser_skip_doubles(fvi_dser *d, int n);
/* An alias_tensor: version 1, then four dims that must equal n, k, r, c. */
int fvi_dser_expect_alias(fvi_dser *d, int64_t n, int64_t k, int64_t r, int64_t c);
/* The bookkeeping dlib's add_layer writes after a layer's details (its
 * version read earlier, outermost layer first): three flags, x_grad and
 * cached_output, then for the layer over the input grad_final and (version
 * >= 3) sample_expansion_factor == 1, otherwise (version >= 2)
 * params_grad.  All tensors are skipped. */
int fvi_dser_add_layer_trailer(fvi_dser *d, int64_t version, int over_input);

/* Bytes left to read. */
static inline size_t fvi_dser_left(const fvi_dser *d) {
    return d->len - d->off;
}

#endif

/*
 * dlib_serial.c: implementation of the dlib serialization reader (see
 * dlib_serial.h for the format).  Pure parsing over a byte buffer: no
 * allocation, no I/O.
 */
#include "nn/dlib_serial.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void fvi_dser_init(fvi_dser *d, const void *data, size_t len) {
    d->p = data;
    d->len = len;
    d->off = 0;
    d->failed = 0;
    d->what[0] = 0;
}

int fvi_dser_fail(fvi_dser *d, const char *what) {
    if (!d->failed) {
        d->failed = 1;
        snprintf(d->what, sizeof d->what, "%.80s at byte %zu", what, d->off);
    }
    return -1;
}

int fvi_dser_int(fvi_dser *d, int64_t *v) {
    if (d->failed) return -1;
    if (d->off >= d->len) return fvi_dser_fail(d, "truncated integer");
    uint8_t ctl = d->p[d->off];
    unsigned size = ctl & 0x0F;
    int neg = (ctl & 0x80) != 0;
    if ((ctl & 0x70) != 0 || size > 8) return fvi_dser_fail(d, "bad integer control byte");
    if (d->len - d->off - 1 < size) return fvi_dser_fail(d, "truncated integer");
    uint64_t mag = 0;
    for (unsigned i = 0; i < size; i++) mag |= (uint64_t)d->p[d->off + 1 + i] << (8 * i);
    if (mag > (uint64_t)INT64_MAX) return fvi_dser_fail(d, "integer out of range");
    d->off += 1 + size;
    *v = neg ? -(int64_t)mag : (int64_t)mag;
    return 0;
}

int fvi_dser_int_range(fvi_dser *d, int64_t lo, int64_t hi, int64_t *v) {
    if (fvi_dser_int(d, v)) return -1;
    if (*v < lo || *v > hi) return fvi_dser_fail(d, "integer out of expected range");
    return 0;
}

int fvi_dser_double(fvi_dser *d, double *v) {
    int64_t mant, ex;
    if (d->failed) return -1;
    if (d->off < d->len && (d->p[d->off] & 0x70) != 0)
        return fvi_dser_fail(d, "old ASCII float format is not supported");
    if (fvi_dser_int(d, &mant) || fvi_dser_int_range(d, -32768, 32767, &ex)) return -1;
    if (ex == 32000)
        *v = INFINITY;
    else if (ex == 32001)
        *v = -INFINITY;
    else if (ex == 32002)
        *v = NAN;
    else
        *v = ldexp((double)mant, (int)ex);
    return 0;
}

int fvi_dser_float(fvi_dser *d, float *v) {
    double x;
    if (fvi_dser_double(d, &x)) return -1;
    *v = (float)x;
    return 0;
}

int fvi_dser_bool(fvi_dser *d, int *v) {
    if (d->failed) return -1;
    if (d->off >= d->len) return fvi_dser_fail(d, "truncated bool");
    uint8_t c = d->p[d->off];
    if (c != '0' && c != '1') return fvi_dser_fail(d, "bad bool");
    d->off++;
    *v = c == '1';
    return 0;
}

int fvi_dser_string(fvi_dser *d, char *buf, size_t cap) {
    int64_t n;
    if (cap == 0) return fvi_dser_fail(d, "no room for string");
    if (fvi_dser_int_range(d, 0, (int64_t)cap - 1, &n)) return -1;
    if (fvi_dser_left(d) < (size_t)n) return fvi_dser_fail(d, "truncated string");
    memcpy(buf, d->p + d->off, (size_t)n);
    buf[n] = 0;
    d->off += (size_t)n;
    return 0;
}

int fvi_dser_expect_string(fvi_dser *d, const char *expect) {
    char buf[64];
    if (fvi_dser_string(d, buf, sizeof buf)) return -1;
    if (strcmp(buf, expect) != 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "expected '%.20s', found '%.20s'", expect, buf);
        return fvi_dser_fail(d, msg);
    }
    return 0;
}

int fvi_dser_raw_floats(fvi_dser *d, float *out, size_t n) {
    if (d->failed) return -1;
    if (n > fvi_dser_left(d) / 4) return fvi_dser_fail(d, "truncated float data");
    for (size_t i = 0; i < n; i++) {
        const uint8_t *b = d->p + d->off + 4 * i;
        uint32_t u =
            (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        memcpy(&out[i], &u, 4);
    }
    d->off += 4 * n;
    return 0;
}

int fvi_dser_tensor_header(fvi_dser *d, int64_t dims[4], size_t max_elems, size_t *count) {
    int64_t version;
    if (fvi_dser_int(d, &version)) return -1;
    if (version != 2) return fvi_dser_fail(d, "unsupported tensor version");
    size_t total = 1;
    for (int i = 0; i < 4; i++) {
        if (fvi_dser_int_range(d, 0, INT32_MAX, &dims[i])) return -1;
        if (dims[i] != 0 && total > max_elems / (size_t)dims[i])
            return fvi_dser_fail(d, "tensor too large");
        total *= (size_t)dims[i];
    }
    if (total > max_elems) return fvi_dser_fail(d, "tensor too large");
    if (total > fvi_dser_left(d) / 4) return fvi_dser_fail(d, "truncated tensor");
    *count = total;
    return 0;
}

int fvi_dser_matrix_header(fvi_dser *d, int64_t *rows, int64_t *cols, size_t max_elems) {
    if (fvi_dser_int_range(d, -INT32_MAX, INT32_MAX, rows) ||
        fvi_dser_int_range(d, -INT32_MAX, INT32_MAX, cols))
        return -1;
    if (*rows < 0 || *cols < 0) {
        *rows = -*rows;
        *cols = -*cols;
    }
    if (*rows != 0 && (size_t)*cols > max_elems / (size_t)*rows)
        return fvi_dser_fail(d, "matrix too large");
    /* each serialized float takes at least 2 bytes */
    if ((size_t)(*rows * *cols) > fvi_dser_left(d) / 2) return fvi_dser_fail(d, "truncated matrix");
    return 0;
}

int fvi_dser_expect_int(fvi_dser *d, int64_t want, const char *what) {
    int64_t v;
    if (fvi_dser_int(d, &v)) return -1;
    if (v != want) return fvi_dser_fail(d, what);
    return 0;
}

int fvi_dser_skip_tensor(fvi_dser *d) {
    int64_t dims[4];
    size_t n;
    if (fvi_dser_tensor_header(d, dims, FVI_DSER_MAX_SKIP, &n)) return -1;
    d->off += 4 * n; /* the header checked n <= bytes left / 4 */
    return 0;
}

int fvi_dser_skip_doubles(fvi_dser *d, int n) {
    double x;
    for (int i = 0; i < n; i++)
        if (fvi_dser_double(d, &x)) return -1;
    return 0;
}

int fvi_dser_expect_alias(fvi_dser *d, int64_t n, int64_t k, int64_t r, int64_t c) {
    const int64_t want[4] = {n, k, r, c};
    if (fvi_dser_expect_int(d, 1, "unsupported alias_tensor version")) return -1;
    for (int i = 0; i < 4; i++)
        if (fvi_dser_expect_int(d, want[i], "unexpected parameter shape")) return -1;
    return 0;
}

int fvi_dser_add_layer_trailer(fvi_dser *d, int64_t version, int over_input) {
    int b;
    for (int i = 0; i < 3; i++)
        if (fvi_dser_bool(d, &b)) return -1;
    if (fvi_dser_skip_tensor(d) || fvi_dser_skip_tensor(d)) return -1; /* x_grad, cached_output */
    if (over_input) {
        if (fvi_dser_skip_tensor(d)) return -1; /* grad_final */
        if (version >= 3 && fvi_dser_expect_int(d, 1, "bad sample_expansion_factor")) return -1;
    } else if (version >= 2) {
        if (fvi_dser_skip_tensor(d)) return -1; /* params_grad */
    }
    return 0;
}

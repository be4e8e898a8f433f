/*
 * pnm.c: Netpbm PBM/PGM/PPM (P1..P6) -> RGB8, written here.
 *
 * The formats are a text header and a raster, a page of code, and Debian
 * has no small hardened library for them (libnetpbm exits on errors).
 * Supported: P1/P4 bitmaps (1 is black), P2/P5 grey and P3/P6 colour, with
 * any maxval 1..65535 (binary samples are 2 bytes, big-endian, above 255),
 * each sample scaled to 0..255 as round(v * 255 / maxval).  PAM (P7) is
 * not supported.
 *
 * Every field is hostile: header numbers are parsed with overflow checks,
 * '#' comments are skipped between header tokens, and the header ends with
 * exactly one whitespace byte before a binary raster.  The pixel limit is
 * checked on the header, and then the bytes left must be able to hold the
 * raster (exactly for binary, at least one byte per sample for text)
 * before the output is allocated, so a lying header costs nothing.  A
 * sample above maxval, a short raster or a non-digit in a text raster is
 * FV_E_IMAGE_CORRUPT.  Bytes after the raster are ignored (a file may hold
 * several images; the first is used).
 */
#include <string.h>

#include "core/fvi.h"
#include "image/image.h"

typedef struct pnm_rd {
    const unsigned char *d;
    size_t n, pos;
} pnm_rd;

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Skips whitespace, and '#' comments to the end of the line when
 * comments is set. */
static void skip_space(pnm_rd *r, int comments) {
    while (r->pos < r->n) {
        unsigned char c = r->d[r->pos];
        if (comments && c == '#') {
            while (r->pos < r->n && r->d[r->pos] != '\n' && r->d[r->pos] != '\r') r->pos++;
        } else if (is_space(c)) {
            r->pos++;
        } else {
            break;
        }
    }
}

/* A decimal number after optional whitespace (and comments): 0 on
 * success with *v <= max, -1 for no digit or a value above max. */
static int read_uint(pnm_rd *r, int comments, uint32_t max, uint32_t *v) {
    skip_space(r, comments);
    if (r->pos >= r->n || r->d[r->pos] < '0' || r->d[r->pos] > '9') return -1;
    uint32_t x = 0;
    while (r->pos < r->n && r->d[r->pos] >= '0' && r->d[r->pos] <= '9') {
        uint32_t dgt = (uint32_t)(r->d[r->pos] - '0');
        if (x > (max - dgt) / 10) return -1; /* x * 10 + dgt > max */
        x = x * 10 + dgt;
        r->pos++;
    }
    *v = x;
    return 0;
}

typedef struct pnm_hdr {
    int kind; /* 1..6 */
    uint32_t w, h, maxval;
} pnm_hdr;

/* Parses the header up to the raster (r->pos at its first byte). */
static fv_status pnm_header(pnm_rd *r, pnm_hdr *p, char *err, size_t errlen) {
    /* sniffed: "P1".."P6" */
    p->kind = r->d[1] - '0';
    r->pos = 2;
    if (read_uint(r, 1, INT32_MAX, &p->w) || read_uint(r, 1, INT32_MAX, &p->h))
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "pnm: bad width or height");
    p->maxval = 1;
    if (p->kind != 1 && p->kind != 4 && (read_uint(r, 1, 65535, &p->maxval) || p->maxval == 0))
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "pnm: bad maxval (1..65535)");
    if (p->kind >= 4) {
        /* exactly one whitespace byte, then the raster */
        if (r->pos >= r->n || !is_space(r->d[r->pos]))
            return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "pnm: no raster");
        r->pos++;
    }
    return FV_OK;
}

/* round(v * 255 / maxval), v <= maxval */
static unsigned char scale(uint32_t v, uint32_t maxval) {
    return (unsigned char)((v * 255u + maxval / 2) / maxval);
}

/* Reads the raster of a checked header into img. */
static fv_status pnm_raster(pnm_rd *r, const pnm_hdr *p, fv_image *img, char *err, size_t errlen) {
    const size_t w = p->w, h = p->h;
    const int ch = p->kind == 3 || p->kind == 6 ? 3 : 1;
    unsigned char *o = img->rgb;
    if (p->kind == 4) { /* rows of w bits, padded to a byte; 1 is black */
        const size_t bpr = (w + 7) / 8;
        for (size_t y = 0; y < h; y++) {
            const unsigned char *row = r->d + r->pos + y * bpr;
            for (size_t x = 0; x < w; x++, o += 3)
                o[0] = o[1] = o[2] = (row[x / 8] >> (7 - x % 8)) & 1 ? 0 : 255;
        }
        return FV_OK;
    }
    const size_t n = w * h * (size_t)ch; /* fits: 3 * w * h does (limits) */
    const int wide = p->maxval > 255;
    unsigned char *dst = img->rgb;
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        if (p->kind >= 5) {
            const unsigned char *s = r->d + r->pos + (wide ? 2 * i : i);
            v = wide ? (uint32_t)s[0] << 8 | s[1] : s[0];
        } else if (p->kind == 1) { /* '0' or '1', whitespace optional */
            skip_space(r, 0);
            if (r->pos >= r->n || (r->d[r->pos] != '0' && r->d[r->pos] != '1'))
                return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "pnm: bad or missing bit");
            v = r->d[r->pos++] == '1' ? 0 : 1; /* 1 is black */
        } else if (read_uint(r, 0, 65535, &v)) {
            return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "pnm: bad or missing sample");
        }
        if (v > p->maxval)
            return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "pnm: sample %u above maxval %u",
                              (unsigned)v, (unsigned)p->maxval);
        unsigned char b = scale(v, p->maxval);
        if (ch == 3) {
            *dst++ = b;
        } else {
            dst[0] = dst[1] = dst[2] = b;
            dst += 3;
        }
    }
    return FV_OK;
}

/* Decodes into *out, or with out NULL only reads the header into *pw x *ph
 * (fvi_probe_pnm). */
static fv_status pnm_go(const unsigned char *data, size_t len, const fv_limits *lim, fv_image **out,
                        int *pw, int *ph, char *err, size_t errlen) {
    pnm_rd r = {data, len, 0};
    pnm_hdr p;
    fv_status st = pnm_header(&r, &p, err, errlen);
    if (st != FV_OK) return st;
    st = fvi_image_check_limits("pnm", p.w, p.h, lim, err, errlen);
    if (st != FV_OK) return st;
    /* the raster must fit in what is left (w, h < 2^31: no overflow in 64 bits) */
    const uint64_t samples = (uint64_t)p.w * p.h * (p.kind == 3 || p.kind == 6 ? 3 : 1);
    uint64_t need;
    if (p.kind == 4)
        need = ((uint64_t)p.w + 7) / 8 * p.h;
    else if (p.kind >= 5)
        need = samples * (p.maxval > 255 ? 2 : 1);
    else
        need = samples; /* text: at least a digit per sample */
    if (need > len - r.pos)
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "pnm: truncated raster");
    if (!out) {
        *pw = (int)p.w;
        *ph = (int)p.h;
        return FV_OK;
    }
    fv_image *img;
    st = fvi_image_alloc((int)p.w, (int)p.h, &img);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "pnm: out of memory");
    st = pnm_raster(&r, &p, img, err, errlen);
    if (st != FV_OK) {
        fv_image_destroy(img);
        return st;
    }
    *out = img;
    return FV_OK;
}

fv_status fvi_decode_pnm(const unsigned char *data, size_t len, const fv_limits *lim,
                         fv_image **out, char *err, size_t errlen) {
    return pnm_go(data, len, lim, out, NULL, NULL, err, errlen);
}

fv_status fvi_probe_pnm(const unsigned char *data, size_t len, const fv_limits *lim, int *w, int *h,
                        char *err, size_t errlen) {
    return pnm_go(data, len, lim, NULL, w, h, err, errlen);
}

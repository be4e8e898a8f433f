/*
 * bmp.c: a small BMP reader for the common uncompressed cases.
 *
 * Supported: BITMAPINFOHEADER and its V4/V5 extensions (header size 40..124)
 * with 24-bit BGR, 32-bit BGRX (BI_RGB, or BI_BITFIELDS with the standard
 * 8-8-8 masks; the fourth byte is ignored) and 8-bit palette images,
 * bottom-up or top-down.  Everything else (OS/2 headers, RLE, 1/4/16-bit,
 * odd bitfields, JPEG/PNG-in-BMP) is FV_E_IMAGE_FORMAT.  No library is
 * used: no maintained BMP decoder is among our dependencies and these cases
 * are a page of code.
 *
 * Every field is hostile: sizes are computed in 64 bits and checked against
 * the input length before any pixel is read, and the pixel limit is checked
 * before the output is allocated.  A palette index beyond the palette gives
 * black.  The last row may lack its padding (some writers omit it).
 */
#include <string.h>

#include "core/fvi.h"
#include "image/image.h"

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static unsigned le16(const unsigned char *p) {
    return (unsigned)p[0] | (unsigned)p[1] << 8;
}

/* Decodes into *out, or with out NULL only reads the header into *pw x *ph
 * (fvi_probe_bmp). */
static fv_status bmp_run(const unsigned char *d, size_t len, const fv_limits *lim, fv_image **out,
                         int *pw, int *ph, char *err, size_t errlen) {
    if (len < 14 + 4) return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "bmp: truncated header");
    uint32_t data_off = le32(d + 10);
    uint32_t hsize = le32(d + 14);
    if (hsize < 40 || hsize > 124)
        return fvi_seterr(err, errlen, FV_E_IMAGE_FORMAT, "bmp: header size %u not supported",
                          (unsigned)hsize);
    if (len < 14 + (size_t)hsize)
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "bmp: truncated header");
    const unsigned char *h = d + 14;
    int64_t w = (int32_t)le32(h + 4);
    int64_t hh = (int32_t)le32(h + 8);
    unsigned planes = le16(h + 12), bpp = le16(h + 14);
    uint32_t comp = le32(h + 16), nclr = le32(h + 32);
    int top_down = hh < 0;
    if (top_down) hh = -hh; /* int64: no overflow even for INT32_MIN */
    if (w <= 0 || hh <= 0 || planes != 1)
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "bmp: bad dimensions or planes");

    if (bpp == 32 && comp == 3) {
        /* BI_BITFIELDS: masks follow a 40-byte header, or sit inside V4/V5. */
        if (len < 14 + 40 + 12)
            return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "bmp: truncated masks");
        if (le32(h + 40) != 0xFF0000u || le32(h + 44) != 0xFF00u || le32(h + 48) != 0xFFu)
            return fvi_seterr(err, errlen, FV_E_IMAGE_FORMAT, "bmp: unusual bit masks");
    } else if (!((bpp == 24 || bpp == 32 || bpp == 8) && comp == 0)) {
        return fvi_seterr(err, errlen, FV_E_IMAGE_FORMAT,
                          "bmp: %u-bit compression %u not supported", bpp, (unsigned)comp);
    }
    fv_status st = fvi_image_check_limits("bmp", (uint64_t)w, (uint64_t)hh, lim, err, errlen);
    if (st != FV_OK) return st;
    if (!out) { /* probe: w, hh fit in int32 (checked) */
        *pw = (int)w;
        *ph = (int)hh;
        return FV_OK;
    }

    unsigned char pal[256][3];
    memset(pal, 0, sizeof pal);
    if (bpp == 8) {
        if (nclr == 0) nclr = 256;
        if (nclr > 256)
            return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "bmp: %u palette colours",
                              (unsigned)nclr);
        size_t po = 14 + (size_t)hsize;
        if (po > len || (len - po) / 4 < nclr)
            return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "bmp: truncated palette");
        for (uint32_t i = 0; i < nclr; i++) {
            pal[i][0] = d[po + 4 * i + 2];
            pal[i][1] = d[po + 4 * i + 1];
            pal[i][2] = d[po + 4 * i + 0];
        }
    }
    /* w, hh fit in int32 (checked), so bpr and stride cannot overflow. */
    uint64_t bpr = ((uint64_t)w * bpp + 7) / 8;          /* bytes used by a row */
    uint64_t stride = ((uint64_t)w * bpp + 31) / 32 * 4; /* padded row */
    if (hh > 1 && stride > (UINT64_MAX - data_off - bpr) / (uint64_t)(hh - 1))
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "bmp: pixel data size overflows");
    uint64_t need = (uint64_t)data_off + stride * (uint64_t)(hh - 1) + bpr;
    if (need > len) return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "bmp: truncated pixel data");

    fv_image *img;
    st = fvi_image_alloc((int)w, (int)hh, &img);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "bmp: out of memory");
    const size_t W = (size_t)w, bytes_pp = bpp / 8;
    for (int64_t y = 0; y < hh; y++) {
        int64_t sy = top_down ? y : hh - 1 - y;
        const unsigned char *src = d + data_off + (size_t)sy * (size_t)stride;
        unsigned char *dst = img->rgb + (size_t)y * W * 3;
        if (bpp == 8) {
            for (size_t x = 0; x < W; x++) memcpy(dst + 3 * x, pal[src[x]], 3);
        } else {
            for (size_t x = 0; x < W; x++, src += bytes_pp) {
                dst[3 * x + 0] = src[2];
                dst[3 * x + 1] = src[1];
                dst[3 * x + 2] = src[0];
            }
        }
    }
    *out = img;
    return FV_OK;
}

fv_status fvi_decode_bmp(const unsigned char *d, size_t len, const fv_limits *lim, fv_image **out,
                         char *err, size_t errlen) {
    return bmp_run(d, len, lim, out, NULL, NULL, err, errlen);
}

fv_status fvi_probe_bmp(const unsigned char *d, size_t len, const fv_limits *lim, int *w, int *h,
                        char *err, size_t errlen) {
    return bmp_run(d, len, lim, NULL, w, h, err, errlen);
}

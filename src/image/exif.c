/*
 * exif.c: the EXIF orientation tag of a JPEG, and applying it.
 *
 * Only one tag matters to us (0x0112 in IFD0), so a 40-line bounds-checked
 * TIFF walk is smaller and safer than handing hostile bytes to a full EXIF
 * library.  Anything unexpected means "orientation 1": a bad tag must not
 * make an otherwise decodable photo fail.
 *
 * Orientation values (EXIF 2.3, table 6), as the transform that makes the
 * stored pixels upright; (x, y) is an output pixel, W x H the stored size:
 *   1 identity                 (x, y)
 *   2 mirror left-right        (W-1-x, y)
 *   3 rotate 180               (W-1-x, H-1-y)
 *   4 mirror top-bottom        (x, H-1-y)
 *   5 transpose                (y, x)
 *   6 rotate 90 clockwise      (y, H-1-x)
 *   7 transverse               (W-1-y, H-1-x)
 *   8 rotate 90 anticlockwise  (W-1-y, x)
 * (Pillow's ImageOps.exif_transpose uses the same table.)
 */
#include <string.h>

#include "core/fvi.h"
#include "image/image.h"

static unsigned rd16(const unsigned char *p, int le) {
    return le ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | (unsigned)p[1];
}

static uint32_t rd32(const unsigned char *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int fvi_exif_orientation(const unsigned char *payload, size_t len) {
    if (!payload || len < 6 + 8 || memcmp(payload, "Exif\0\0", 6) != 0) return 1;
    const unsigned char *t = payload + 6; /* TIFF header; offsets are relative to it */
    size_t n = len - 6;
    int le;
    if (t[0] == 'I' && t[1] == 'I')
        le = 1;
    else if (t[0] == 'M' && t[1] == 'M')
        le = 0;
    else
        return 1;
    if (rd16(t + 2, le) != 42) return 1;
    uint32_t ifd = rd32(t + 4, le);
    if (ifd > n || n - ifd < 2) return 1;
    unsigned count = rd16(t + ifd, le);
    size_t pos = (size_t)ifd + 2;
    for (unsigned i = 0; i < count; i++, pos += 12) {
        if (pos > n || n - pos < 12) return 1;
        const unsigned char *e = t + pos;
        if (rd16(e, le) != 0x0112) continue;
        /* SHORT, count 1: the value sits in the first 2 bytes of the field. */
        if (rd16(e + 2, le) != 3 || rd32(e + 4, le) != 1) return 1;
        unsigned v = rd16(e + 8, le);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* The table above is affine: source pixel index = base + x*dx + y*dy.
 * Rotations read the source column-wise, so the copy goes in square tiles
 * to stay in cache (a 12 MP rotate is ~4x faster than row order). */
fv_status fvi_image_oriented(const fv_image *s, int o, fv_image **out) {
    if (!s || !out || o < 1 || o > 8) return FV_E_INVALID_ARGUMENT;
    const ptrdiff_t W = s->width, H = s->height;
    ptrdiff_t base, dx, dy; /* in pixels; the image size fits ptrdiff_t */
    switch (o) {
    case 1:
        base = 0;
        dx = 1;
        dy = W;
        break;
    case 2:
        base = W - 1;
        dx = -1;
        dy = W;
        break;
    case 3:
        base = (H - 1) * W + W - 1;
        dx = -1;
        dy = -W;
        break;
    case 4:
        base = (H - 1) * W;
        dx = 1;
        dy = -W;
        break;
    case 5:
        base = 0;
        dx = W;
        dy = 1;
        break;
    case 6:
        base = (H - 1) * W;
        dx = -W;
        dy = 1;
        break;
    case 7:
        base = (H - 1) * W + W - 1;
        dx = -W;
        dy = -1;
        break;
    default:
        base = W - 1;
        dx = W;
        dy = -1;
        break; /* 8 */
    }
    const int swap = o >= 5;
    fv_image *d;
    fv_status st = fvi_image_alloc(swap ? s->height : s->width, swap ? s->width : s->height, &d);
    if (st != FV_OK) return st;
    const ptrdiff_t ow = d->width, oh = d->height, T = 64;
    for (ptrdiff_t ty = 0; ty < oh; ty += T) {
        const ptrdiff_t ye = ty + T < oh ? ty + T : oh;
        for (ptrdiff_t tx = 0; tx < ow; tx += T) {
            const ptrdiff_t xe = tx + T < ow ? tx + T : ow;
            for (ptrdiff_t y = ty; y < ye; y++) {
                const unsigned char *sp = s->rgb + (base + tx * dx + y * dy) * 3;
                unsigned char *dp = d->rgb + (y * ow + tx) * 3;
                for (ptrdiff_t x = tx; x < xe; x++, sp += dx * 3, dp += 3) {
                    dp[0] = sp[0];
                    dp[1] = sp[1];
                    dp[2] = sp[2];
                }
            }
        }
    }
    *out = d;
    return FV_OK;
}

fv_status fvi_image_orient(fv_image **img, int o) {
    if (!img || !*img) return FV_E_INVALID_ARGUMENT;
    if (o <= 1 || o > 8) return FV_OK;
    fv_image *d = NULL;
    fv_status st = fvi_image_oriented(*img, o, &d);
    if (st != FV_OK) return st;
    fv_image_destroy(*img);
    *img = d;
    return FV_OK;
}

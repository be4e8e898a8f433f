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

#include "fvi.h"
#include "image/image.h"

static unsigned rd16(const unsigned char *p, int le) {
    return le ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | (unsigned)p[1];
}

static uint32_t rd32(const unsigned char *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                    (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
                    (uint32_t)p[3];
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

fv_status fvi_image_orient(fv_image **img, int o) {
    if (!img || !*img) return FV_E_INVALID_ARGUMENT;
    if (o <= 1 || o > 8) return FV_OK;
    const fv_image *s = *img;
    const size_t W = (size_t)s->width, H = (size_t)s->height;
    const int swap = o >= 5;
    fv_image *d;
    fv_status st = fvi_image_alloc(swap ? s->height : s->width, swap ? s->width : s->height, &d);
    if (st != FV_OK) return st;
    const size_t ow = (size_t)d->width, oh = (size_t)d->height;
    for (size_t y = 0; y < oh; y++) {
        unsigned char *dst = d->rgb + y * ow * 3;
        for (size_t x = 0; x < ow; x++) {
            size_t sx, sy;
            switch (o) {
            case 2: sx = W - 1 - x; sy = y; break;
            case 3: sx = W - 1 - x; sy = H - 1 - y; break;
            case 4: sx = x; sy = H - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = H - 1 - x; break;
            case 7: sx = W - 1 - y; sy = H - 1 - x; break;
            default: sx = W - 1 - y; sy = x; break; /* 8 */
            }
            memcpy(dst + x * 3, s->rgb + (sy * W + sx) * 3, 3);
        }
    }
    fv_image_destroy(*img);
    *img = d;
    return FV_OK;
}

/*
 * tiff.c: TIFF -> RGB8 through libtiff's RGBA interface (first page only).
 *
 * The bytes are read through client procedures over the buffer (no file,
 * no memory mapping).  libtiff's error and warning handlers are per handle
 * (TIFFOpenOptions): errors keep their first message for our err buffer,
 * warnings are dropped, and both return 1 so that libtiff's process-wide
 * handlers, which print to stderr, never run.  libtiff never aborts; its
 * failures are return codes.
 *
 * Only the first directory (page) is read: TIFFClientOpen loads it and
 * nothing here asks for the next one.  Before any pixel memory exists,
 * the page's width and length are checked with fvi_image_check_limits,
 * and its layout is held to what a photo needs (1..5 samples of 1..16
 * bits, the common compressions); libtiff's single-allocation cap
 * (TIFFOpenOptionsSetMaxSingleMemAlloc) backs that up for strip buffers.
 *
 * Pixels come from TIFFRGBAImageGet in bands of one strip (or one row of
 * tiles), so the ABGR scratch is a band, not the whole image; reading in
 * smaller bands would decode each strip several times.  libtiff's RGBA
 * interface converts grey, palette, CMYK, YCbCr, Lab and 16-bit samples;
 * alpha is dropped (after libtiff premultiplies unassociated alpha).
 *
 * Orientation: libtiff's RGBA reader only flips (it treats the transposed
 * orientations 5..8 like 1..4), so it is told the page is stored top-left
 * and the Orientation tag (same values as EXIF's, which took it from TIFF)
 * is applied once afterwards by fvi_image_orient.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <tiffio.h>

#include "core/fvi.h"
#include "image/image.h"

typedef struct tiff_src {
    const unsigned char *data;
    size_t len, pos;
    char msg[160]; /* libtiff's first error message */
} tiff_src;

static tmsize_t src_read(thandle_t h, void *buf, tmsize_t n) {
    tiff_src *s = h;
    if (n <= 0) return 0;
    size_t k = (size_t)n < s->len - s->pos ? (size_t)n : s->len - s->pos;
    memcpy(buf, s->data + s->pos, k);
    s->pos += k;
    return (tmsize_t)k;
}

static tmsize_t src_write(thandle_t h, void *buf, tmsize_t n) {
    FVI_UNUSED(h);
    FVI_UNUSED(buf);
    FVI_UNUSED(n);
    return -1;
}

static toff_t src_seek(thandle_t h, toff_t off, int whence) {
    tiff_src *s = h;
    uint64_t base = whence == SEEK_CUR ? s->pos : whence == SEEK_END ? s->len : 0;
    if (whence != SEEK_SET && whence != SEEK_CUR && whence != SEEK_END) return (toff_t)-1;
    if (off > s->len || base + off > s->len) return (toff_t)-1;
    s->pos = (size_t)(base + off);
    return (toff_t)s->pos;
}

static int src_close(thandle_t h) {
    FVI_UNUSED(h);
    return 0;
}

static toff_t src_size(thandle_t h) {
    return (toff_t)((tiff_src *)h)->len;
}

static int src_map(thandle_t h, void **base, toff_t *size) {
    FVI_UNUSED(h);
    FVI_UNUSED(base);
    FVI_UNUSED(size);
    return 0; /* not mapped: libtiff reads through src_read */
}

static void src_unmap(thandle_t h, void *base, toff_t size) {
    FVI_UNUSED(h);
    FVI_UNUSED(base);
    FVI_UNUSED(size);
}

static int on_error(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
    FVI_UNUSED(tif);
    FVI_UNUSED(module);
    tiff_src *s = user;
    if (s && !s->msg[0]) vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    return 1; /* handled: the global (stderr) handlers are not called */
}

static int on_warning(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
    FVI_UNUSED(tif);
    FVI_UNUSED(user);
    FVI_UNUSED(module);
    FVI_UNUSED(fmt);
    FVI_UNUSED(ap);
    return 1;
}

static int compression_ok(uint16_t c) {
    switch (c) {
    case COMPRESSION_NONE:
    case COMPRESSION_CCITTRLE:
    case COMPRESSION_CCITTFAX3:
    case COMPRESSION_CCITTFAX4:
    case COMPRESSION_LZW:
    case COMPRESSION_JPEG:
    case COMPRESSION_PACKBITS:
    case COMPRESSION_DEFLATE:
    case COMPRESSION_ADOBE_DEFLATE:
        return 1;
    default:
        return 0; /* old-style JPEG, JBIG, LERC, ...: rare, and more to attack */
    }
}

/* Opens the first page and checks it: FV_OK with *tp open, *w x *h the
 * stored size and *orient the Orientation tag (1..8). */
static fv_status tiff_open(tiff_src *s, const fv_limits *lim, TIFF **tp, uint32_t *w, uint32_t *h,
                           int *orient, char *err, size_t errlen) {
    TIFFOpenOptions *o = TIFFOpenOptionsAlloc();
    if (!o) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "tiff: out of memory");
    TIFFOpenOptionsSetErrorHandlerExtR(o, on_error, s);
    TIFFOpenOptionsSetWarningHandlerExtR(o, on_warning, s);
    /* a strip of the largest allowed page: 5 samples of 16 bits */
    uint64_t cap = lim->max_pixels * 10 + (1u << 20);
    TIFFOpenOptionsSetMaxSingleMemAlloc(o, cap > (uint64_t)INT32_MAX ? INT32_MAX : (tmsize_t)cap);
    /* "rm": read only, never memory-mapped */
    TIFF *tif = TIFFClientOpenExt("tiff", "rm", s, src_read, src_write, src_seek, src_close,
                                  src_size, src_map, src_unmap, o);
    TIFFOpenOptionsFree(o);
    if (!tif)
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "tiff: %s",
                          s->msg[0] ? s->msg : "unreadable header");
    *tp = tif;
    uint16_t spp = 1, bps = 1, comp = COMPRESSION_NONE, orientation = ORIENTATION_TOPLEFT;
    if (!TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, w) || !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, h))
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "tiff: no image size");
    fv_status st = fvi_image_check_limits("tiff", *w, *h, lim, err, errlen);
    if (st != FV_OK) return st;
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bps);
    TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &comp);
    TIFFGetFieldDefaulted(tif, TIFFTAG_ORIENTATION, &orientation);
    if (spp < 1 || spp > 5 || bps < 1 || bps > 16)
        return fvi_seterr(err, errlen, FV_E_IMAGE_FORMAT,
                          "tiff: %u samples of %u bits not supported", spp, bps);
    if (!compression_ok(comp))
        return fvi_seterr(err, errlen, FV_E_IMAGE_FORMAT, "tiff: compression %u not supported",
                          comp);
    *orient = orientation >= 1 && orientation <= 8 ? orientation : 1;
    return FV_OK;
}

/* Reads the open page (w x h stored, limits checked) into a new image, in
 * stored order. */
static fv_status tiff_pixels(TIFF *tif, tiff_src *s, uint32_t w, uint32_t h, fv_image **out,
                             char *err, size_t errlen) {
    char emsg[1024] = "";
    if (!TIFFRGBAImageOK(tif, emsg))
        return fvi_seterr(err, errlen, FV_E_IMAGE_FORMAT, "tiff: %s", emsg);
    TIFFRGBAImage ri;
    if (!TIFFRGBAImageBegin(&ri, tif, 1, emsg))
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "tiff: %s", emsg);
    if (ri.width != w || ri.height != h) {
        TIFFRGBAImageEnd(&ri);
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "tiff: inconsistent size");
    }
    /* stored order, top row first; the orientation is applied by the caller */
    ri.orientation = ORIENTATION_TOPLEFT;
    ri.req_orientation = ORIENTATION_TOPLEFT;
    uint32_t band = h;
    if (TIFFIsTiled(tif)) {
        uint32_t tl = 0;
        if (TIFFGetField(tif, TIFFTAG_TILELENGTH, &tl) && tl > 0) band = tl;
    } else {
        uint32_t rps = 0;
        if (TIFFGetFieldDefaulted(tif, TIFFTAG_ROWSPERSTRIP, &rps) && rps > 0) band = rps;
    }
    if (band > h) band = h;
    fv_image *img = NULL;
    fv_status st = fvi_image_alloc((int)w, (int)h, &img);
    size_t scratch; /* w x band ABGR words */
    if (st == FV_OK && (fvi_size_mul(w, band, &scratch) || fvi_size_mul(scratch, 4, &scratch)))
        st = FV_E_NO_MEMORY;
    uint32_t *abgr = st == FV_OK ? fvi_malloc(scratch) : NULL;
    if (st == FV_OK && !abgr) st = FV_E_NO_MEMORY;
    if (st != FV_OK) fvi_seterr(err, errlen, st, "tiff: out of memory");
    for (uint32_t y = 0; st == FV_OK && y < h; y += band) {
        uint32_t n = h - y < band ? h - y : band;
        ri.row_offset = (int)y; /* h fits int32 (limits) */
        ri.col_offset = 0;
        if (!TIFFRGBAImageGet(&ri, abgr, w, n)) {
            st = fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "tiff: %s",
                            s->msg[0] ? s->msg : "pixel data does not decode");
            break;
        }
        unsigned char *dst = img->rgb + (size_t)y * w * 3;
        for (size_t i = 0, k = (size_t)w * n; i < k; i++, dst += 3) {
            dst[0] = (unsigned char)TIFFGetR(abgr[i]);
            dst[1] = (unsigned char)TIFFGetG(abgr[i]);
            dst[2] = (unsigned char)TIFFGetB(abgr[i]);
        }
    }
    TIFFRGBAImageEnd(&ri);
    fvi_free(abgr);
    if (st == FV_OK)
        *out = img;
    else
        fv_image_destroy(img);
    return st;
}

/* Decodes into *out, or with out NULL only reads the first directory into
 * *pw x *ph, orientation applied (fvi_probe_tiff). */
static fv_status tiff_go(const unsigned char *data, size_t len, const fv_limits *lim,
                         fv_image **out, int *pw, int *ph, char *err, size_t errlen) {
    tiff_src s = {data, len, 0, ""};
    TIFF *tif = NULL;
    uint32_t w = 0, h = 0;
    int orient = 1;
    fv_status st = tiff_open(&s, lim, &tif, &w, &h, &orient, err, errlen);
    if (st == FV_OK && !out) { /* limits checked: both fit int32 */
        *pw = orient >= 5 ? (int)h : (int)w;
        *ph = orient >= 5 ? (int)w : (int)h;
    } else if (st == FV_OK) {
        fv_image *img = NULL;
        st = tiff_pixels(tif, &s, w, h, &img, err, errlen);
        if (st == FV_OK) {
            st = fvi_image_orient(&img, orient);
            if (st != FV_OK) {
                fvi_seterr(err, errlen, st, "tiff: out of memory");
                fv_image_destroy(img);
            } else {
                *out = img;
            }
        }
    }
    if (tif) TIFFClose(tif);
    return st;
}

fv_status fvi_decode_tiff(const unsigned char *data, size_t len, const fv_limits *lim,
                          fv_image **out, char *err, size_t errlen) {
    return tiff_go(data, len, lim, out, NULL, NULL, err, errlen);
}

fv_status fvi_probe_tiff(const unsigned char *data, size_t len, const fv_limits *lim, int *w,
                         int *h, char *err, size_t errlen) {
    return tiff_go(data, len, lim, NULL, w, h, err, errlen);
}

/*
 * gif.c: GIF -> RGB8 through giflib (the first frame).
 *
 * giflib's record-level reader is used rather than DGifSlurp, which would
 * decode every frame of an animation into memory: here the records are
 * walked until the first image, its graphics control extension (if any)
 * gives the transparent index, and its rows are read one at a time.
 *
 * Limits: DGifOpen reads the logical screen descriptor, whose size is the
 * output size; it is checked with fvi_image_check_limits before anything
 * else.  The frame's own size is checked too (its row buffer and LZW work
 * scale with it), and the frame is clipped to the screen.
 *
 * Composition: the canvas starts as the background colour of the global
 * colour table (black without one, or for an index past the table), the
 * frame is drawn at its offset, and transparent pixels leave the canvas
 * as it is.  Interlaced frames are de-interlaced.  A pixel index past the
 * colour table gives black.  giflib reports errors as codes, never prints,
 * and allocates its small working state itself.
 */
#include <string.h>

#include <gif_lib.h>

#include "core/fvi.h"
#include "image/image.h"

typedef struct gif_src {
    const unsigned char *data;
    size_t len, pos;
} gif_src;

static int src_read(GifFileType *g, GifByteType *buf, int n) {
    gif_src *s = g->UserData;
    if (n <= 0) return 0;
    size_t k = (size_t)n < s->len - s->pos ? (size_t)n : s->len - s->pos;
    memcpy(buf, s->data + s->pos, k);
    s->pos += k;
    return (int)k;
}

static fv_status gif_fail(const GifFileType *g, const char *what, char *err, size_t errlen) {
    int code = g ? g->Error : 0;
    const char *m = GifErrorString(code);
    return fvi_seterr(err, errlen,
                      code == D_GIF_ERR_NOT_ENOUGH_MEM ? FV_E_NO_MEMORY : FV_E_IMAGE_CORRUPT,
                      "gif: %s: %s", what, m ? m : "error");
}

/* Skips to the first image descriptor, reading the transparent index of a
 * graphics control extension on the way; FV_OK with g->Image filled. */
static fv_status first_image(GifFileType *g, int *transparent, char *err, size_t errlen) {
    *transparent = NO_TRANSPARENT_COLOR;
    for (;;) {
        GifRecordType t;
        if (DGifGetRecordType(g, &t) == GIF_ERROR) return gif_fail(g, "record", err, errlen);
        if (t == IMAGE_DESC_RECORD_TYPE) {
            if (DGifGetImageHeader(g) == GIF_ERROR) return gif_fail(g, "frame", err, errlen);
            return FV_OK;
        }
        if (t == TERMINATE_RECORD_TYPE)
            return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "gif: no image");
        if (t != EXTENSION_RECORD_TYPE)
            return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "gif: unknown record");
        int code;
        GifByteType *ext = NULL;
        if (DGifGetExtension(g, &code, &ext) == GIF_ERROR)
            return gif_fail(g, "extension", err, errlen);
        if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4) {
            GraphicsControlBlock gcb;
            if (DGifExtensionToGCB(ext[0], ext + 1, &gcb) == GIF_OK)
                *transparent = gcb.TransparentColor;
        }
        while (ext)
            if (DGifGetExtensionNext(g, &ext) == GIF_ERROR)
                return gif_fail(g, "extension", err, errlen);
    }
}

/* Reads the frame g->Image onto the canvas img (screen size). */
static fv_status draw_frame(GifFileType *g, fv_image *img, int transparent, const fv_limits *lim,
                            char *err, size_t errlen) {
    const GifImageDesc *d = &g->Image;
    const ColorMapObject *cm = d->ColorMap ? d->ColorMap : g->SColorMap;
    if (!cm || !cm->Colors || cm->ColorCount <= 0)
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "gif: no colour table");
    if (d->Left < 0 || d->Top < 0)
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "gif: bad frame position");
    fv_status st =
        fvi_image_check_limits("gif", (uint64_t)d->Width, (uint64_t)d->Height, lim, err, errlen);
    if (st != FV_OK) return st;
    GifPixelType *line = fvi_malloc((size_t)d->Width);
    if (!line) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "gif: out of memory");
    /* rows in stored order: passes 0, 4, 2, 1 of 8, 8, 4, 2 when interlaced */
    static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
    const int passes = d->Interlace ? 4 : 1;
    for (int p = 0; p < passes && st == FV_OK; p++) {
        for (int r = d->Interlace ? start[p] : 0; r < d->Height; r += d->Interlace ? step[p] : 1) {
            if (DGifGetLine(g, line, d->Width) == GIF_ERROR) {
                st = gif_fail(g, "pixel data", err, errlen);
                break;
            }
            int64_t y = (int64_t)d->Top + r;
            if (y >= img->height) continue; /* clipped to the screen */
            unsigned char *row = img->rgb + (size_t)y * (size_t)img->width * 3;
            for (int x = 0; x < d->Width; x++) {
                int64_t cx = (int64_t)d->Left + x;
                if (cx >= img->width) break;
                int v = line[x];
                if (v == transparent) continue;
                unsigned char *o = row + (size_t)cx * 3;
                if (v < cm->ColorCount) {
                    o[0] = cm->Colors[v].Red;
                    o[1] = cm->Colors[v].Green;
                    o[2] = cm->Colors[v].Blue;
                } else {
                    o[0] = o[1] = o[2] = 0;
                }
            }
        }
    }
    fvi_free(line);
    return st;
}

/* Decodes into *out, or with out NULL only reads the screen descriptor into
 * *pw x *ph (fvi_probe_gif). */
static fv_status gif_go(const unsigned char *data, size_t len, const fv_limits *lim, fv_image **out,
                        int *pw, int *ph, char *err, size_t errlen) {
    gif_src s = {data, len, 0};
    int code = 0;
    GifFileType *g = DGifOpen(&s, src_read, &code);
    if (!g)
        return fvi_seterr(err, errlen,
                          code == D_GIF_ERR_NOT_ENOUGH_MEM ? FV_E_NO_MEMORY : FV_E_IMAGE_CORRUPT,
                          "gif: header: %s", GifErrorString(code) ? GifErrorString(code) : "error");
    fv_status st =
        fvi_image_check_limits("gif", (uint64_t)(g->SWidth > 0 ? g->SWidth : 0),
                               (uint64_t)(g->SHeight > 0 ? g->SHeight : 0), lim, err, errlen);
    if (st == FV_OK && !out) { /* limits checked: both fit int32 */
        *pw = g->SWidth;
        *ph = g->SHeight;
    } else if (st == FV_OK) {
        int transparent;
        fv_image *img = NULL;
        st = first_image(g, &transparent, err, errlen);
        if (st == FV_OK) {
            st = fvi_image_alloc(g->SWidth, g->SHeight, &img);
            if (st != FV_OK) fvi_seterr(err, errlen, st, "gif: out of memory");
        }
        if (st == FV_OK) {
            unsigned char bg[3] = {0, 0, 0};
            const ColorMapObject *gm = g->SColorMap;
            if (gm && gm->Colors && g->SBackGroundColor >= 0 &&
                g->SBackGroundColor < gm->ColorCount) {
                bg[0] = gm->Colors[g->SBackGroundColor].Red;
                bg[1] = gm->Colors[g->SBackGroundColor].Green;
                bg[2] = gm->Colors[g->SBackGroundColor].Blue;
            }
            size_t n = (size_t)img->width * (size_t)img->height;
            for (size_t i = 0; i < n; i++) memcpy(img->rgb + 3 * i, bg, 3);
            st = draw_frame(g, img, transparent, lim, err, errlen);
        }
        if (st == FV_OK)
            *out = img;
        else
            fv_image_destroy(img);
    }
    DGifCloseFile(g, &code);
    return st;
}

fv_status fvi_decode_gif(const unsigned char *data, size_t len, const fv_limits *lim,
                         fv_image **out, char *err, size_t errlen) {
    return gif_go(data, len, lim, out, NULL, NULL, err, errlen);
}

fv_status fvi_probe_gif(const unsigned char *data, size_t len, const fv_limits *lim, int *w, int *h,
                        char *err, size_t errlen) {
    return gif_go(data, len, lim, NULL, w, h, err, errlen);
}

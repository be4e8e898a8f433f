/*
 * webp.c: WebP -> RGB8 through libwebp.
 *
 * WebPGetFeatures reads the header (VP8/VP8L frame header, or VP8X canvas
 * size) without decoding; limits are checked on those dimensions before the
 * output exists.  A still image is decoded straight into the output rows
 * with WebPDecode in MODE_RGB (the advanced form of WebPDecodeRGBInto: it
 * returns a status code, so out-of-memory and truncation are told apart).
 *
 * Animated WebP: the first frame is decoded (WebPAnimDecoder from
 * libwebpdemux, single-threaded), i.e. the full canvas after frame 1 has
 * been composited onto a transparent-black canvas.
 *
 * Alpha is dropped (colour kept as stored, like Pillow's convert("RGB")).
 * libwebp allocates its own working memory with malloc; only the output
 * image goes through fvi_malloc.
 */
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

#include "core/fvi.h"
#include "image/image.h"

static fv_status status_of(VP8StatusCode c) {
    switch (c) {
    case VP8_STATUS_OK:
        return FV_OK;
    case VP8_STATUS_OUT_OF_MEMORY:
        return FV_E_NO_MEMORY;
    case VP8_STATUS_UNSUPPORTED_FEATURE:
        return FV_E_IMAGE_FORMAT;
    case VP8_STATUS_INVALID_PARAM:
        return FV_E_INTERNAL;
    default:
        return FV_E_IMAGE_CORRUPT; /* bitstream error, not enough data */
    }
}

static const char *code_name(VP8StatusCode c) {
    switch (c) {
    case VP8_STATUS_OUT_OF_MEMORY:
        return "out of memory";
    case VP8_STATUS_INVALID_PARAM:
        return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR:
        return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE:
        return "unsupported feature";
    case VP8_STATUS_SUSPENDED:
        return "suspended";
    case VP8_STATUS_USER_ABORT:
        return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA:
        return "truncated data";
    default:
        return "error";
    }
}

/* First frame of an animation, canvas w x h (limits already checked). */
static fv_status decode_anim(const unsigned char *data, size_t len, int w, int h, fv_image **out,
                             char *err, size_t errlen) {
    WebPAnimDecoderOptions opt;
    if (!WebPAnimDecoderOptionsInit(&opt))
        return fvi_seterr(err, errlen, FV_E_INTERNAL, "webp: libwebp version mismatch");
    opt.color_mode = MODE_RGBA;
    opt.use_threads = 0;
    WebPData wd = {data, len};
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&wd, &opt);
    if (!dec) return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "webp: invalid animation");
    WebPAnimInfo info;
    uint8_t *buf = NULL;
    int ts = 0;
    fv_status st = FV_OK;
    if (!WebPAnimDecoderGetInfo(dec, &info) || (int)info.canvas_width != w ||
        (int)info.canvas_height != h || info.frame_count < 1)
        st = fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "webp: inconsistent animation header");
    else if (!WebPAnimDecoderGetNext(dec, &buf, &ts) || !buf)
        st = fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "webp: first frame does not decode");
    fv_image *img = NULL;
    if (st == FV_OK) {
        st = fvi_image_alloc(w, h, &img);
        if (st != FV_OK) fvi_seterr(err, errlen, st, "webp: out of memory");
    }
    if (st == FV_OK) {
        size_t n = (size_t)w * (size_t)h;
        for (size_t i = 0; i < n; i++) memcpy(img->rgb + i * 3, buf + i * 4, 3);
        *out = img;
    }
    WebPAnimDecoderDelete(dec);
    return st;
}

/* Reads the header into *f and checks its size against lim. */
static fv_status webp_header(const unsigned char *data, size_t len, const fv_limits *lim,
                             WebPBitstreamFeatures *f, char *err, size_t errlen) {
    VP8StatusCode c = WebPGetFeatures(data, len, f);
    if (c != VP8_STATUS_OK)
        return fvi_seterr(err, errlen, status_of(c), "webp: header: %s", code_name(c));
    if (f->width <= 0 || f->height <= 0)
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "webp: bad dimensions");
    return fvi_image_check_limits("webp", (uint64_t)f->width, (uint64_t)f->height, lim, err,
                                  errlen);
}

fv_status fvi_decode_webp(const unsigned char *data, size_t len, const fv_limits *lim,
                          fv_image **out, char *err, size_t errlen) {
    WebPBitstreamFeatures f;
    fv_status st = webp_header(data, len, lim, &f, err, errlen);
    if (st != FV_OK) return st;
    VP8StatusCode c;
    if (f.has_animation) return decode_anim(data, len, f.width, f.height, out, err, errlen);

    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg))
        return fvi_seterr(err, errlen, FV_E_INTERNAL, "webp: libwebp version mismatch");
    fv_image *img;
    st = fvi_image_alloc(f.width, f.height, &img);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "webp: out of memory");
    cfg.output.colorspace = MODE_RGB;
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba = img->rgb;
    cfg.output.u.RGBA.stride = f.width * 3;
    cfg.output.u.RGBA.size = (size_t)f.width * (size_t)f.height * 3;
    cfg.options.use_threads = 0;
    c = WebPDecode(data, len, &cfg);
    WebPFreeDecBuffer(&cfg.output); /* no-op for external memory; kept for symmetry */
    if (c != VP8_STATUS_OK) {
        fv_image_destroy(img);
        return fvi_seterr(err, errlen, status_of(c), "webp: %s", code_name(c));
    }
    if (cfg.output.width != f.width || cfg.output.height != f.height) {
        fv_image_destroy(img);
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "webp: size changed while decoding");
    }
    *out = img;
    return FV_OK;
}

fv_status fvi_probe_webp(const unsigned char *data, size_t len, const fv_limits *lim, int *w,
                         int *h, char *err, size_t errlen) {
    WebPBitstreamFeatures f;
    fv_status st = webp_header(data, len, lim, &f, err, errlen);
    if (st != FV_OK) return st;
    *w = f.width;
    *h = f.height;
    return FV_OK;
}

/*
 * heif.c: HEIC/HEIF and AVIF -> RGB8 through libheif (Debian's libheif1
 * decodes HEVC with libde265 and AV1 with dav1d or libaom).
 *
 * Limits: the container is parsed first (heif_context_read_from_memory_
 * without_copy reads boxes, not pixels), and the primary image's size is
 * checked with fvi_image_check_limits before anything is decoded: both the
 * stored size (ispe) and the displayed size (after rotation and cropping),
 * since libheif decodes the stored one and then transforms it.  libheif's
 * own per-side limit (heif_context_set_maximum_image_size_limit) backs this
 * up for every item of the file, grid tiles included.
 *
 * Orientation: a HEIF file says how to display its image with transform
 * properties (irot rotation, imir mirror, clap crop), and libheif applies
 * them while decoding.  Those are the orientation; the EXIF orientation tag
 * that cameras also write into HEIC files describes the same rotation
 * (HEIF forbids the two to disagree, and readers such as Apple's and
 * libheif's own tools follow the transforms), so it is deliberately NOT
 * applied here: applying it too would rotate an iPhone photo twice.
 *
 * Strict decoding is on, so truncated or corrupt codec data is an error
 * rather than a grey patch.  Grid tiles are decoded on the calling thread
 * (max_decoding_threads 0): parallelism belongs to the caller's pool.
 * Alpha is dropped (RGB requested); 10/12-bit images are converted to 8 bit.
 * libheif allocates its working memory itself; only the output image goes
 * through fvi_malloc.  heif_init/heif_deinit are reference counted and
 * thread-safe, so each call brackets its own use.
 */
#include <stdio.h>
#include <string.h>

#include <libheif/heif.h>

#include "core/fvi.h"
#include "image/image.h"

/* libheif's default per-side limit (32768) is generous already; ours can
 * only be smaller. */
#define HEIF_MAX_SIDE 32768

static fv_status status_of(struct heif_error e) {
    if (e.subcode == heif_suberror_Security_limit_exceeded) return FV_E_IMAGE_TOO_LARGE;
    switch (e.code) {
    case heif_error_Ok:
        return FV_OK;
    case heif_error_Memory_allocation_error:
        return FV_E_NO_MEMORY;
    case heif_error_Unsupported_filetype:
    case heif_error_Unsupported_feature:
        return FV_E_IMAGE_FORMAT;
    default:
        return FV_E_IMAGE_CORRUPT; /* invalid input, decoder errors */
    }
}

/* Reports e; libheif's messages may end in a newline (and come from the
 * file's boxes in part), so control bytes become spaces and trailing
 * space is cut: err stays one line. */
static fv_status heif_fail(struct heif_error e, const char *what, char *err, size_t errlen) {
    char m[160];
    snprintf(m, sizeof m, "%s", e.message ? e.message : "error");
    size_t n = strlen(m);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)m[i] < 0x20 || m[i] == 0x7f) m[i] = ' ';
    while (n > 0 && m[n - 1] == ' ') m[--n] = '\0';
    return fvi_seterr(err, errlen, status_of(e), "heif: %s: %s", what, m);
}

/* The state of one call, released by heif_done. */
typedef struct heif_job {
    struct heif_context *ctx;
    struct heif_image_handle *handle;
    struct heif_image *image;
    struct heif_decoding_options *opt;
} heif_job;

static void heif_done(heif_job *j) {
    heif_image_release(j->image);
    heif_image_handle_release(j->handle);
    heif_context_free(j->ctx);
    heif_decoding_options_free(j->opt);
    heif_deinit();
}

/* Parses the container and checks the primary image's sizes against lim;
 * on FV_OK j->handle is the primary image and *w x *h its displayed size. */
static fv_status heif_open(heif_job *j, const unsigned char *data, size_t len, const fv_limits *lim,
                           int *w, int *h, char *err, size_t errlen) {
    j->ctx = heif_context_alloc();
    if (!j->ctx) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "heif: out of memory");
    uint64_t side = lim->max_pixels < HEIF_MAX_SIDE ? lim->max_pixels : HEIF_MAX_SIDE;
    heif_context_set_maximum_image_size_limit(j->ctx, (int)side);
    heif_context_set_max_decoding_threads(j->ctx, 0);
    struct heif_error e = heif_context_read_from_memory_without_copy(j->ctx, data, len, NULL);
    if (e.code != heif_error_Ok) return heif_fail(e, "container", err, errlen);
    e = heif_context_get_primary_image_handle(j->ctx, &j->handle);
    if (e.code != heif_error_Ok) return heif_fail(e, "primary image", err, errlen);
    int iw = heif_image_handle_get_ispe_width(j->handle);
    int ih = heif_image_handle_get_ispe_height(j->handle);
    *w = heif_image_handle_get_width(j->handle);
    *h = heif_image_handle_get_height(j->handle);
    if (iw <= 0 || ih <= 0 || *w <= 0 || *h <= 0)
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "heif: bad image size");
    fv_status st = fvi_image_check_limits("heif", (uint64_t)iw, (uint64_t)ih, lim, err, errlen);
    if (st != FV_OK) return st;
    return fvi_image_check_limits("heif", (uint64_t)*w, (uint64_t)*h, lim, err, errlen);
}

/* Decodes into *out, or with out NULL only reads the header into *pw x *ph
 * (fvi_probe_heif). */
static fv_status heif_go(const unsigned char *data, size_t len, const fv_limits *lim,
                         fv_image **out, int *pw, int *ph, char *err, size_t errlen) {
    heif_job j = {0};
    struct heif_error e = heif_init(NULL);
    if (e.code != heif_error_Ok) {
        heif_deinit(); /* the reference counting pairs even a failed init */
        return heif_fail(e, "init", err, errlen);
    }
    int w = 0, h = 0;
    fv_status st = heif_open(&j, data, len, lim, &w, &h, err, errlen);
    if (st == FV_OK && !out) {
        *pw = w;
        *ph = h;
    }
    if (st != FV_OK || !out) {
        heif_done(&j);
        return st;
    }
    j.opt = heif_decoding_options_alloc();
    if (!j.opt) {
        heif_done(&j);
        return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "heif: out of memory");
    }
    j.opt->ignore_transformations = 0; /* irot/imir/clap are the orientation */
    j.opt->convert_hdr_to_8bit = 1;
    j.opt->strict_decoding = 1;
    /* AV1 through libaom, not dav1d: libheif's dav1d plugin leaks on
     * malformed data (strukturag/libheif#1753), dav1d writes its log to
     * stderr and has made huge allocations on fuzzed input (#1792).  An id
     * that does not decode the file's codec is passed over by libheif, so
     * HEVC still goes to libde265. */
    j.opt->decoder_id = "aom";
    e = heif_decode_image(j.handle, &j.image, heif_colorspace_RGB, heif_chroma_interleaved_RGB,
                          j.opt);
    if (e.code != heif_error_Ok) {
        st = heif_fail(e, "decode", err, errlen);
        heif_done(&j);
        return st;
    }
    int stride = 0;
    const uint8_t *p = heif_image_get_plane_readonly(j.image, heif_channel_interleaved, &stride);
    int dw = heif_image_get_width(j.image, heif_channel_interleaved);
    int dh = heif_image_get_height(j.image, heif_channel_interleaved);
    fv_image *img = NULL;
    if (!p || dw != w || dh != h || stride < 0 || (size_t)stride < (size_t)w * 3) {
        st = fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "heif: decoded image is %dx%d, not %dx%d",
                        dw, dh, w, h);
    } else {
        st = fvi_image_alloc(w, h, &img);
        if (st != FV_OK) fvi_seterr(err, errlen, st, "heif: out of memory");
    }
    if (st == FV_OK) {
        for (int y = 0; y < h; y++)
            memcpy(img->rgb + (size_t)y * (size_t)w * 3, p + (size_t)y * (size_t)stride,
                   (size_t)w * 3);
        *out = img;
    }
    heif_done(&j);
    return st;
}

fv_status fvi_decode_heif(const unsigned char *data, size_t len, const fv_limits *lim,
                          fv_image **out, char *err, size_t errlen) {
    return heif_go(data, len, lim, out, NULL, NULL, err, errlen);
}

fv_status fvi_probe_heif(const unsigned char *data, size_t len, const fv_limits *lim, int *w,
                         int *h, char *err, size_t errlen) {
    return heif_go(data, len, lim, NULL, w, h, err, errlen);
}

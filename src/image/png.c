/*
 * png.c: PNG -> RGB8 through libpng.
 *
 * libpng's default error handler prints and its default longjmp target is
 * shared state we do not control; here error_fn records the message and
 * longjmps to png_run's own jmp_buf, warning_fn is silent, and all memory
 * goes through fvi_malloc (so out-of-memory injection reaches libpng's
 * allocations too and comes back as FV_E_NO_MEMORY).  State surviving the
 * longjmp lives in a png_ctx owned by the caller of the setjmp function.
 *
 * Limits: IHDR is checked (fvi_image_check_limits) right after
 * png_read_info, before the image buffer exists, so a decompression bomb is
 * refused from its header.  png_set_user_limits backs this up inside
 * libpng, and ancillary chunk memory is capped; text and ICC chunks, which
 * we never use (and which are compressed), are discarded unread.
 *
 * Conversions: palette -> RGB, 1/2/4-bit gray -> 8-bit, 16-bit -> 8-bit
 * (scaled, v*255/65535 rounded), gray -> RGB.  Alpha, including tRNS
 * transparency, is dropped: colour channels are kept as stored, not
 * composited (what Pillow's convert("RGB") does).  Gamma is ignored.
 * Interlaced images are read pass by pass into the output rows.
 */
#include <setjmp.h>
#include <string.h>

#include <png.h>

#include "core/fvi.h"
#include "image/image.h"

#define CHUNK_MALLOC_MAX ((png_alloc_size_t)8 * 1000 * 1000)

typedef struct png_ctx {
    png_structp png;
    png_infop info;
    jmp_buf jb;
    const unsigned char *data;
    size_t len, pos;
    int oom; /* an allocation failed: report FV_E_NO_MEMORY */
    char msg[128];
    const fv_limits *lim;
    fv_image *img;
    int probe;          /* fvi_probe_png: stop after the limits check */
    png_uint_32 pw, ph; /* the probed dimensions */
} png_ctx;

static png_voidp on_malloc(png_structp png, png_alloc_size_t n) {
    png_ctx *x = png_get_mem_ptr(png);
    void *p = fvi_malloc(n);
    if (!p) x->oom = 1;
    return p;
}

static void on_free(png_structp png, png_voidp p) {
    FVI_UNUSED(png);
    fvi_free(p);
}

static void on_error(png_structp png, png_const_charp msg) {
    png_ctx *x = png_get_error_ptr(png);
    snprintf(x->msg, sizeof x->msg, "%s", msg ? msg : "error");
    longjmp(x->jb, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    FVI_UNUSED(png);
    FVI_UNUSED(msg);
}

static void on_read(png_structp png, png_bytep out, png_size_t n) {
    png_ctx *x = png_get_io_ptr(png);
    if (n > x->len - x->pos) png_error(png, "truncated data");
    memcpy(out, x->data + x->pos, n);
    x->pos += n;
}

/* Does all libpng work after creation; a longjmp returns 1, else FV_OK or
 * a status from a check.  The only local used after setjmp is x. */
static int png_run(png_ctx *x, fv_status *st, char *err, size_t errlen) {
    if (setjmp(x->jb)) return 1;
    png_structp png = x->png;
    png_infop info = x->info;
    png_set_read_fn(png, x, on_read);
    png_uint_32 dim_max =
        x->lim->max_pixels > 0x7fffffffu ? 0x7fffffffu : (png_uint_32)x->lim->max_pixels;
    png_set_user_limits(png, dim_max, dim_max);
    png_set_chunk_malloc_max(png, CHUNK_MALLOC_MAX);
    static const png_byte ignored[] = "iCCP\0zTXt\0iTXt\0tEXt\0eXIf\0sPLT";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, ignored, 6);
    png_read_info(png, info);

    png_uint_32 w, h;
    int depth, color, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    *st = fvi_image_check_limits("png", w, h, x->lim, err, errlen);
    if (*st != FV_OK) return 0;
    if (x->probe) {
        x->pw = w;
        x->ph = h;
        return 0;
    }

    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_scale_16(png);
    if (!(color & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    /* palette_to_rgb also turns tRNS into an alpha channel: strip that too. */
    if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3 || png_get_bit_depth(png, info) != 8) {
        *st = fvi_seterr(err, errlen, FV_E_INTERNAL, "png: unexpected row layout");
        return 0;
    }
    *st = fvi_image_alloc((int)w, (int)h, &x->img);
    if (*st != FV_OK) {
        fvi_seterr(err, errlen, *st, "png: out of memory");
        return 0;
    }
    /* Interlaced passes combine into the rows, so start from defined bytes. */
    if (passes > 1) memset(x->img->rgb, 0, (size_t)w * h * 3);
    for (int p = 0; p < passes; p++)
        for (png_uint_32 y = 0; y < h; y++)
            png_read_row(png, x->img->rgb + (size_t)y * w * 3, NULL);
    *st = FV_OK;
    return 0;
}

/* Decodes into *out, or with out NULL only reads IHDR into *pw x *ph
 * (fvi_probe_png). */
static fv_status png_go(const unsigned char *data, size_t len, const fv_limits *lim, fv_image **out,
                        int *pw, int *ph, char *err, size_t errlen) {
    png_ctx *x = fvi_calloc(1, sizeof *x);
    if (!x) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "png: out of memory");
    x->data = data;
    x->len = len;
    x->lim = lim;
    x->probe = out == NULL;
    fv_status st = FV_E_IMAGE_CORRUPT;
    x->png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, x, on_error, on_warning, x, on_malloc,
                                      on_free);
    if (x->png) x->info = png_create_info_struct(x->png);
    if (!x->png || !x->info) {
        st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "png: out of memory");
    } else if (png_run(x, &st, err, errlen)) {
        /* A longjmp: libpng reported an error. */
        if (x->oom)
            st = FV_E_NO_MEMORY;
        else if (strstr(x->msg, "user limit"))
            st = FV_E_IMAGE_TOO_LARGE;
        else
            st = FV_E_IMAGE_CORRUPT;
        fvi_seterr(err, errlen, st, "png: %s", x->msg);
    }
    if (x->png) png_destroy_read_struct(&x->png, x->info ? &x->info : NULL, NULL);
    if (st == FV_OK && out) {
        *out = x->img;
    } else if (st == FV_OK) { /* probe: both fit in int32 (limits checked) */
        *pw = (int)x->pw;
        *ph = (int)x->ph;
    } else {
        fv_image_destroy(x->img);
    }
    fvi_free(x);
    return st;
}

fv_status fvi_decode_png(const unsigned char *data, size_t len, const fv_limits *lim,
                         fv_image **out, char *err, size_t errlen) {
    return png_go(data, len, lim, out, NULL, NULL, err, errlen);
}

fv_status fvi_probe_png(const unsigned char *data, size_t len, const fv_limits *lim, int *w, int *h,
                        char *err, size_t errlen) {
    return png_go(data, len, lim, NULL, w, h, err, errlen);
}

/*
 * jpeg.c: JPEG -> RGB8 through the libjpeg API (libjpeg-turbo).
 *
 * libjpeg reports errors by calling error_exit, which by default prints and
 * exits; here it longjmps back to jpeg_run, and warnings are silenced.  One
 * warning can be an error for us: "premature end of JPEG file" (JWRN_JPEG_EOF),
 * which libjpeg would otherwise paper over by padding the image with grey
 * (see on_emit_message for when it is tolerated: only a missing EOI).
 * All state that must survive the longjmp lives in a jpeg_ctx owned by the
 * caller of the function that calls setjmp, so no local is clobbered.
 *
 * Limits: the SOF dimensions are checked after jpeg_read_header, before
 * jpeg_start_decompress allocates anything image-sized.  A progressive file
 * with absurdly many scans (a CPU bomb) is stopped by a progress monitor.
 *
 * Colour: YCbCr/RGB/grayscale are converted to RGB by libjpeg.  CMYK and
 * YCCK are read as CMYK and converted here; files with an Adobe APP14
 * marker (Photoshop, libjpeg's own CMYK writer) store inverted CMYK, which
 * is the common case, so R = C*K/255 on the stored values; without the
 * marker the values are plain CMYK and are inverted first.
 *
 * EXIF: the APP1 marker is kept and its orientation applied after decoding.
 */
#include <setjmp.h>
#include <stdio.h> /* jpeglib.h needs FILE */
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#include "core/fvi.h"
#include "image/image.h"

/* More scans than any sane progressive encoder writes (libjpeg-turbo's own
 * tools suggest a similar cap against scan bombs). */
#define MAX_SCANS 1000

typedef struct jpeg_ctx {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    int created;
    fv_status st; /* status to return after a longjmp */
    char msg[JMSG_LENGTH_MAX];
    const fv_limits *lim;
    fv_image *img;
    unsigned char *row; /* CMYK scanline */
    int orientation;
    int saw_eof;    /* JWRN_JPEG_EOF: the source ran out, a fake EOI was fed */
    int hit_marker; /* JWRN_HIT_MARKER: an entropy decoder ran short */
    int multi_scan; /* progressive or multi-scan: truncation loses detail */
    int probe;      /* fvi_probe_jpeg: stop after the header */
} jpeg_ctx;

static jpeg_ctx *ctx_of(j_common_ptr c) {
    return c->client_data;
}

/* Maps a libjpeg message code to our status. */
static fv_status status_of_code(int code) {
    switch (code) {
    case JERR_OUT_OF_MEMORY:
        return FV_E_NO_MEMORY;
    case JERR_BAD_PRECISION:
    case JERR_CONVERSION_NOTIMPL:
    case JERR_NOT_COMPILED:
    case JERR_ARITH_NOTIMPL:
    case JERR_SOF_UNSUPPORTED:
    case JERR_BAD_J_COLORSPACE:
        return FV_E_IMAGE_FORMAT;
    default:
        return FV_E_IMAGE_CORRUPT;
    }
}

static void on_error_exit(j_common_ptr c) {
    jpeg_ctx *x = ctx_of(c);
    c->err->format_message(c, x->msg);
    x->st = status_of_code(c->err->msg_code);
    longjmp(x->jb, 1);
}

/* Warnings (level -1) are dropped, except where the data ran out: libjpeg
 * then pads the image with grey and goes on.  "Premature end of JPEG file"
 * (JWRN_JPEG_EOF) alone is tolerated only if nothing was missing: no
 * entropy decoder ran short (JWRN_HIT_MARKER, or any warning after the
 * end), the file has a single scan and every scanline was read; that is a
 * file that merely lacks its EOI marker.  jpeg_run checks the rest. */
static void on_emit_message(j_common_ptr c, int level) {
    if (level >= 0) return;
    jpeg_ctx *x = ctx_of(c);
    int code = c->err->msg_code;
    if (code == JWRN_HIT_MARKER) x->hit_marker = 1;
    if (x->saw_eof || (code == JWRN_JPEG_EOF && x->hit_marker)) {
        snprintf(x->msg, sizeof x->msg, "premature end of JPEG data");
        x->st = FV_E_IMAGE_CORRUPT;
        longjmp(x->jb, 1);
    }
    if (code == JWRN_JPEG_EOF) x->saw_eof = 1;
    c->err->num_warnings++;
}

static void on_output_message(j_common_ptr c) {
    FVI_UNUSED(c);
}

static void on_progress(j_common_ptr c) {
    if (!c->is_decompressor) return;
    j_decompress_ptr d = (j_decompress_ptr)c;
    if (d->input_scan_number > MAX_SCANS) {
        jpeg_ctx *x = ctx_of(c);
        snprintf(x->msg, sizeof x->msg, "more than %d scans", MAX_SCANS);
        x->st = FV_E_IMAGE_CORRUPT;
        longjmp(x->jb, 1);
    }
}

/* Converts one CMYK scanline to RGB (see the file comment for Adobe). */
static void cmyk_row(const unsigned char *in, unsigned char *out, size_t w, int adobe) {
    for (size_t i = 0; i < w; i++, in += 4, out += 3) {
        unsigned c = in[0], m = in[1], y = in[2], k = in[3];
        if (!adobe) {
            c = 255 - c;
            m = 255 - m;
            y = 255 - y;
            k = 255 - k;
        }
        out[0] = (unsigned char)((c * k + 127) / 255);
        out[1] = (unsigned char)((m * k + 127) / 255);
        out[2] = (unsigned char)((y * k + 127) / 255);
    }
}

/* Does all libjpeg work; returns FV_OK or the status of a longjmp.  The
 * only local used after setjmp is x, which is never modified. */
static fv_status jpeg_run(jpeg_ctx *x, const unsigned char *data, size_t len, char *err,
                          size_t errlen) {
    if (setjmp(x->jb)) return x->st;
    struct jpeg_decompress_struct *ci = &x->cinfo;
    ci->err = jpeg_std_error(&x->jerr);
    x->jerr.error_exit = on_error_exit;
    x->jerr.emit_message = on_emit_message;
    x->jerr.output_message = on_output_message;
    ci->client_data = x; /* kept by jpeg_create_decompress */
    x->created = 1;      /* safe even if creation fails: cinfo starts zeroed */
    jpeg_create_decompress(ci);
    x->progress.progress_monitor = on_progress;
    ci->progress = &x->progress;
    /* jpeg_mem_src takes an unsigned long length. */
    if ((unsigned long long)len > (unsigned long long)(unsigned long)-1)
        return fvi_seterr(err, errlen, FV_E_IMAGE_TOO_LARGE, "jpeg: input too large");
    jpeg_mem_src(ci, data, (unsigned long)len);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(ci, TRUE);

    fv_status st =
        fvi_image_check_limits("jpeg", ci->image_width, ci->image_height, x->lim, err, errlen);
    if (st != FV_OK) return st;
    for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next) {
        if (m->marker != JPEG_APP0 + 1) continue;
        int o = fvi_exif_orientation(m->data, m->data_length);
        if (o != 1) {
            x->orientation = o;
            break;
        }
    }
    if (x->probe) return FV_OK;

    int cmyk = ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK;
    ci->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    ci->dct_method = JDCT_ISLOW; /* the default; the accurate one */
    jpeg_start_decompress(ci);
    x->multi_scan = jpeg_has_multiple_scans(ci);
    if (ci->output_width != ci->image_width || ci->output_height != ci->image_height ||
        ci->output_components != (cmyk ? 4 : 3))
        return fvi_seterr(err, errlen, FV_E_INTERNAL, "jpeg: unexpected output geometry");

    st = fvi_image_alloc((int)ci->output_width, (int)ci->output_height, &x->img);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "jpeg: out of memory");
    const size_t w = ci->output_width;
    if (cmyk) {
        x->row = fvi_malloc(w * 4);
        if (!x->row) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "jpeg: out of memory");
    }
    while (ci->output_scanline < ci->output_height) {
        unsigned char *dst = x->img->rgb + (size_t)ci->output_scanline * w * 3;
        JSAMPROW rows[1] = {cmyk ? x->row : dst};
        if (jpeg_read_scanlines(ci, rows, 1) != 1)
            return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "jpeg: no scanline produced");
        if (cmyk) cmyk_row(x->row, dst, w, ci->saw_Adobe_marker);
    }
    jpeg_finish_decompress(ci);
    if (x->saw_eof && (x->hit_marker || x->multi_scan))
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "jpeg: premature end of JPEG data");
    return FV_OK;
}

/* Decodes into *out, or with out NULL only reads the header into *pw x *ph,
 * orientation applied (fvi_probe_jpeg). */
static fv_status jpeg_go(const unsigned char *data, size_t len, const fv_limits *lim,
                         fv_image **out, int *pw, int *ph, char *err, size_t errlen) {
    jpeg_ctx *x = fvi_calloc(1, sizeof *x);
    if (!x) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "jpeg: out of memory");
    x->lim = lim;
    x->orientation = 1;
    x->st = FV_E_IMAGE_CORRUPT;
    x->probe = out == NULL;
    fv_status st = jpeg_run(x, data, len, err, errlen);
    if (st == FV_OK && x->probe) {
        /* limits checked: both fit in int32; orientations 5..8 transpose */
        int w = (int)x->cinfo.image_width, h = (int)x->cinfo.image_height;
        *pw = x->orientation >= 5 ? h : w;
        *ph = x->orientation >= 5 ? w : h;
    }
    if (x->created) jpeg_destroy_decompress(&x->cinfo);
    fvi_free(x->row);
    if (x->probe) {
        if (st != FV_OK && x->msg[0] && (!err || !errlen || !err[0]))
            fvi_seterr(err, errlen, st, "jpeg: %s", x->msg);
        fvi_free(x);
        return st;
    }
    if (st == FV_OK && x->orientation != 1) {
        st = fvi_image_orient(&x->img, x->orientation);
        if (st != FV_OK) fvi_seterr(err, errlen, st, "jpeg: out of memory");
    }
    if (st == FV_OK) {
        *out = x->img;
    } else {
        fv_image_destroy(x->img);
        if (x->msg[0] && (!err || !errlen || !err[0]))
            fvi_seterr(err, errlen, st, "jpeg: %s", x->msg);
    }
    fvi_free(x);
    return st;
}

fv_status fvi_decode_jpeg(const unsigned char *data, size_t len, const fv_limits *lim,
                          fv_image **out, char *err, size_t errlen) {
    return jpeg_go(data, len, lim, out, NULL, NULL, err, errlen);
}

fv_status fvi_probe_jpeg(const unsigned char *data, size_t len, const fv_limits *lim, int *w,
                         int *h, char *err, size_t errlen) {
    return jpeg_go(data, len, lim, NULL, w, h, err, errlen);
}

/*
 * image.c: public entry points of the image module (see image.h).
 *
 * Policy decisions, in one place:
 *  - The format comes from the magic bytes only.  Zero bytes, or bytes that
 *    match no supported signature, are FV_E_IMAGE_FORMAT (a known but
 *    unsupported signature such as PDF or SVG is named in the message).
 *    HEIF/AVIF is an ISO base media "ftyp" box with a HEIF brand; other
 *    ftyp files (MP4, QuickTime video) are refused by name.
 *  - Input size is checked before anything else: fv_image_decode refuses
 *    len > max_input_bytes, fv_image_load refuses such a file after fstat,
 *    before reading it.  Pixel counts are checked by each decoder from the
 *    header, before pixel memory is allocated.
 *  - A zero field of fv_limits means "the default" so that a zeroed struct
 *    is not a trap; there is no "unlimited" setting.
 *  - fv_image_probe runs the same sniffing, limits and header checks as
 *    fv_image_decode and stops before pixel memory: what a server needs to
 *    budget memory for a decode before it starts.
 *  - Only regular files are loaded (a FIFO or device is FV_E_IO); files
 *    are read by core's fvi_read_file, so a missing or unreadable image
 *    is FV_E_IO and one above max_input_bytes FV_E_IMAGE_TOO_LARGE.
 */
#include <string.h>

#include "core/fvi.h"
#include "image/image.h"

void fv_limits_init(fv_limits *lim) {
    if (!lim) return;
    lim->max_input_bytes = FV_DEFAULT_MAX_INPUT_BYTES;
    lim->max_pixels = FV_DEFAULT_MAX_PIXELS;
}

fv_limits fvi_limits_effective(const fv_limits *lim) {
    fv_limits l;
    fv_limits_init(&l);
    if (lim) {
        if (lim->max_input_bytes) l.max_input_bytes = lim->max_input_bytes;
        if (lim->max_pixels) l.max_pixels = lim->max_pixels;
    }
    return l;
}

fv_status fvi_image_check_limits(const char *fmt, uint64_t w, uint64_t h, const fv_limits *lim,
                                 char *err, size_t errlen) {
    if (w == 0 || h == 0)
        return fvi_seterr(err, errlen, FV_E_IMAGE_CORRUPT, "%s: zero image dimension", fmt);
    /* Both fit in 32 bits for every format we read, so the product cannot
     * overflow 64 bits; check anyway rather than rely on it. */
    if (w > UINT64_MAX / h || w * h > lim->max_pixels)
        return fvi_seterr(
            err, errlen, FV_E_IMAGE_TOO_LARGE, "%s: %llux%llu pixels exceed the limit of %llu", fmt,
            (unsigned long long)w, (unsigned long long)h, (unsigned long long)lim->max_pixels);
    /* fv_image stores int dimensions and 3*w*h bytes. */
    size_t bytes;
    if (w > (uint64_t)INT32_MAX || h > (uint64_t)INT32_MAX ||
        fvi_size_mul((size_t)w, (size_t)h, &bytes) || fvi_size_mul(bytes, 3, &bytes))
        return fvi_seterr(err, errlen, FV_E_IMAGE_TOO_LARGE, "%s: %llux%llu pixels too large", fmt,
                          (unsigned long long)w, (unsigned long long)h);
    return FV_OK;
}

fv_status fvi_image_alloc(int w, int h, fv_image **out) {
    if (!out || w <= 0 || h <= 0) return FV_E_INVALID_ARGUMENT;
    size_t n;
    /* Objects above PTRDIFF_MAX break pointer subtraction: refuse them. */
    if (fvi_size_mul((size_t)w, (size_t)h, &n) || fvi_size_mul(n, 3, &n) || n > (size_t)PTRDIFF_MAX)
        return FV_E_INVALID_ARGUMENT;
    fv_image *img = fvi_malloc(sizeof *img);
    if (!img) return FV_E_NO_MEMORY;
    img->rgb = fvi_malloc(n);
    if (!img->rgb) {
        fvi_free(img);
        return FV_E_NO_MEMORY;
    }
    img->width = w;
    img->height = h;
    *out = img;
    return FV_OK;
}

void fv_image_destroy(fv_image *img) {
    if (!img) return;
    fvi_free(img->rgb);
    fvi_free(img);
}

fv_status fv_image_from_rgb(const unsigned char *rgb, int width, int height, fv_image **out) {
    if (!rgb || !out) return FV_E_INVALID_ARGUMENT;
    fv_image *img;
    fv_status st = fvi_image_alloc(width, height, &img);
    if (st != FV_OK) return st;
    memcpy(img->rgb, rgb, (size_t)width * (size_t)height * 3);
    *out = img;
    return FV_OK;
}

typedef enum {
    FMT_UNKNOWN,
    FMT_JPEG,
    FMT_PNG,
    FMT_WEBP,
    FMT_BMP,
    FMT_HEIF,
    FMT_TIFF,
    FMT_GIF,
    FMT_PNM
} img_format;

/* The ISO base media brands of a still HEIF/AVIF image (HEIF, ISO/IEC
 * 23008-12, and AV1 Image File Format): the major brand, or one of the
 * compatible brands when the major one is generic. */
static int heif_brand(const unsigned char *b) {
    static const char *const brands[] = {"heic", "heix", "heim", "heis", "hevc", "hevx",
                                         "hevm", "hevs", "mif1", "msf1", "avif", "avis"};
    for (size_t i = 0; i < sizeof brands / sizeof *brands; i++)
        if (memcmp(b, brands[i], 4) == 0) return 1;
    return 0;
}

/* An ftyp box at offset 0 naming a HEIF brand (bounded by the box and the
 * input). */
static int is_heif(const unsigned char *d, size_t n) {
    if (n < 12 || memcmp(d + 4, "ftyp", 4) != 0) return 0;
    if (heif_brand(d + 8)) return 1;
    size_t box = (size_t)d[0] << 24 | (size_t)d[1] << 16 | (size_t)d[2] << 8 | d[3];
    if (box > n) box = n;
    for (size_t o = 16; o + 4 <= box; o += 4) /* compatible brands after minor_version */
        if (heif_brand(d + o)) return 1;
    return 0;
}

/* Sniffs the container from its signature.  *other names a recognised but
 * unsupported format for the error message (or stays NULL). */
static img_format sniff(const unsigned char *d, size_t n, const char **other) {
    *other = NULL;
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return FMT_JPEG;
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return FMT_PNG;
    if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0) return FMT_WEBP;
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return FMT_BMP;
    if (is_heif(d, n)) return FMT_HEIF;
    if (n >= 4 && (memcmp(d, "II*\0", 4) == 0 || memcmp(d, "MM\0*", 4) == 0)) return FMT_TIFF;
    if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0)) return FMT_GIF;
    /* Netpbm: "P1".."P6" and whitespace (or a comment) */
    if (n >= 3 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6' &&
        (d[2] == ' ' || d[2] == '\t' || d[2] == '\n' || d[2] == '\r' || d[2] == '#'))
        return FMT_PNM;
    if (n >= 3 && d[0] == 'P' && d[1] == '7' && (d[2] == '\n' || d[2] == ' '))
        *other = "PAM";
    else if (n >= 4 && (memcmp(d, "II+\0", 4) == 0 || memcmp(d, "MM\0+", 4) == 0))
        *other = "BigTIFF";
    else if (n >= 12 && memcmp(d + 4, "ftyp", 4) == 0)
        *other = "MP4/QuickTime (not a HEIF image)";
    else if (n >= 4 && memcmp(d, "\0\0\1\0", 4) == 0)
        *other = "ICO";
    else if (n >= 5 && memcmp(d, "%PDF-", 5) == 0)
        *other = "PDF";
    else {
        /* Markup (SVG, HTML, XML) starts with '<' after optional space. */
        size_t i = n >= 3 && memcmp(d, "\xef\xbb\xbf", 3) == 0 ? 3 : 0; /* UTF-8 BOM */
        while (i < n && i < 64 && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n'))
            i++;
        if (i < n && d[i] == '<') *other = "SVG or other markup";
    }
    return FMT_UNKNOWN;
}

/* The supported formats, for messages (README and openapi.json list the
 * same). */
#define FV_FORMATS "JPEG, PNG, WebP, BMP, HEIC/HEIF, AVIF, TIFF, GIF, PBM/PGM/PPM"

typedef fv_status (*decode_fn)(const unsigned char *, size_t, const fv_limits *, fv_image **,
                               char *, size_t);
typedef fv_status (*probe_fn)(const unsigned char *, size_t, const fv_limits *, int *, int *,
                              char *, size_t);

/* The decoder and header probe of each format, indexed by img_format. */
static const struct {
    decode_fn decode;
    probe_fn probe;
} codecs[] = {
    [FMT_JPEG] = {fvi_decode_jpeg, fvi_probe_jpeg}, [FMT_PNG] = {fvi_decode_png, fvi_probe_png},
    [FMT_WEBP] = {fvi_decode_webp, fvi_probe_webp}, [FMT_BMP] = {fvi_decode_bmp, fvi_probe_bmp},
    [FMT_HEIF] = {fvi_decode_heif, fvi_probe_heif}, [FMT_TIFF] = {fvi_decode_tiff, fvi_probe_tiff},
    [FMT_GIF] = {fvi_decode_gif, fvi_probe_gif},    [FMT_PNM] = {fvi_decode_pnm, fvi_probe_pnm},
};

/* fv_image_decode (out) or fv_image_probe (out NULL: *w x *h): the same
 * checks and format dispatch for both. */
static fv_status decode_or_probe(const void *bytes, size_t len, const fv_limits *lim,
                                 fv_image **out, int *w, int *h, char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    if ((!out && (!w || !h)) || (!bytes && len))
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    fv_limits l = fvi_limits_effective(lim);
    if (len > l.max_input_bytes)
        return fvi_seterr(err, errlen, FV_E_IMAGE_TOO_LARGE,
                          "%zu bytes exceed the input limit of %zu", len, l.max_input_bytes);
    if (len == 0) return fvi_seterr(err, errlen, FV_E_IMAGE_FORMAT, "empty input");
    const unsigned char *d = bytes;
    const char *other;
    img_format f = sniff(d, len, &other);
    if (f != FMT_UNKNOWN)
        return out ? codecs[f].decode(d, len, &l, out, err, errlen)
                   : codecs[f].probe(d, len, &l, w, h, err, errlen);
    if (other)
        return fvi_seterr(err, errlen, FV_E_IMAGE_FORMAT,
                          "%s is not supported (" FV_FORMATS " are)", other);
    return fvi_seterr(err, errlen, FV_E_IMAGE_FORMAT,
                      "unknown format (" FV_FORMATS " are supported)");
}

fv_status fv_image_decode(const void *bytes, size_t len, const fv_limits *lim, fv_image **out,
                          char *err, size_t errlen) {
    if (!out) {
        if (err && errlen) err[0] = '\0';
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    }
    return decode_or_probe(bytes, len, lim, out, NULL, NULL, err, errlen);
}

fv_status fv_image_probe(const void *bytes, size_t len, const fv_limits *lim, int *width,
                         int *height, char *err, size_t errlen) {
    return decode_or_probe(bytes, len, lim, NULL, width, height, err, errlen);
}

fv_status fv_image_load(const char *path, const fv_limits *lim, fv_image **out, char *err,
                        size_t errlen) {
    if (err && errlen) err[0] = '\0';
    if (!path || !out)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "image: NULL argument");
    fv_limits l = fvi_limits_effective(lim);
    unsigned char *buf = NULL;
    size_t n = 0;
    /* a missing image is an I/O error of the caller's input, not a model
     * missing; too large is the same status fv_image_decode gives */
    fv_status st = fvi_read_file(path, l.max_input_bytes, "image", FV_E_IO, FV_E_IMAGE_TOO_LARGE,
                                 &buf, &n, err, errlen);
    if (st != FV_OK) return st;
    st = fv_image_decode(buf, n, &l, out, err, errlen);
    fvi_free(buf);
    return st;
}

/*
 * image.h: private interface of the image module (bytes -> fv_image).
 *
 * image.c owns the public entry points: it applies the input-size limit,
 * sniffs the format from the magic bytes (never a file name) and hands the
 * bytes to one decoder per format (jpeg.c, png.c, webp.c, bmp.c, heif.c for
 * HEIC/HEIF and AVIF, tiff.c, gif.c, pnm.c for PBM/PGM/PPM).  Each
 * decoder reads the header first, calls fvi_image_check_limits before any
 * pixel memory exists, then allocates the output with fvi_image_alloc and
 * fills every pixel.  exif.c finds the JPEG orientation tag and
 * fvi_image_orient applies it (tiff.c uses it for TIFF's Orientation tag;
 * libheif applies HEIF's own transforms).
 *
 * Other modules use fvi_image_alloc to make images of their own (for example
 * a downscaled copy); it is the only allocator of fv_image.
 */
#ifndef FVI_IMAGE_H
#define FVI_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "faceverify.h"

/* Allocates an image of w x h RGB8 pixels (contents uninitialised) into
 * *out.  FV_E_INVALID_ARGUMENT for w or h <= 0 or a byte count that does
 * not fit size_t, FV_E_NO_MEMORY on allocation failure (*out untouched).
 * Free with fv_image_destroy. */
fv_status fvi_image_alloc(int w, int h, fv_image **out);

/* Limits with zero fields replaced by the defaults; lim may be NULL. */
fv_limits fvi_limits_effective(const fv_limits *lim);

/* FV_OK when a w x h image is allowed by lim (w, h > 0 and w*h <=
 * max_pixels), else FV_E_IMAGE_TOO_LARGE / FV_E_IMAGE_CORRUPT with a
 * message naming fmt.  Every decoder calls this on header values before it
 * allocates pixel memory. */
fv_status fvi_image_check_limits(const char *fmt, uint64_t w, uint64_t h, const fv_limits *lim,
                                 char *err, size_t errlen);

/* Per-format decoders: bytes already sniffed as that format, len > 0,
 * limits effective.  On success *out is a new image; on failure *out is
 * untouched and nothing leaks. */
fv_status fvi_decode_jpeg(const unsigned char *data, size_t len, const fv_limits *lim,
                          fv_image **out, char *err, size_t errlen);
fv_status fvi_decode_png(const unsigned char *data, size_t len, const fv_limits *lim,
                         fv_image **out, char *err, size_t errlen);
fv_status fvi_decode_webp(const unsigned char *data, size_t len, const fv_limits *lim,
                          fv_image **out, char *err, size_t errlen);
fv_status fvi_decode_bmp(const unsigned char *data, size_t len, const fv_limits *lim,
                         fv_image **out, char *err, size_t errlen);
fv_status fvi_decode_heif(const unsigned char *data, size_t len, const fv_limits *lim,
                          fv_image **out, char *err, size_t errlen);
fv_status fvi_decode_tiff(const unsigned char *data, size_t len, const fv_limits *lim,
                          fv_image **out, char *err, size_t errlen);
fv_status fvi_decode_gif(const unsigned char *data, size_t len, const fv_limits *lim,
                         fv_image **out, char *err, size_t errlen);
fv_status fvi_decode_pnm(const unsigned char *data, size_t len, const fv_limits *lim,
                         fv_image **out, char *err, size_t errlen);

/* Per-format header probes (fv_image_probe): the same checks as the
 * decoder up to its fvi_image_check_limits call, then *w x *h as decoded
 * (orientation applied); nothing is allocated that outlives the call. */
fv_status fvi_probe_jpeg(const unsigned char *data, size_t len, const fv_limits *lim, int *w,
                         int *h, char *err, size_t errlen);
fv_status fvi_probe_png(const unsigned char *data, size_t len, const fv_limits *lim, int *w, int *h,
                        char *err, size_t errlen);
fv_status fvi_probe_webp(const unsigned char *data, size_t len, const fv_limits *lim, int *w,
                         int *h, char *err, size_t errlen);
fv_status fvi_probe_bmp(const unsigned char *data, size_t len, const fv_limits *lim, int *w, int *h,
                        char *err, size_t errlen);
fv_status fvi_probe_heif(const unsigned char *data, size_t len, const fv_limits *lim, int *w,
                         int *h, char *err, size_t errlen);
fv_status fvi_probe_tiff(const unsigned char *data, size_t len, const fv_limits *lim, int *w,
                         int *h, char *err, size_t errlen);
fv_status fvi_probe_gif(const unsigned char *data, size_t len, const fv_limits *lim, int *w, int *h,
                        char *err, size_t errlen);
fv_status fvi_probe_pnm(const unsigned char *data, size_t len, const fv_limits *lim, int *w, int *h,
                        char *err, size_t errlen);

/* EXIF orientation (1..8) from the payload of a JPEG APP1 marker (starting
 * at "Exif\0\0").  Returns 1 (normal) for anything missing, malformed or
 * out of range; never reads outside payload[0..len). */
int fvi_exif_orientation(const unsigned char *payload, size_t len);

/* Applies EXIF orientation o (1..8) to *img, replacing it by a new image on
 * success (the old one is freed).  o == 1 or out of range: no-op.
 * FV_E_NO_MEMORY leaves *img unchanged. */
fv_status fvi_image_orient(fv_image **img, int o);

/* A new image (*out, the caller's) holding src under EXIF orientation o
 * (1..8; 1 is a plain copy), src untouched: one copy where copying then
 * turning in place would take two.  FV_E_INVALID_ARGUMENT for NULL or o
 * out of range, FV_E_NO_MEMORY (*out untouched). */
fv_status fvi_image_oriented(const fv_image *src, int o, fv_image **out);

#endif

/*
 * make_heif.c: writes a HEIC or AVIF file with libheif's own encoder (x265
 * or libaom through libheif) and an orientation, for the format tests
 * (tests/py/test_formats.py).
 *
 * Debian's heif-enc (1.15) copies a JPEG's EXIF orientation tag but writes
 * no irot/imir transform, which is not what a phone writes; libheif's
 * encoding option image_orientation does write them, so the rotated HEIC
 * test uses this tool.  The input is decoded by fv_image_load (any format
 * the library reads) and encoded as stored; ORIENT (1..8, EXIF's values)
 * says how a reader must transform it to display it.
 *
 *   make_heif IN OUT heic|avif QUALITY ORIENT
 *
 * Exit status: 0 ok, 1 error (message on stderr), 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libheif/heif.h>

#include "faceverify.h"

static int fail(const char *what, struct heif_error e) {
    fprintf(stderr, "make_heif: %s: %s\n", what, e.message ? e.message : "error");
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 6 || (strcmp(argv[3], "heic") && strcmp(argv[3], "avif"))) {
        fprintf(stderr, "usage: make_heif IN OUT heic|avif QUALITY ORIENT\n");
        return 2;
    }
    int quality = atoi(argv[4]), orient = atoi(argv[5]);
    if (quality < 0 || quality > 100 || orient < 1 || orient > 8) {
        fprintf(stderr, "make_heif: QUALITY is 0..100, ORIENT 1..8\n");
        return 2;
    }
    char err[256];
    fv_image *src = NULL;
    if (fv_image_load(argv[1], NULL, &src, err, sizeof err) != FV_OK) {
        fprintf(stderr, "make_heif: %s\n", err);
        return 1;
    }
    heif_init(NULL);
    int rc = 1;
    struct heif_context *ctx = heif_context_alloc();
    struct heif_encoder *enc = NULL;
    struct heif_image *img = NULL;
    struct heif_encoding_options *opt = heif_encoding_options_alloc();
    struct heif_error e = heif_context_get_encoder_for_format(
        ctx, argv[3][0] == 'h' ? heif_compression_HEVC : heif_compression_AV1, &enc);
    if (e.code != heif_error_Ok) {
        rc = fail("encoder", e);
        goto done;
    }
    heif_encoder_set_lossy_quality(enc, quality);
    e = heif_image_create(src->width, src->height, heif_colorspace_RGB, heif_chroma_interleaved_RGB,
                          &img);
    if (e.code == heif_error_Ok)
        e = heif_image_add_plane(img, heif_channel_interleaved, src->width, src->height, 8);
    if (e.code != heif_error_Ok) {
        rc = fail("image", e);
        goto done;
    }
    int stride;
    uint8_t *p = heif_image_get_plane(img, heif_channel_interleaved, &stride);
    for (int y = 0; y < src->height; y++)
        memcpy(p + (size_t)y * (size_t)stride, src->rgb + (size_t)y * (size_t)src->width * 3,
               (size_t)src->width * 3);
    opt->image_orientation = (enum heif_orientation)orient;
    e = heif_context_encode_image(ctx, img, enc, opt, NULL);
    if (e.code == heif_error_Ok) e = heif_context_write_to_file(ctx, argv[2]);
    rc = e.code == heif_error_Ok ? 0 : fail("encode", e);
done:
    heif_encoding_options_free(opt);
    heif_image_release(img);
    if (enc) heif_encoder_release(enc);
    heif_context_free(ctx);
    heif_deinit();
    fv_image_destroy(src);
    return rc;
}

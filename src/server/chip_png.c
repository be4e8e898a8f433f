/*
 * chip_png.c: aligned face chips as small PNG data URLs, for API clients
 * that asked for them ("return_chips": true or the form field chips=1) and
 * for the demo page, which shows the chips side by side.
 *
 * Encoding uses libpng (already linked for decoding) writing into a growing
 * memory buffer, then libsodium's base64.  A 150x150 RGB chip is 67,500
 * raw bytes; PNG usually brings it to 30-45 kB, about 40-60 kB as base64.
 */
#include "server/chip_png.h"

#include <png.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

typedef struct membuf {
    unsigned char *data;
    size_t len, cap;
    int failed;
} membuf;

static void mem_write(png_structp png, png_bytep data, png_size_t n) {
    membuf *m = png_get_io_ptr(png);
    if (m->failed) return;
    if (m->len + n > m->cap) {
        size_t c = m->cap ? m->cap : 32768;
        while (c < m->len + n) c *= 2;
        unsigned char *b = realloc(m->data, c);
        if (!b) {
            m->failed = 1;
            return;
        }
        m->data = b;
        m->cap = c;
    }
    memcpy(m->data + m->len, data, n);
    m->len += n;
}

static void mem_flush(png_structp png) {
    (void)png;
}

/* Encodes w x h packed RGB into m; 0 on success.  Kept apart from the
 * caller so that nothing but m and the libpng structs live across the
 * setjmp. */
static int encode_png(const unsigned char *rgb, int w, int h, membuf *m) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    if (!png) return -1;
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_set_write_fn(png, m, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, (png_const_bytep)(rgb + (size_t)y * (size_t)w * 3));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return m->failed ? -1 : 0;
}

json_t *fvs_chip_data_url(const unsigned char *rgb, int w, int h) {
    if (!rgb || w <= 0 || h <= 0 || w > 4096 || h > 4096) return NULL;
    membuf m = {NULL, 0, 0, 0};
    if (encode_png(rgb, w, h, &m)) {
        free(m.data);
        return NULL;
    }
    static const char prefix[] = "data:image/png;base64,";
    size_t b64 = sodium_base64_ENCODED_LEN(m.len, sodium_base64_VARIANT_ORIGINAL);
    char *url = malloc(sizeof prefix - 1 + b64);
    json_t *out = NULL;
    if (url) {
        memcpy(url, prefix, sizeof prefix - 1);
        sodium_bin2base64(url + sizeof prefix - 1, b64, m.data, m.len,
                          sodium_base64_VARIANT_ORIGINAL);
        out = json_string(url);
        free(url);
    }
    free(m.data);
    return out;
}

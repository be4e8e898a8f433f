/*
 * test_image_formats.c: the HEIF/AVIF, TIFF, GIF and PBM/PGM/PPM decoders
 * of the image module (issue 18).
 *
 * Inputs are made here by each format's own encoder (libheif with x265 and
 * libaom, libtiff, giflib's EGif writer) or, for Netpbm, written as the
 * text the format is, so each test knows the exact pixels to expect.
 * Hostile variants (truncated, lying sizes, bad offsets) must give a typed
 * status; a size above the pixel limit must be refused before the image
 * module allocates anything (checked by failing the first allocation:
 * the status stays FV_E_IMAGE_TOO_LARGE, not FV_E_NO_MEMORY).  The probe
 * must agree with the decoder, and out-of-memory injection walks every
 * allocation of each decode path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gif_lib.h>
#include <libheif/heif.h>
#include <tiffio.h>

#include "faceverify.h"
#include "core/fvi.h"
#include "image/image.h"

/* ------------------------------------------------------------ helpers */

static fv_status decode(const void *d, size_t n, fv_image **img) {
    char err[256];
    *img = NULL;
    fv_status st = fv_image_decode(d, n, NULL, img, err, sizeof err);
    if (st == FV_OK) {
        assert_non_null(*img);
        /* the probe agrees with the decoder */
        int w = 0, h = 0;
        assert_int_equal(fv_image_probe(d, n, NULL, &w, &h, err, sizeof err), FV_OK);
        assert_int_equal(w, (*img)->width);
        assert_int_equal(h, (*img)->height);
    } else {
        assert_null(*img);
        assert_true(strlen(err) > 0);
    }
    return st;
}

static const unsigned char *px(const fv_image *img, int x, int y) {
    return img->rgb + ((size_t)y * (size_t)img->width + (size_t)x) * 3;
}

static void assert_px(const fv_image *img, int x, int y, int r, int g, int b, int tol) {
    const unsigned char *p = px(img, x, y);
    if (abs(p[0] - r) > tol || abs(p[1] - g) > tol || abs(p[2] - b) > tol)
        fail_msg("pixel (%d,%d) = (%d,%d,%d), expected (%d,%d,%d) +-%d", x, y, p[0], p[1], p[2], r,
                 g, b, tol);
}

/* A pixel limit refusal happens before the image module allocates. */
static void assert_refused_without_alloc(const void *d, size_t n, fv_status want) {
    fv_image *img = NULL;
    char err[256];
    fvi_alloc_fail_after(0);
    fv_status st = fv_image_decode(d, n, NULL, &img, err, sizeof err);
    fvi_alloc_fail_after(-1);
    if (st != want) fail_msg("status %d (%s), expected %d", st, err, want);
    assert_null(img);
    int w, h;
    fvi_alloc_fail_after(0);
    st = fv_image_probe(d, n, NULL, &w, &h, err, sizeof err);
    fvi_alloc_fail_after(-1);
    assert_int_equal(st, want);
}

/* Every allocation of a decode may fail: FV_E_NO_MEMORY, nothing leaks. */
static void assert_oom_safe(const void *d, size_t n) {
    int ok = 0;
    for (long k = 0; k < 200 && !ok; k++) {
        fv_image *img = NULL;
        char err[256];
        fvi_alloc_fail_after(k);
        fv_status st = fv_image_decode(d, n, NULL, &img, err, sizeof err);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK) {
            ok = 1;
            fv_image_destroy(img);
        } else if (st != FV_E_NO_MEMORY) {
            fail_msg("fail after %ld: status %d (%s)", k, st, err);
        }
    }
    assert_true(ok);
}

/* Every prefix of a file decodes or fails with a typed status (never a
 * crash, and never "success" for a cut inside the pixel data: the caller
 * says from which length on a prefix may decode). */
static void assert_truncations(const unsigned char *d, size_t n, size_t ok_from, size_t step) {
    for (size_t cut = 1; cut < n; cut += step) {
        fv_image *img;
        fv_status st = decode(d, cut, &img);
        if (cut < ok_from && st == FV_OK) fail_msg("prefix of %zu/%zu bytes decoded", cut, n);
        assert_true(st == FV_OK || st == FV_E_IMAGE_CORRUPT || st == FV_E_IMAGE_FORMAT);
        fv_image_destroy(img);
    }
}

/* A 24x16 picture of four solid quadrants (12x8 each). */
static const unsigned char quad[4][3] = {
    {200, 30, 30}, {30, 200, 30}, {30, 30, 200}, {220, 220, 40}};

static unsigned char *pattern(int w, int h) {
    unsigned char *p = malloc((size_t)w * h * 3);
    assert_non_null(p);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(p + ((size_t)y * w + x) * 3, quad[(y >= h / 2) * 2 + (x >= w / 2)], 3);
    return p;
}

/* The picture oriented by o, through fvi_image_orient (exif.c, tested on
 * its own in test_image.c). */
static fv_image *oriented(const unsigned char *p, int w, int h, int o) {
    fv_image *img;
    assert_int_equal(fv_image_from_rgb(p, w, h, &img), FV_OK);
    assert_int_equal(fvi_image_orient(&img, o), FV_OK);
    return img;
}

/* A new empty temporary file for an encoder that writes to a path. */
static void tmp_file(char path[static 25]) {
    strcpy(path, "/tmp/fv_test_img_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
}

/* The bytes of the file at path, which is removed. */
static unsigned char *take_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *d = malloc((size_t)len);
    assert_non_null(d);
    assert_int_equal(fread(d, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    unlink(path);
    *n = (size_t)len;
    return d;
}

static void put_be(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static size_t find(const unsigned char *d, size_t n, const char *s) {
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(d + i, s, k)) return i;
    fail_msg("\"%s\" not found", s);
    return 0;
}

/* ------------------------------------------------------------ PNM */

static void test_pnm(void **state) {
    (void)state;
    fv_image *img;
    /* good files: size, and up to four pixels (x, y, r, g, b) */
    static const struct {
        const char *d;
        size_t n;
        int w, h;
        int px[4][5];
    } good[] = {
        /* P6 with a comment */
        {"P6\n# a comment\n2 1\n255\n\x01\x02\x03\xfa\xfb\xfc",
         29,
         2,
         1,
         {{0, 0, 1, 2, 3}, {1, 0, 250, 251, 252}}},
        /* P5, maxval 15: round(v * 255 / 15) */
        {"P5 3 1 15\n\x00\x07\x0f",
         13,
         3,
         1,
         {{0, 0, 0, 0, 0}, {1, 0, 119, 119, 119}, {2, 0, 255, 255, 255}}},
        /* P5 and P6, 16-bit big-endian */
        {"P5\n3 1\n65535\n\x00\x00\x80\x00\xff\xff",
         19,
         3,
         1,
         {{1, 0, 128, 128, 128}, {2, 0, 255, 255, 255}}},
        {"P6 1 1 1000\n\x03\xe8\x01\xf4\x00\x00", 18, 1, 1, {{0, 0, 255, 128, 0}}},
        /* P3 and P2 (text), comments in the header, any whitespace */
        {"P3\n#c1\n2 #c2\n1\n# c3\n255\n 10 20 30\t\n40 50 60\n", 44, 2, 1, {{1, 0, 40, 50, 60}}},
        {"P2 2 2 65535 0 65535\n32768 257",
         30,
         2,
         2,
         {{1, 0, 255, 255, 255}, {0, 1, 128, 128, 128}, {1, 1, 1, 1, 1}}},
        /* P1 (1 is black, whitespace optional) and P4 (rows padded to bytes) */
        {"P1 3 2\n101\n0 1 0", 16, 3, 2, {{0, 0, 0, 0, 0}, {1, 0, 255, 255, 255}, {1, 1, 0, 0, 0}}},
        {"P4 10 2\n\x80\x40\xff\xc0",
         12,
         10,
         2,
         {{0, 0, 0, 0, 0}, {1, 0, 255, 255, 255}, {9, 0, 0, 0, 0}, {8, 0, 255, 255, 255}}},
        /* bytes after the raster are ignored (the next image of the file) */
        {"P5 1 1 255\n\x10P5 1 1 255\n\x20", 24, 1, 1, {{0, 0, 16, 16, 16}}},
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        if (decode(good[i].d, good[i].n, &img) != FV_OK) fail_msg("good case %zu", i);
        assert_int_equal(img->width, good[i].w);
        assert_int_equal(img->height, good[i].h);
        for (int k = 0; k < 4; k++) {
            const int *c = good[i].px[k];
            if (k && !c[0] && !c[1] && !c[2] && !c[3] && !c[4]) break; /* unused slot */
            assert_px(img, c[0], c[1], c[2], c[3], c[4], 0);
        }
        fv_image_destroy(img);
    }
    const char *p3 = good[4].d, *p6 = good[0].d;

    /* hostile; hdr: refused from the header, before any allocation */
    static const struct {
        const char *d;
        size_t n;
        fv_status want;
        int hdr;
    } bad[] = {
        {"P6 2 1 255\n\x01\x02\x03\x04\x05", 16, FV_E_IMAGE_CORRUPT, 1},   /* short raster */
        {"P5 1 1 100\n\x65", 12, FV_E_IMAGE_CORRUPT, 0},                   /* 101 > maxval */
        {"P2 2 1 10 3 11", 14, FV_E_IMAGE_CORRUPT, 0},                     /* 11 > maxval */
        {"P2 2 1 10 3", 11, FV_E_IMAGE_CORRUPT, 0},                        /* missing sample */
        {"P2 2 1 10 3 x", 13, FV_E_IMAGE_CORRUPT, 0},                      /* not a number */
        {"P3 1 1 255 1 2 99999999999", 26, FV_E_IMAGE_CORRUPT, 0},         /* overflow */
        {"P5 1 1 0\n\x00", 10, FV_E_IMAGE_CORRUPT, 1},                     /* maxval 0 */
        {"P5 1 1 65536\n\x00\x00", 15, FV_E_IMAGE_CORRUPT, 1},             /* maxval too big */
        {"P5 99999999999 1 255\n", 21, FV_E_IMAGE_CORRUPT, 1},             /* width overflow */
        {"P5 2147483648 1 255\n", 20, FV_E_IMAGE_CORRUPT, 1},              /* above int32 */
        {"P5 0 1 255\n", 11, FV_E_IMAGE_CORRUPT, 1},                       /* zero width */
        {"P5 1 1 255", 10, FV_E_IMAGE_CORRUPT, 1},                         /* no raster */
        {"P5 1 1 255x\x01", 12, FV_E_IMAGE_CORRUPT, 1},                    /* no whitespace */
        {"P1 2 1 1 2", 10, FV_E_IMAGE_CORRUPT, 0},                         /* bit 2 */
        {"P4 9 1\n\xff", 8, FV_E_IMAGE_CORRUPT, 1},                        /* 9 bits: 2 bytes */
        {"P5 #", 4, FV_E_IMAGE_CORRUPT, 1},                                /* comment to the end */
        {"P7\nWIDTH 1\n", 11, FV_E_IMAGE_FORMAT, 1},                       /* PAM */
        {"P6 60000 60000 255\n\x01\x02\x03", 22, FV_E_IMAGE_TOO_LARGE, 1}, /* 3.6 GP */
        {"P3 5000 5000 255\n1 2 3", 22, FV_E_IMAGE_CORRUPT, 1},            /* 25 MP, 3 samples */
        {"P6 5000 5000 65535\n\x01\x02\x03", 22, FV_E_IMAGE_CORRUPT, 1},   /* 25 MP, 3 bytes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (decode(bad[i].d, bad[i].n, &img) != bad[i].want) fail_msg("case %zu", i);
        if (bad[i].hdr) assert_refused_without_alloc(bad[i].d, bad[i].n, bad[i].want);
    }
    assert_oom_safe(p3, strlen(p3));
    assert_truncations((const unsigned char *)p6, good[0].n, good[0].n, 1);
}

/* ------------------------------------------------------------ GIF */

typedef struct {
    unsigned char *p;
    size_t n;
} mem_t;

static int mem_write(GifFileType *g, const GifByteType *d, int n) {
    mem_t *m = g->UserData;
    m->p = realloc(m->p, m->n + (size_t)n);
    assert_non_null(m->p);
    memcpy(m->p + m->n, d, (size_t)n);
    m->n += (size_t)n;
    return n;
}

/* A GIF: screen sw x sh (background index bg), then nframes frames of
 * fw x fh at (fx, fy), frame f's pixel (x, y) = idx[f][y * fw + x]; the
 * palette is colours[0..8); transparent index tr (-1: none). */
static unsigned char *make_gif(int sw, int sh, int bg, int nframes, int fx, int fy, int fw, int fh,
                               int interlace, const GifPixelType *const *idx, int tr, size_t *n) {
    static const GifColorType colours[8] = {{255, 0, 0},     {0, 255, 0},    {0, 0, 255},
                                            {255, 255, 255}, {10, 20, 30},   {40, 50, 60},
                                            {70, 80, 90},    {100, 110, 120}};
    mem_t m = {NULL, 0};
    int e;
    GifFileType *g = EGifOpen(&m, mem_write, &e);
    assert_non_null(g);
    EGifSetGifVersion(g, true);
    ColorMapObject *cm = GifMakeMapObject(8, colours);
    assert_int_equal(EGifPutScreenDesc(g, sw, sh, 8, bg, cm), GIF_OK);
    for (int f = 0; f < nframes; f++) {
        if (tr >= 0) {
            GraphicsControlBlock gcb = {0, false, 0, tr};
            GifByteType ext[4];
            size_t len = EGifGCBToExtension(&gcb, ext);
            assert_int_equal(EGifPutExtension(g, GRAPHICS_EXT_FUNC_CODE, (int)len, ext), GIF_OK);
        }
        assert_int_equal(EGifPutImageDesc(g, fx, fy, fw, fh, interlace, NULL), GIF_OK);
        static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
        for (int p = 0; p < (interlace ? 4 : 1); p++)
            for (int y = interlace ? start[p] : 0; y < fh; y += interlace ? step[p] : 1) {
                GifPixelType row[64];
                memcpy(row, idx[f] + y * fw, (size_t)fw);
                assert_int_equal(EGifPutLine(g, row, fw), GIF_OK);
            }
    }
    assert_int_equal(EGifCloseFile(g, &e), GIF_OK);
    GifFreeMapObject(cm);
    *n = m.n;
    return m.p;
}

static void test_gif(void **state) {
    (void)state;
    /* 6x5 screen, green background; a 3x2 frame at (2,1) with a
     * transparent index 3; a second frame (all blue) is never drawn. */
    static const GifPixelType f0[6] = {0, 3, 2, 2, 0, 3};
    static const GifPixelType f1[6] = {2, 2, 2, 2, 2, 2};
    const GifPixelType *frames[2] = {f0, f1};
    size_t n;
    unsigned char *d = make_gif(6, 5, 1, 2, 2, 1, 3, 2, 0, frames, 3, &n);
    fv_image *img;
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_int_equal(img->width, 6);
    assert_int_equal(img->height, 5);
    assert_px(img, 0, 0, 0, 255, 0, 0); /* background */
    assert_px(img, 5, 4, 0, 255, 0, 0);
    assert_px(img, 2, 1, 255, 0, 0, 0);
    assert_px(img, 3, 1, 0, 255, 0, 0); /* transparent: the background shows */
    assert_px(img, 4, 1, 0, 0, 255, 0);
    assert_px(img, 2, 2, 0, 0, 255, 0);
    assert_px(img, 3, 2, 255, 0, 0, 0);
    assert_px(img, 4, 2, 0, 255, 0, 0);
    fv_image_destroy(img);
    assert_oom_safe(d, n);
    /* every cut before the end of the first frame's data fails (the last
     * bytes are the second frame and the trailer, which are not read) */
    size_t second = 0; /* the second frame's control extension */
    for (size_t i = 13 + 24 + 8; i + 2 < n && !second; i++)
        if (d[i] == 0x21 && d[i + 1] == 0xF9 && d[i + 2] == 4) second = i;
    assert_true(second > 0);
    assert_truncations(d, n, second - 1, 1);
    /* lying screen sizes */
    unsigned char *lie = malloc(n);
    memcpy(lie, d, n);
    lie[6] = lie[8] = 0x60; /* 60000 x 60000 */
    lie[7] = lie[9] = 0xEA;
    assert_refused_without_alloc(lie, n, FV_E_IMAGE_TOO_LARGE);
    memcpy(lie, d, n);
    lie[6] = lie[7] = 0; /* zero width */
    assert_int_equal(decode(lie, n, &img), FV_E_IMAGE_CORRUPT);
    free(lie);
    free(d);

    /* interlaced, grey-ish rows: row y has index y % 8; the frame is
     * larger than the screen and clipped to it */
    GifPixelType rows[4 * 13];
    for (int y = 0; y < 13; y++) memset(rows + y * 4, y % 8, 4);
    const GifPixelType *one[1] = {rows};
    d = make_gif(3, 11, 0, 1, 0, 0, 4, 13, 1, one, -1, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_int_equal(img->width, 3);
    assert_int_equal(img->height, 11);
    static const int cr[8] = {255, 0, 0, 255, 10, 40, 70, 100};
    for (int y = 0; y < 11; y++) assert_int_equal(px(img, 2, y)[0], cr[y % 8]);
    fv_image_destroy(img);
    free(d);

    /* a frame placed beyond the screen: only the background */
    d = make_gif(3, 2, 2, 1, 100, 100, 4, 13, 0, one, -1, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_px(img, 2, 1, 0, 0, 255, 0);
    fv_image_destroy(img);
    /* no image at all */
    unsigned char hdr_only[13 + 24 + 1];
    memcpy(hdr_only, d, 13 + 24);
    hdr_only[13 + 24] = ';';
    assert_int_equal(decode(hdr_only, sizeof hdr_only, &img), FV_E_IMAGE_CORRUPT);
    free(d);
}

/* ------------------------------------------------------------ TIFF */

/* A TIFF written by libtiff: pages of w x h, spp samples of bps bits,
 * page k's samples from data[k] (8 bits) or scaled by 257 (16 bits). */
static unsigned char *make_tiff(int w, int h, int spp, int bps, int orient, int comp, int pages,
                                const unsigned char *const *data, size_t *n) {
    char path[25];
    tmp_file(path);
    TIFF *t = TIFFOpen(path, "w");
    assert_non_null(t);
    for (int k = 0; k < pages; k++) {
        TIFFSetField(t, TIFFTAG_IMAGEWIDTH, (uint32_t)w);
        TIFFSetField(t, TIFFTAG_IMAGELENGTH, (uint32_t)h);
        TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, (uint16_t)spp);
        TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, (uint16_t)bps);
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, spp >= 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK);
        TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
        TIFFSetField(t, TIFFTAG_ORIENTATION, (uint16_t)orient);
        TIFFSetField(t, TIFFTAG_COMPRESSION, (uint16_t)comp);
        /* several strips (JPEG needs a multiple of 8 rows) */
        TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, (uint32_t)(comp == COMPRESSION_JPEG ? 8 : 3));
        if (pages > 1) TIFFSetField(t, TIFFTAG_SUBFILETYPE, FILETYPE_PAGE);
        size_t row = (size_t)w * spp * (bps / 8);
        unsigned char *buf = malloc(row);
        for (int y = 0; y < h; y++) {
            for (size_t i = 0; i < (size_t)w * spp; i++) {
                unsigned v = data[k][(size_t)y * w * spp + i];
                if (bps == 16) {
                    uint16_t v16 = (uint16_t)(v * 257);
                    memcpy(buf + 2 * i, &v16, 2); /* native order, as libtiff expects */
                } else {
                    buf[i] = (unsigned char)v;
                }
            }
            assert_int_equal(TIFFWriteScanline(t, buf, (uint32_t)y, 0), 1);
        }
        free(buf);
        assert_int_equal(TIFFWriteDirectory(t), 1);
    }
    TIFFClose(t);
    return take_file(path, n);
}

/* A 40x40 RGB TIFF in 16x16 tiles (edge tiles partly outside), written
 * by libtiff; pixel (x, y) = (x * 6, y * 6, 100). */
static unsigned char *make_tiled_tiff(size_t *n) {
    char path[25];
    tmp_file(path);
    TIFF *t = TIFFOpen(path, "w");
    assert_non_null(t);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, 40u);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, 40u);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_ADOBE_DEFLATE);
    TIFFSetField(t, TIFFTAG_TILEWIDTH, 16u);
    TIFFSetField(t, TIFFTAG_TILELENGTH, 16u);
    unsigned char tile[16 * 16 * 3];
    for (uint32_t ty = 0; ty < 40; ty += 16)
        for (uint32_t tx = 0; tx < 40; tx += 16) {
            for (int y = 0; y < 16; y++)
                for (int x = 0; x < 16; x++) {
                    unsigned char *q = tile + (y * 16 + x) * 3;
                    q[0] = (unsigned char)((tx + x) * 6);
                    q[1] = (unsigned char)((ty + y) * 6);
                    q[2] = 100;
                }
            assert_true(TIFFWriteTile(t, tile, tx, ty, 0, 0) > 0);
        }
    TIFFClose(t);
    return take_file(path, n);
}

static void test_tiff_tiled(void **state) {
    (void)state;
    size_t n;
    unsigned char *d = make_tiled_tiff(&n);
    fv_image *img;
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_int_equal(img->width, 40);
    assert_int_equal(img->height, 40);
    for (int y = 0; y < 40; y++)
        for (int x = 0; x < 40; x++) assert_px(img, x, y, x * 6, y * 6, 100, 0);
    fv_image_destroy(img);
    assert_oom_safe(d, n);
    free(d);
}

static void test_tiff(void **state) {
    (void)state;
    unsigned char *p = pattern(24, 16);
    const unsigned char *pages[2] = {p, NULL};
    size_t n;
    fv_image *img;
    /* every orientation, as fvi_image_orient (the EXIF table) gives it */
    for (int o = 1; o <= 8; o++) {
        unsigned char *d = make_tiff(24, 16, 3, 8, o, COMPRESSION_NONE, 1, pages, &n);
        assert_int_equal(decode(d, n, &img), FV_OK);
        fv_image *want = oriented(p, 24, 16, o);
        assert_int_equal(img->width, want->width);
        assert_int_equal(img->height, want->height);
        assert_memory_equal(img->rgb, want->rgb, (size_t)want->width * want->height * 3);
        fv_image_destroy(want);
        if (o == 6) { /* rotate 90 clockwise: the stored bottom-left comes to the top-left */
            assert_int_equal(img->width, 16);
            assert_px(img, 0, 0, quad[2][0], quad[2][1], quad[2][2], 0);
        }
        fv_image_destroy(img);
        free(d);
    }
    /* compressions, 16-bit and grey: the same pixels */
    static const int comps[] = {COMPRESSION_LZW, COMPRESSION_ADOBE_DEFLATE, COMPRESSION_PACKBITS};
    for (size_t c = 0; c < 3; c++) {
        unsigned char *d = make_tiff(24, 16, 3, 8, 1, comps[c], 1, pages, &n);
        assert_int_equal(decode(d, n, &img), FV_OK);
        assert_memory_equal(img->rgb, p, 24 * 16 * 3);
        fv_image_destroy(img);
        free(d);
    }
    unsigned char *d = make_tiff(24, 16, 3, 16, 1, COMPRESSION_NONE, 1, pages, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_memory_equal(img->rgb, p, 24 * 16 * 3);
    fv_image_destroy(img);
    free(d);
    unsigned char grey[24 * 16];
    for (int i = 0; i < 24 * 16; i++) grey[i] = (unsigned char)i;
    const unsigned char *gp[1] = {grey};
    d = make_tiff(24, 16, 1, 8, 1, COMPRESSION_NONE, 1, gp, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_px(img, 5, 1, 29, 29, 29, 0);
    fv_image_destroy(img);
    free(d);
    /* JPEG-in-TIFF: near */
    d = make_tiff(24, 16, 3, 8, 1, COMPRESSION_JPEG, 1, pages, &n);
    if (d && decode(d, n, &img) == FV_OK) {
        assert_px(img, 3, 3, quad[0][0], quad[0][1], quad[0][2], 12);
        fv_image_destroy(img);
    }
    free(d);

    /* two pages: the first is used */
    unsigned char blue[24 * 16 * 3];
    for (int i = 0; i < 24 * 16; i++) memcpy(blue + 3 * i, "\x00\x00\xff", 3);
    const unsigned char *two[2] = {blue, p};
    d = make_tiff(24, 16, 3, 8, 1, COMPRESSION_NONE, 2, two, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_px(img, 20, 12, 0, 0, 255, 0);
    fv_image_destroy(img);
    assert_oom_safe(d, n);
    free(d);

    /* hostile: libtiff writes the directory after the data, so a cut
     * loses it; lying sizes; a strip offset past the end; an unsupported
     * compression */
    d = make_tiff(24, 16, 3, 8, 1, COMPRESSION_LZW, 1, pages, &n);
    assert_truncations(d, n, n, 3);
    uint32_t ifd;
    memcpy(&ifd, d + 4, 4); /* little-endian file on this machine */
    uint16_t count;
    memcpy(&count, d + ifd, 2);
    unsigned char *lie = malloc(n);
    int hits = 0; /* width, length, strip offsets, compression */
    for (unsigned e = 0; e < count; e++) {
        size_t at = ifd + 2 + 12 * (size_t)e;
        uint16_t tag, type;
        memcpy(&tag, d + at, 2);
        memcpy(&type, d + at + 2, 2);
        memcpy(lie, d, n);
        if (tag == TIFFTAG_IMAGEWIDTH || tag == TIFFTAG_IMAGELENGTH) {
            /* both 60000: refused from the tags */
            for (unsigned f = 0; f < count; f++) {
                size_t a2 = ifd + 2 + 12 * (size_t)f;
                uint16_t t2, ty2;
                memcpy(&t2, d + a2, 2);
                memcpy(&ty2, d + a2 + 2, 2);
                if (t2 == TIFFTAG_IMAGEWIDTH || t2 == TIFFTAG_IMAGELENGTH) {
                    uint32_t big = 60000;
                    if (ty2 == TIFF_SHORT) {
                        uint16_t b16 = 60000;
                        memcpy(lie + a2 + 8, &b16, 2);
                    } else {
                        memcpy(lie + a2 + 8, &big, 4);
                    }
                }
            }
            assert_refused_without_alloc(lie, n, FV_E_IMAGE_TOO_LARGE);
            hits++;
        } else if (tag == TIFFTAG_STRIPOFFSETS) {
            uint32_t off;
            memcpy(&off, d + at + 8, 4); /* several strips: an offset to the array */
            uint32_t far = 0x7ffffff0u;
            memcpy(lie + off + 4, &far, 4); /* the second strip */
            assert_int_equal(decode(lie, n, &img), FV_E_IMAGE_CORRUPT);
            hits++;
        } else if (tag == TIFFTAG_COMPRESSION) {
            uint16_t jp2 = 34712;
            memcpy(lie + at + 8, &jp2, 2);
            assert_int_equal(decode(lie, n, &img), FV_E_IMAGE_FORMAT);
            hits++;
        }
    }
    assert_int_equal(hits, 4);
    free(lie);
    free(d);
    free(p);
}

/* ------------------------------------------------------------ HEIF / AVIF */

/* w x h pixels p encoded by libheif (HEVC or AV1) with orientation o. */
static unsigned char *make_heif(const unsigned char *p, int w, int h, int av1, int o, size_t *n) {
    struct heif_context *ctx = heif_context_alloc();
    struct heif_encoder *enc = NULL;
    assert_int_equal(heif_context_get_encoder_for_format(
                         ctx, av1 ? heif_compression_AV1 : heif_compression_HEVC, &enc)
                         .code,
                     heif_error_Ok);
    heif_encoder_set_lossy_quality(enc, 95);
    struct heif_image *img = NULL;
    assert_int_equal(
        heif_image_create(w, h, heif_colorspace_RGB, heif_chroma_interleaved_RGB, &img).code,
        heif_error_Ok);
    assert_int_equal(heif_image_add_plane(img, heif_channel_interleaved, w, h, 8).code,
                     heif_error_Ok);
    int stride;
    uint8_t *q = heif_image_get_plane(img, heif_channel_interleaved, &stride);
    for (int y = 0; y < h; y++)
        memcpy(q + (size_t)y * stride, p + (size_t)y * w * 3, (size_t)w * 3);
    struct heif_encoding_options *opt = heif_encoding_options_alloc();
    opt->image_orientation = (enum heif_orientation)o;
    assert_int_equal(heif_context_encode_image(ctx, img, enc, opt, NULL).code, heif_error_Ok);
    char path[25];
    tmp_file(path);
    assert_int_equal(heif_context_write_to_file(ctx, path).code, heif_error_Ok);
    heif_encoding_options_free(opt);
    heif_image_release(img);
    heif_encoder_release(enc);
    heif_context_free(ctx);
    return take_file(path, n);
}

static void test_heif(void **state) {
    (void)state;
    heif_init(NULL);
    enum { W = 64, H = 32 };
    unsigned char *p = pattern(W, H);
    for (int av1 = 0; av1 < 2; av1++) {
        for (int o = 1; o <= 8; o++) {
            if (av1 && o != 1 && o != 2 && o != 6) continue; /* AV1 encoding is slow */
            size_t n;
            unsigned char *d = make_heif(p, W, H, av1, o, &n);
            fv_image *img;
            assert_int_equal(decode(d, n, &img), FV_OK);
            fv_image *want = oriented(p, W, H, o);
            assert_int_equal(img->width, want->width);
            assert_int_equal(img->height, want->height);
            /* the centre of each quadrant, lossy: near */
            for (int q = 0; q < 4; q++) {
                int x = q % 2 ? want->width * 3 / 4 : want->width / 4;
                int y = q / 2 ? want->height * 3 / 4 : want->height / 4;
                const unsigned char *c = px(want, x, y);
                assert_px(img, x, y, c[0], c[1], c[2], 16);
            }
            fv_image_destroy(want);
            fv_image_destroy(img);
            if (o == 1 && !av1) {
                assert_oom_safe(d, n);
                assert_truncations(d, n, n, 7);
                /* ispe claiming 60000 x 60000 */
                size_t at = find(d, n, "ispe");
                unsigned char *lie = malloc(n);
                memcpy(lie, d, n);
                put_be(lie + at + 8, 60000);
                put_be(lie + at + 12, 60000);
                assert_refused_without_alloc(lie, n, FV_E_IMAGE_TOO_LARGE);
                /* 6000 x 6000 (36 MP, within the limit) on 64 x 32 of data */
                put_be(lie + at + 8, 6000);
                put_be(lie + at + 12, 6000);
                /* libheif crops the coded 64 x 64 by the clap box relative
                 * to ispe: a small image, or an error, never 6000 x 6000 */
                fv_status st6 = decode(lie, n, &img);
                assert_true(st6 == FV_E_IMAGE_CORRUPT ||
                            (st6 == FV_OK && img->width <= 64 && img->height <= 64));
                fv_image_destroy(img);
                /* the iloc extent pointing past the end */
                memcpy(lie, d, n);
                size_t il = find(d, n, "iloc");
                for (size_t i = il; i < il + 40 && i < n; i++) lie[i] = 0xff;
                fv_status st = decode(lie, n, &img);
                assert_true(st == FV_E_IMAGE_CORRUPT || st == FV_E_IMAGE_FORMAT);
                free(lie);
            }
            free(d);
        }
    }
    free(p);
    /* ftyp of a video (MP4) is refused by name, not handed to libheif */
    static const unsigned char mp4[] = "\0\0\0\x18"
                                       "ftypisom\0\0\0\0isommp41";
    char err[256];
    fv_image *img;
    assert_int_equal(fv_image_decode(mp4, sizeof mp4 - 1, NULL, &img, err, sizeof err),
                     FV_E_IMAGE_FORMAT);
    assert_non_null(strstr(err, "MP4"));
    /* a generic major brand with heic among the compatible ones is HEIF */
    static const unsigned char mif[] = "\0\0\0\x18"
                                       "ftypisom\0\0\0\0mp41heic";
    assert_int_equal(fv_image_decode(mif, sizeof mif - 1, NULL, &img, err, sizeof err),
                     FV_E_IMAGE_CORRUPT);
    assert_non_null(strstr(err, "heif"));
    heif_deinit();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pnm),        cmocka_unit_test(test_gif),  cmocka_unit_test(test_tiff),
        cmocka_unit_test(test_tiff_tiled), cmocka_unit_test(test_heif),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_image.c: tests of the image module (bytes -> fv_image).
 *
 * Most inputs are made here with the real encoders (libjpeg, libpng,
 * libwebp) or by hand (BMP, animated WebP, hostile headers), so each test
 * knows the exact colours and geometry to expect.  Real photos from the
 * data folder are checked against values read with Pillow (which decodes
 * these files bit-identically with libjpeg-turbo; we allow +-2 for JPEG).
 * Data tests skip when the folder is absent, unless FACEVERIFY_REQUIRE_DATA=1.
 *
 * Hostile inputs (truncated, random, mutated, oversized headers) must give
 * a typed status quickly and, under ASan, touch nothing out of bounds.
 * Out-of-memory injection walks every allocation of each decode path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>
#include <webp/encode.h>

#include "faceverify.h"
#include "core/fvi.h"
#include "image/image.h"

/* ------------------------------------------------------------ helpers */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf_t;

static void buf_put(buf_t *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_le32(buf_t *b, uint32_t v) {
    unsigned char q[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    buf_put(b, q, 4);
}
static void put_le24(buf_t *b, uint32_t v) {
    unsigned char q[3] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16)};
    buf_put(b, q, 3);
}
static void put_le16(buf_t *b, unsigned v) {
    unsigned char q[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    buf_put(b, q, 2);
}
static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Deterministic xorshift so failures reproduce. */
static uint32_t rng_state = 0x12345678u;
static uint32_t rnd(void) {
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

static fv_status decode(const void *d, size_t n, fv_image **img) {
    char err[256];
    *img = NULL;
    fv_status st = fv_image_decode(d, n, NULL, img, err, sizeof err);
    if (st == FV_OK) {
        assert_non_null(*img);
        assert_string_equal(err, "");
    } else {
        assert_null(*img);
        assert_true(strlen(err) > 0); /* every failure explains itself */
    }
    return st;
}

static const unsigned char *px(const fv_image *img, int x, int y) {
    return img->rgb + ((size_t)y * (size_t)img->width + (size_t)x) * 3;
}

static void assert_px_near(const fv_image *img, int x, int y, int r, int g, int b, int tol) {
    const unsigned char *p = px(img, x, y);
    if (abs(p[0] - r) > tol || abs(p[1] - g) > tol || abs(p[2] - b) > tol)
        fail_msg("pixel (%d,%d) = (%d,%d,%d), expected (%d,%d,%d) +-%d", x, y, p[0], p[1], p[2], r,
                 g, b, tol);
}

/* ------------------------------------------------------------ encoders */

/* JPEG of w x h pixels with comps components in colour space cs, 4:4:4,
 * optionally with an EXIF APP1 orientation tag (orient > 0; big-endian
 * TIFF unless little).  Returns malloc'd bytes. */
static int no_adobe_marker; /* test knob: make_jpeg_ex omits APP14 */
static int progressive;     /* test knob: make_jpeg_ex writes progressive */

static unsigned char *make_jpeg_ex(const unsigned char *pix, int w, int h, int comps,
                                   J_COLOR_SPACE cs, J_COLOR_SPACE jcs, int quality, int orient,
                                   int little, size_t *len) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr je;
    unsigned char *out = NULL;
    unsigned long outlen = 0;
    c.err = jpeg_std_error(&je);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &out, &outlen);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = cs;
    jpeg_set_defaults(&c);
    if (jcs != cs) jpeg_set_colorspace(&c, jcs);
    jpeg_set_quality(&c, quality, TRUE);
    if (no_adobe_marker) c.write_Adobe_marker = FALSE;
    if (progressive) jpeg_simple_progression(&c);
    for (int i = 0; i < c.num_components; i++)
        c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    jpeg_start_compress(&c, TRUE);
    if (orient > 0) {
        unsigned char e[6 + 8 + 2 + 12 + 4] = "Exif\0\0";
        unsigned char *t = e + 6;
        if (little) {
            memcpy(t, "II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0", 18);
            t[18] = (unsigned char)orient;
        } else {
            memcpy(t, "MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01", 18);
            t[19] = (unsigned char)orient;
        }
        jpeg_write_marker(&c, JPEG_APP0 + 1, e, sizeof e);
    }
    const size_t stride = (size_t)w * (size_t)comps;
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(pix + c.next_scanline * stride);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *len = outlen;
    return out;
}

static unsigned char *make_jpeg(const unsigned char *pix, int w, int h, int comps, J_COLOR_SPACE cs,
                                int orient, size_t *len) {
    return make_jpeg_ex(pix, w, h, comps, cs, cs, 100, orient, 0, len);
}

static void png_wr(png_structp png, png_bytep d, png_size_t n) {
    buf_put(png_get_io_ptr(png), d, n);
}
static void png_fl(png_structp png) {
    (void)png;
}

/* PNG from packed rows (rowbytes per row, already in PNG sample layout);
 * pix NULL writes zero rows (for the bomb).  Returns malloc'd bytes. */
static unsigned char *make_png(int w, int h, int depth, int color, int interlace,
                               const unsigned char *pix, size_t rowbytes, const png_color *pal,
                               int npal, const unsigned char *trns, int ntrns, int level,
                               size_t *len) {
    buf_t b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    unsigned char *zero = calloc(1, rowbytes);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng encoder failed");
    png_set_write_fn(png, &b, png_wr, png_fl);
    png_set_compression_level(png, level);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    if (trns) png_set_tRNS(png, info, trns, ntrns, NULL);
    png_write_info(png, info);
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < h; y++) png_write_row(png, pix ? pix + (size_t)y * rowbytes : zero);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(zero);
    *len = b.n;
    return b.p;
}

/* 24 x 16 RGB pattern of six 8x8 solid blocks, all different colours, so
 * any flip or rotation is visible; block (bx, by) has colour blk[by][bx]. */
static const unsigned char blk[2][3][3] = {
    {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}},
    {{255, 255, 0}, {0, 255, 255}, {255, 0, 255}},
};
static unsigned char *pattern24x16(void) {
    unsigned char *p = malloc(24 * 16 * 3);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 24; x++) memcpy(p + (y * 24 + x) * 3, blk[y / 8][x / 8], 3);
    return p;
}

static unsigned char *make_bmp(int w, int h, int bpp, int top_down, size_t *len) {
    buf_t b = {0};
    size_t stride = ((size_t)w * (size_t)bpp + 31) / 32 * 4;
    int npal = bpp == 8 ? 4 : 0;
    uint32_t off = 14 + 40 + 4 * (uint32_t)npal;
    buf_put(&b, "BM", 2);
    put_le32(&b, off + (uint32_t)(stride * (size_t)h));
    put_le32(&b, 0);
    put_le32(&b, off);
    put_le32(&b, 40);
    put_le32(&b, (uint32_t)w);
    put_le32(&b, (uint32_t)(top_down ? -h : h));
    put_le16(&b, 1);
    put_le16(&b, (unsigned)bpp);
    put_le32(&b, 0);
    put_le32(&b, (uint32_t)(stride * (size_t)h));
    put_le32(&b, 2835);
    put_le32(&b, 2835);
    put_le32(&b, (uint32_t)npal);
    put_le32(&b, 0);
    for (int i = 0; i < npal; i++) { /* BGRX: red, green, blue, white */
        static const unsigned char pal[4][4] = {
            {0, 0, 255, 0}, {0, 255, 0, 0}, {255, 0, 0, 0}, {255, 255, 255, 0}};
        buf_put(&b, pal[i], 4);
    }
    unsigned char *row = calloc(1, stride);
    for (int r = 0; r < h; r++) {
        int y = top_down ? r : h - 1 - r; /* image row stored at file row r */
        memset(row, 0, stride);
        for (int x = 0; x < w; x++) {
            /* image pixel (x, y): red on the left half, blue on the right,
             * green on the top row. */
            int c = y == 0 ? 1 : (x < w / 2 ? 0 : 2);
            if (bpp == 8) {
                row[x] = (unsigned char)c;
            } else {
                unsigned char *q = row + (size_t)x * (size_t)(bpp / 8);
                q[0] = c == 2 ? 255 : 0;
                q[1] = c == 1 ? 255 : 0;
                q[2] = c == 0 ? 255 : 0;
                if (bpp == 32) q[3] = 77;
            }
        }
        buf_put(&b, row, stride);
    }
    free(row);
    *len = b.n;
    return b.p;
}

static void check_bmp_pattern(const fv_image *img, int w, int h) {
    assert_int_equal(img->width, w);
    assert_int_equal(img->height, h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            if (y == 0)
                assert_px_near(img, x, y, 0, 255, 0, 0);
            else if (x < w / 2)
                assert_px_near(img, x, y, 255, 0, 0, 0);
            else
                assert_px_near(img, x, y, 0, 0, 255, 0);
        }
}

static void put_chunk(buf_t *b, const char *fourcc, const unsigned char *d, size_t n) {
    buf_put(b, fourcc, 4);
    put_le32(b, (uint32_t)n);
    buf_put(b, d, n);
    if (n & 1) buf_put(b, "", 1);
}

/* Animated WebP by hand (RIFF/VP8X/ANIM/ANMF x2), each frame a lossless
 * still of colour c[i] covering the w x h canvas. */
static unsigned char *make_anim_webp(int w, int h, const unsigned char c[2][3], size_t *len) {
    buf_t body = {0};
    buf_put(&body, "WEBP", 4);
    buf_t v = {0};
    unsigned char flags = 0x02;
    buf_put(&v, &flags, 1);
    put_le24(&v, 0);
    put_le24(&v, (uint32_t)(w - 1));
    put_le24(&v, (uint32_t)(h - 1));
    put_chunk(&body, "VP8X", v.p, v.n);
    unsigned char anim[6] = {0, 0, 0, 0, 0, 0};
    put_chunk(&body, "ANIM", anim, 6);
    unsigned char *pix = malloc((size_t)w * (size_t)h * 3);
    for (int f = 0; f < 2; f++) {
        for (int i = 0; i < w * h; i++) memcpy(pix + i * 3, c[f], 3);
        uint8_t *enc = NULL;
        size_t n = WebPEncodeLosslessRGB(pix, w, h, w * 3, &enc);
        assert_true(n > 20 && memcmp(enc + 12, "VP8L", 4) == 0);
        buf_t fr = {0};
        put_le24(&fr, 0);
        put_le24(&fr, 0);
        put_le24(&fr, (uint32_t)(w - 1));
        put_le24(&fr, (uint32_t)(h - 1));
        put_le24(&fr, 100);
        unsigned char fl = 0x02; /* do not blend */
        buf_put(&fr, &fl, 1);
        buf_put(&fr, enc + 12, n - 12); /* the VP8L chunk, header included */
        put_chunk(&body, "ANMF", fr.p, fr.n);
        free(fr.p);
        WebPFree(enc);
    }
    free(pix);
    buf_t out = {0};
    buf_put(&out, "RIFF", 4);
    put_le32(&out, (uint32_t)body.n);
    buf_put(&out, body.p, body.n);
    free(body.p);
    free(v.p);
    *len = out.n;
    return out.p;
}

/* ------------------------------------------------------------ data dir */

static const char *data_root(char *buf, size_t n) {
    const char *e = getenv("FACEVERIFY_DATA");
    if (e && *e) return e;
    const char *src = getenv("FACEVERIFY_SOURCE");
    if (src && *src) {
        snprintf(buf, n, "%s/../shared/data", src);
        return buf;
    }
    /* __FILE__ is <repo>/tests/c/test_image.c in a CMake build. */
    snprintf(buf, n, "%s", __FILE__);
    char *s = strstr(buf, "/tests/c/");
    if (!s) return "../shared/data";
    snprintf(s, n - (size_t)(s - buf), "/../shared/data");
    return buf;
}

/* Skips (or fails under FACEVERIFY_REQUIRE_DATA=1) when the data folder is
 * missing; else writes the root into buf. */
static void need_data(char *buf, size_t n) {
    char tmp[1024];
    const char *r = data_root(tmp, sizeof tmp);
    struct stat sb;
    if (stat(r, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        const char *req = getenv("FACEVERIFY_REQUIRE_DATA");
        if (req && strcmp(req, "1") == 0) fail_msg("data folder %s missing", r);
        print_message("skipping: data folder %s missing\n", r);
        skip();
    }
    snprintf(buf, n, "%s", r);
}

/* ------------------------------------------------------------ tests */

static void test_limits_and_basics(void **state) {
    (void)state;
    fv_limits l;
    fv_limits_init(&l);
    assert_int_equal(l.max_input_bytes, (size_t)10 * 1000 * 1000);
    assert_true(l.max_pixels == (uint64_t)40 * 1000 * 1000);
    fv_limits_init(NULL);
    fv_image_destroy(NULL);

    unsigned char rgb[2 * 3 * 3];
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (unsigned char)i;
    fv_image *img = NULL;
    assert_int_equal(fv_image_from_rgb(rgb, 3, 2, &img), FV_OK);
    assert_int_equal(img->width, 3);
    assert_int_equal(img->height, 2);
    assert_memory_equal(img->rgb, rgb, sizeof rgb);
    assert_ptr_not_equal(img->rgb, rgb);
    fv_image_destroy(img);
    assert_int_equal(fv_image_from_rgb(NULL, 3, 2, &img), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fv_image_from_rgb(rgb, 0, 2, &img), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fv_image_from_rgb(rgb, 3, -1, &img), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fv_image_from_rgb(rgb, 3, 2, NULL), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_image_alloc(0x7fffffff, 0x7fffffff, &img) == FV_OK, 0);

    char err[64];
    assert_int_equal(fv_image_decode(NULL, 5, NULL, &img, err, sizeof err), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fv_image_decode(rgb, 5, NULL, NULL, err, sizeof err), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fv_image_load(NULL, NULL, &img, err, sizeof err), FV_E_INVALID_ARGUMENT);
    /* No error buffer is fine too. */
    assert_int_equal(fv_image_decode(rgb, 0, NULL, &img, NULL, 0), FV_E_IMAGE_FORMAT);
}

typedef struct {
    int x, y;
    unsigned char rgb[3];
} ref_px;
typedef struct {
    const char *path;
    int w, h;
    ref_px p[4];
} ref_img;

/* Values read with Pillow 11 (Image.open(f).convert("RGB")). */
static const ref_img refs[] = {
    {"lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
     250,
     250,
     {{0, 0, {0, 0, 0}},
      {125, 125, {225, 165, 141}},
      {249, 249, {0, 0, 0}},
      {83, 166, {174, 168, 182}}}},
    {"samples/openface/clapton-1.jpg",
     624,
     420,
     {{0, 0, {158, 176, 178}},
      {312, 210, {76, 55, 50}},
      {623, 419, {131, 150, 154}},
      {208, 280, {42, 32, 33}}}},
    {"samples/facenet_pytorch/paul_rudd.jpg",
     819,
     1024,
     {{0, 0, {197, 193, 192}},
      {409, 512, {234, 194, 159}},
      {818, 1023, {0, 0, 0}},
      {273, 682, {228, 180, 142}}}},
    {"samples/skimage/astronaut.jpg",
     512,
     512,
     {{0, 0, {155, 149, 161}},
      {256, 256, {18, 14, 5}},
      {511, 511, {1, 0, 0}},
      {170, 341, {224, 114, 79}}}},
    {"samples/facenet_pytorch/multiface.jpg",
     1200,
     630,
     {{0, 0, {77, 67, 57}},
      {600, 315, {171, 77, 91}},
      {1199, 629, {101, 101, 101}},
      {400, 420, {234, 213, 194}}}},
    {"samples/openface_aligned/adams.png",
     96,
     96,
     {{0, 0, {86, 61, 53}},
      {48, 48, {56, 27, 27}},
      {95, 95, {38, 10, 11}},
      {32, 64, {55, 11, 19}}}},
    {"samples/skimage/chelsea.png",
     451,
     300,
     {{0, 0, {143, 120, 104}},
      {225, 150, {190, 150, 124}},
      {450, 299, {162, 138, 128}},
      {150, 200, {162, 116, 83}}}},
    {"samples/skimage/coffee.png",
     600,
     400,
     {{0, 0, {21, 13, 8}},
      {300, 200, {248, 250, 255}},
      {599, 399, {143, 60, 29}},
      {200, 266, {145, 32, 8}}}},
};

static void test_sample_photos(void **state) {
    (void)state;
    char root[1024], path[2048], err[256];
    need_data(root, sizeof root);
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        const ref_img *r = &refs[i];
        snprintf(path, sizeof path, "%s/%s", root, r->path);
        fv_image *img = NULL;
        fv_status st = fv_image_load(path, NULL, &img, err, sizeof err);
        if (st != FV_OK) fail_msg("%s: %s", path, err);
        assert_int_equal(img->width, r->w);
        assert_int_equal(img->height, r->h);
        int tol = strstr(r->path, ".png") ? 0 : 2;
        for (int k = 0; k < 4; k++)
            assert_px_near(img, r->p[k].x, r->p[k].y, r->p[k].rgb[0], r->p[k].rgb[1],
                           r->p[k].rgb[2], tol);
        fv_image_destroy(img);
    }
    /* More shapes, dimensions only. */
    static const struct {
        const char *p;
        int w, h;
    } dims[] = {{"samples/derived/carell_rot90.jpg", 891, 601},
                {"samples/derived/lennon-1_small_in_1280x960.jpg", 1280, 960},
                {"samples/facenet_pytorch/kate_siegel.jpg", 715, 1024},
                {"samples/openface/adams.jpg", 800, 1061},
                {"samples/openface/longoria-cooper.jpg", 293, 473},
                {"samples/facenet_pytorch_aligned/bradley_cooper.png", 160, 160},
                {"lfw/Eric_Clapton/Eric_Clapton_0002.jpg", 250, 250},
                {"lfw/John_Lennon/John_Lennon_0001.jpg", 250, 250}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", root, dims[i].p);
        fv_image *img = NULL;
        fv_status st = fv_image_load(path, NULL, &img, err, sizeof err);
        if (st != FV_OK) fail_msg("%s: %s", path, err);
        assert_int_equal(img->width, dims[i].w);
        assert_int_equal(img->height, dims[i].h);
        fv_image_destroy(img);
    }
}

static void test_jpeg_gray_and_rgb(void **state) {
    (void)state;
    unsigned char g[16 * 8];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 16; x++) g[y * 16 + x] = x < 8 ? 40 : 200;
    size_t n;
    unsigned char *j = make_jpeg(g, 16, 8, 1, JCS_GRAYSCALE, 0, &n);
    fv_image *img;
    assert_int_equal(decode(j, n, &img), FV_OK);
    assert_int_equal(img->width, 16);
    assert_int_equal(img->height, 8);
    assert_px_near(img, 3, 3, 40, 40, 40, 2);
    assert_px_near(img, 12, 4, 200, 200, 200, 2);
    fv_image_destroy(img);
    free(j);

    unsigned char *p = pattern24x16();
    j = make_jpeg(p, 24, 16, 3, JCS_RGB, 0, &n);
    assert_int_equal(decode(j, n, &img), FV_OK);
    for (int by = 0; by < 2; by++)
        for (int bx = 0; bx < 3; bx++)
            assert_px_near(img, bx * 8 + 4, by * 8 + 4, blk[by][bx][0], blk[by][bx][1],
                           blk[by][bx][2], 3);
    fv_image_destroy(img);
    free(j);
    free(p);
}

static void test_jpeg_cmyk_ycck(void **state) {
    (void)state;
    /* Adobe (inverted) CMYK, which libjpeg's writer marks with APP14:
     * stored value = 255 - ink.  Four 8x8 blocks: red, green, blue, white,
     * then a 50% grey made with K only. */
    static const unsigned char ink[5][4] = {
        {0, 255, 255, 0}, {255, 0, 255, 0}, {255, 255, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 128}};
    static const unsigned char want[5][3] = {
        {255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 255}, {127, 127, 127}};
    unsigned char pix[40 * 8 * 4];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 40; x++)
            for (int c = 0; c < 4; c++)
                pix[(y * 40 + x) * 4 + c] = (unsigned char)(255 - ink[x / 8][c]);
    for (int ycck = 0; ycck < 2; ycck++) {
        size_t n;
        unsigned char *j =
            make_jpeg_ex(pix, 40, 8, 4, JCS_CMYK, ycck ? JCS_YCCK : JCS_CMYK, 100, 0, 0, &n);
        fv_image *img;
        assert_int_equal(decode(j, n, &img), FV_OK);
        assert_int_equal(img->width, 40);
        for (int b = 0; b < 5; b++)
            assert_px_near(img, b * 8 + 4, 4, want[b][0], want[b][1], want[b][2], 4);
        fv_image_destroy(img);
        free(j);
    }
    /* Without the Adobe marker the values are plain (not inverted) CMYK. */
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 40; x++)
            for (int c = 0; c < 4; c++) pix[(y * 40 + x) * 4 + c] = ink[x / 8][c];
    no_adobe_marker = 1;
    size_t n;
    unsigned char *j = make_jpeg_ex(pix, 40, 8, 4, JCS_CMYK, JCS_CMYK, 100, 0, 0, &n);
    no_adobe_marker = 0;
    fv_image *img;
    assert_int_equal(decode(j, n, &img), FV_OK);
    for (int b = 0; b < 5; b++)
        assert_px_near(img, b * 8 + 4, 4, want[b][0], want[b][1], want[b][2], 4);
    fv_image_destroy(img);
    free(j);
}

/* Where the stored corner blocks must land for each orientation: visual
 * corner index 0 TL, 1 TR, 2 BL, 3 BR (EXIF: the 0th row / 0th column). */
static void test_exif_orientations(void **state) {
    (void)state;
    /* stored TL block, stored TR block, stored BL block */
    static const int tl[9] = {0, 0, 1, 3, 2, 0, 1, 3, 2};
    static const int tr[9] = {0, 1, 0, 2, 3, 2, 3, 1, 0};
    static const int bl[9] = {0, 2, 3, 1, 0, 1, 0, 2, 3};
    unsigned char *p = pattern24x16();
    for (int o = 1; o <= 8; o++) {
        for (int little = 0; little < 2; little++) {
            size_t n;
            unsigned char *j = make_jpeg_ex(p, 24, 16, 3, JCS_RGB, JCS_RGB, 100, o, little, &n);
            fv_image *img;
            assert_int_equal(decode(j, n, &img), FV_OK);
            int W = o >= 5 ? 16 : 24, H = o >= 5 ? 24 : 16;
            assert_int_equal(img->width, W);
            assert_int_equal(img->height, H);
            const int cx[4] = {4, W - 5, 4, W - 5}, cy[4] = {4, 4, H - 5, H - 5};
            const unsigned char *c;
            c = blk[0][0];
            assert_px_near(img, cx[tl[o]], cy[tl[o]], c[0], c[1], c[2], 3);
            c = blk[0][2];
            assert_px_near(img, cx[tr[o]], cy[tr[o]], c[0], c[1], c[2], 3);
            c = blk[1][0];
            assert_px_near(img, cx[bl[o]], cy[bl[o]], c[0], c[1], c[2], 3);
            fv_image_destroy(img);
            free(j);
        }
    }
    free(p);

    /* The parser alone, on malformed payloads: never out of bounds. */
    unsigned char e[6 + 8 + 2 + 12 + 4];
    memcpy(e, "Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0", sizeof e);
    assert_int_equal(fvi_exif_orientation(e, sizeof e), 6);
    for (size_t cut = 0; cut < sizeof e; cut++) {
        int o = fvi_exif_orientation(e, cut);
        assert_true(o == 1 || (o == 6 && cut >= 6 + 8 + 2 + 12));
    }
    unsigned char bad[sizeof e];
    memcpy(bad, e, sizeof e);
    bad[6 + 7] = 0xF0; /* IFD offset past the end */
    assert_int_equal(fvi_exif_orientation(bad, sizeof bad), 1);
    memcpy(bad, e, sizeof e);
    bad[6 + 8] = 0xFF; /* 65281 entries, the first not the tag */
    bad[6 + 10] = 0x02;
    assert_int_equal(fvi_exif_orientation(bad, sizeof bad), 1);
    memcpy(bad, e, sizeof e);
    bad[6 + 8 + 2 + 9] = 9; /* value 9: out of range */
    assert_int_equal(fvi_exif_orientation(bad, sizeof bad), 1);
    assert_int_equal(fvi_exif_orientation(NULL, 40), 1);
}

/* fvi_image_oriented: a turned copy, the source left as it was; the same
 * pixels as turning in place (fvi_image_orient); 1 is a plain copy. */
static void test_oriented_copy(void **state) {
    (void)state;
    unsigned char rgb[5 * 3 * 3];
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (unsigned char)(i * 7 + 1);
    fv_image *src = NULL;
    assert_int_equal(fv_image_from_rgb(rgb, 5, 3, &src), FV_OK);
    for (int o = 1; o <= 8; o++) {
        fv_image *copy = NULL, *inplace = NULL;
        assert_int_equal(fvi_image_oriented(src, o, &copy), FV_OK);
        assert_memory_equal(src->rgb, rgb, sizeof rgb);
        assert_int_equal(fv_image_from_rgb(rgb, 5, 3, &inplace), FV_OK);
        assert_int_equal(fvi_image_orient(&inplace, o), FV_OK);
        assert_int_equal(copy->width, inplace->width);
        assert_int_equal(copy->height, inplace->height);
        assert_int_equal(copy->width, o >= 5 ? 3 : 5);
        assert_memory_equal(copy->rgb, inplace->rgb, sizeof rgb);
        if (o == 1) assert_ptr_not_equal(copy->rgb, src->rgb);
        /* 6: turned 90 degrees clockwise, the bottom-left pixel first */
        if (o == 6) assert_memory_equal(copy->rgb, rgb + 2 * 5 * 3, 3);
        fv_image_destroy(copy);
        fv_image_destroy(inplace);
    }
    fv_image *out = NULL;
    assert_int_equal(fvi_image_oriented(src, 0, &out), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_image_oriented(src, 9, &out), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_image_oriented(NULL, 1, &out), FV_E_INVALID_ARGUMENT);
    assert_null(out);
    fv_image_destroy(src);
}

static void test_png_variants(void **state) {
    (void)state;
    fv_image *img;
    size_t n;
    unsigned char *d;
    /* gray 8 */
    unsigned char g8[4 * 2] = {0, 50, 100, 255, 1, 2, 3, 4};
    d = make_png(4, 2, 8, PNG_COLOR_TYPE_GRAY, 0, g8, 4, NULL, 0, NULL, 0, 6, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    for (int i = 0; i < 8; i++) assert_px_near(img, i % 4, i / 4, g8[i], g8[i], g8[i], 0);
    fv_image_destroy(img);
    free(d);
    /* gray 1-bit: 10110000 */
    unsigned char g1[1] = {0xB0};
    d = make_png(4, 1, 1, PNG_COLOR_TYPE_GRAY, 0, g1, 1, NULL, 0, NULL, 0, 6, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    static const int bits[4] = {255, 0, 255, 255};
    for (int x = 0; x < 4; x++) assert_px_near(img, x, 0, bits[x], bits[x], bits[x], 0);
    fv_image_destroy(img);
    free(d);
    /* gray + alpha: alpha dropped, gray kept */
    unsigned char ga[2 * 2] = {10, 0, 200, 128};
    d = make_png(2, 1, 8, PNG_COLOR_TYPE_GRAY_ALPHA, 0, ga, 4, NULL, 0, NULL, 0, 6, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_px_near(img, 0, 0, 10, 10, 10, 0);
    assert_px_near(img, 1, 0, 200, 200, 200, 0);
    fv_image_destroy(img);
    free(d);
    /* RGBA: alpha dropped */
    unsigned char rgba[2 * 4] = {1, 2, 3, 0, 250, 100, 50, 255};
    d = make_png(2, 1, 8, PNG_COLOR_TYPE_RGBA, 0, rgba, 8, NULL, 0, NULL, 0, 6, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_px_near(img, 0, 0, 1, 2, 3, 0);
    assert_px_near(img, 1, 0, 250, 100, 50, 0);
    fv_image_destroy(img);
    free(d);
    /* palette with tRNS: colours as in the palette */
    png_color pal[3] = {{255, 0, 0}, {0, 128, 0}, {10, 20, 30}};
    unsigned char trns[3] = {0, 128, 255};
    unsigned char idx[3] = {2, 0, 1};
    d = make_png(3, 1, 8, PNG_COLOR_TYPE_PALETTE, 0, idx, 3, pal, 3, trns, 3, 6, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_px_near(img, 0, 0, 10, 20, 30, 0);
    assert_px_near(img, 1, 0, 255, 0, 0, 0);
    assert_px_near(img, 2, 0, 0, 128, 0, 0);
    fv_image_destroy(img);
    free(d);
    /* 2-bit gray with tRNS (no alpha appears for gray) */
    unsigned char g2[1] = {0x1B}; /* 00 01 10 11 */
    png_color_16 gt = {0, 0, 0, 0, 1};
    {
        buf_t b = {0};
        png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
        png_infop info = png_create_info_struct(png);
        png_set_write_fn(png, &b, png_wr, png_fl);
        png_set_IHDR(png, info, 4, 1, 2, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_set_tRNS(png, info, NULL, 0, &gt);
        png_write_info(png, info);
        png_write_row(png, g2);
        png_write_end(png, NULL);
        png_destroy_write_struct(&png, &info);
        assert_int_equal(decode(b.p, b.n, &img), FV_OK);
        static const int g2v[4] = {0, 85, 170, 255};
        for (int x = 0; x < 4; x++) assert_px_near(img, x, 0, g2v[x], g2v[x], g2v[x], 0);
        fv_image_destroy(img);
        free(b.p);
    }
    /* 4-bit palette without tRNS: 0x21 0x00 -> indices 2,1,0 */
    unsigned char idx4[2] = {0x21, 0x00};
    d = make_png(3, 1, 4, PNG_COLOR_TYPE_PALETTE, 0, idx4, 2, pal, 3, NULL, 0, 6, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_px_near(img, 0, 0, 10, 20, 30, 0);
    assert_px_near(img, 1, 0, 0, 128, 0, 0);
    assert_px_near(img, 2, 0, 255, 0, 0, 0);
    fv_image_destroy(img);
    free(d);
    /* 16-bit RGB (big-endian samples v*257) and 16-bit gray with tRNS */
    unsigned char c16[2 * 6];
    const unsigned char v8[6] = {0, 17, 128, 255, 254, 1};
    for (int i = 0; i < 6; i++) c16[2 * i] = c16[2 * i + 1] = v8[i];
    d = make_png(2, 1, 16, PNG_COLOR_TYPE_RGB, 0, c16, 12, NULL, 0, NULL, 0, 6, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_px_near(img, 0, 0, 0, 17, 128, 0);
    assert_px_near(img, 1, 0, 255, 254, 1, 0);
    fv_image_destroy(img);
    free(d);
    unsigned char g16[4] = {0x12, 0x34, 0xFF, 0xFF}; /* 0x1234 -> 18.1 -> 18 */
    d = make_png(2, 1, 16, PNG_COLOR_TYPE_GRAY, 0, g16, 4, NULL, 0, NULL, 0, 6, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_px_near(img, 0, 0, 18, 18, 18, 0);
    assert_px_near(img, 1, 0, 255, 255, 255, 0);
    fv_image_destroy(img);
    free(d);
    /* 16-bit RGBA */
    unsigned char c16a[8] = {0xFF, 0xFF, 0x80, 0x80, 0x00, 0x00, 0x12, 0x34};
    d = make_png(1, 1, 16, PNG_COLOR_TYPE_RGBA, 0, c16a, 8, NULL, 0, NULL, 0, 6, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_px_near(img, 0, 0, 255, 128, 0, 0);
    fv_image_destroy(img);
    free(d);
    /* interlaced RGB, odd size: every pixel must come back exactly */
    enum { IW = 13, IH = 11 };
    unsigned char il[IW * IH * 3];
    for (size_t i = 0; i < sizeof il; i++) il[i] = (unsigned char)(i * 7 + 3);
    d = make_png(IW, IH, 8, PNG_COLOR_TYPE_RGB, 1, il, IW * 3, NULL, 0, NULL, 0, 6, &n);
    assert_int_equal(decode(d, n, &img), FV_OK);
    assert_int_equal(img->width, IW);
    assert_int_equal(img->height, IH);
    assert_memory_equal(img->rgb, il, sizeof il);
    fv_image_destroy(img);
    free(d);
}

static void test_webp(void **state) {
    (void)state;
    enum { W = 32, H = 16 };
    unsigned char rgb[W * H * 3], rgba[W * H * 4];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            unsigned char *q = rgb + (y * W + x) * 3, *a = rgba + (y * W + x) * 4;
            q[0] = x < W / 2 ? 220 : 20;
            q[1] = y < H / 2 ? 30 : 200;
            q[2] = 90;
            memcpy(a, q, 3);
            a[3] = 128;
        }
    uint8_t *enc;
    fv_image *img;
    /* lossless: exact */
    size_t n = WebPEncodeLosslessRGB(rgb, W, H, W * 3, &enc);
    assert_true(n > 0);
    assert_int_equal(decode(enc, n, &img), FV_OK);
    assert_int_equal(img->width, W);
    assert_int_equal(img->height, H);
    assert_memory_equal(img->rgb, rgb, sizeof rgb);
    fv_image_destroy(img);
    /* truncated lossless */
    assert_int_equal(decode(enc, n / 2, &img), FV_E_IMAGE_CORRUPT);
    WebPFree(enc);
    /* lossless with alpha: colour kept */
    n = WebPEncodeLosslessRGBA(rgba, W, H, W * 4, &enc);
    assert_int_equal(decode(enc, n, &img), FV_OK);
    assert_memory_equal(img->rgb, rgb, sizeof rgb);
    fv_image_destroy(img);
    WebPFree(enc);
    /* lossy: block centres near the colours */
    n = WebPEncodeRGB(rgb, W, H, W * 3, 95, &enc);
    assert_true(n > 0);
    assert_int_equal(decode(enc, n, &img), FV_OK);
    assert_int_equal(img->width, W);
    assert_int_equal(img->height, H);
    assert_px_near(img, 4, 4, 220, 30, 90, 12);
    assert_px_near(img, W - 4, H - 4, 20, 200, 90, 12);
    fv_image_destroy(img);
    assert_int_equal(decode(enc, n / 2, &img), FV_E_IMAGE_CORRUPT);
    assert_int_equal(decode(enc, 20, &img), FV_E_IMAGE_CORRUPT);
    WebPFree(enc);
    /* lossy with alpha (VP8X + ALPH) */
    n = WebPEncodeRGBA(rgba, W, H, W * 4, 95, &enc);
    assert_int_equal(decode(enc, n, &img), FV_OK);
    assert_px_near(img, 4, 4, 220, 30, 90, 12);
    fv_image_destroy(img);
    WebPFree(enc);
    /* animated: the first frame */
    static const unsigned char c2[2][3] = {{10, 200, 30}, {250, 0, 250}};
    unsigned char *a = make_anim_webp(8, 6, c2, &n);
    assert_int_equal(decode(a, n, &img), FV_OK);
    assert_int_equal(img->width, 8);
    assert_int_equal(img->height, 6);
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 8; x++) assert_px_near(img, x, y, 10, 200, 30, 0);
    fv_image_destroy(img);
    assert_int_equal(decode(a, n - 30, &img), FV_E_IMAGE_CORRUPT);
    free(a);
}

static void test_bmp(void **state) {
    (void)state;
    static const int bpps[3] = {24, 32, 8};
    for (int i = 0; i < 3; i++)
        for (int td = 0; td < 2; td++) {
            size_t n;
            unsigned char *b = make_bmp(7, 5, bpps[i], td, &n);
            fv_image *img;
            assert_int_equal(decode(b, n, &img), FV_OK);
            check_bmp_pattern(img, 7, 5);
            fv_image_destroy(img);
            /* missing final padding is tolerated; a missing row is not */
            size_t stride = ((size_t)7 * (size_t)bpps[i] + 31) / 32 * 4;
            size_t pad = stride - (size_t)7 * (size_t)bpps[i] / 8;
            assert_int_equal(decode(b, n - pad, &img), FV_OK);
            fv_image_destroy(img);
            assert_int_equal(decode(b, n - stride, &img), FV_E_IMAGE_CORRUPT);
            assert_int_equal(decode(b, 30, &img), FV_E_IMAGE_CORRUPT);
            free(b);
        }
    /* unsupported variants */
    size_t n;
    unsigned char *b = make_bmp(7, 5, 24, 0, &n);
    b[28] = 16; /* 16-bit */
    fv_image *img;
    assert_int_equal(decode(b, n, &img), FV_E_IMAGE_FORMAT);
    b[28] = 24;
    b[30] = 1; /* RLE8 */
    assert_int_equal(decode(b, n, &img), FV_E_IMAGE_FORMAT);
    b[30] = 0;
    b[14] = 12; /* OS/2 header */
    assert_int_equal(decode(b, n, &img), FV_E_IMAGE_FORMAT);
    b[14] = 40;
    memcpy(b + 22, "\0\0\0\x80", 4); /* height INT32_MIN */
    assert_int_equal(decode(b, n, &img), FV_E_IMAGE_TOO_LARGE);
    memcpy(b + 18, "\0\0\0\0", 4); /* width 0 */
    assert_int_equal(decode(b, n, &img), FV_E_IMAGE_CORRUPT);
    free(b);
}

static void test_bad_inputs(void **state) {
    (void)state;
    fv_image *img;
    char err[256];
    const char *text = "hello, this is a text file, not an image\n";
    assert_int_equal(fv_image_decode("", 0, NULL, &img, err, sizeof err), FV_E_IMAGE_FORMAT);
    assert_int_equal(decode(text, strlen(text), &img), FV_E_IMAGE_FORMAT);
    assert_int_equal(decode("\0\0\1\0\1\0\1\0\0\0\0", 11, &img), FV_E_IMAGE_FORMAT);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(fv_image_decode("\0\0\1\0......", 10, NULL, &img, err, sizeof err),
                     FV_E_IMAGE_FORMAT);
    assert_non_null(strstr(err, "ICO"));
    /* PDF and markup (SVG) are named as unsupported, not "unknown". */
    const char *pdf = "%PDF-1.4\n%%EOF\n", *svg = "\xef\xbb\xbf \n<svg xmlns=\"x\"/>";
    assert_int_equal(fv_image_decode(pdf, strlen(pdf), NULL, &img, err, sizeof err),
                     FV_E_IMAGE_FORMAT);
    assert_non_null(strstr(err, "PDF is not supported"));
    assert_int_equal(fv_image_decode(svg, strlen(svg), NULL, &img, err, sizeof err),
                     FV_E_IMAGE_FORMAT);
    assert_non_null(strstr(err, "SVG"));
    assert_int_equal(decode("\xFF\xD8", 2, &img), FV_E_IMAGE_FORMAT);
    assert_int_equal(decode("\xFF\xD8\xFF", 3, &img), FV_E_IMAGE_CORRUPT);
    assert_int_equal(decode("\x89PNG\r\n\x1a\n", 8, &img), FV_E_IMAGE_CORRUPT);
    assert_int_equal(decode("RIFF\0\0\0\0WEBP", 12, &img), FV_E_IMAGE_CORRUPT);
    assert_int_equal(decode("BM", 2, &img), FV_E_IMAGE_CORRUPT);

    unsigned char rnd_bytes[4096];
    for (int t = 0; t < 50; t++) {
        for (size_t i = 0; i < sizeof rnd_bytes; i++) rnd_bytes[i] = (unsigned char)rnd();
        fv_status st = decode(rnd_bytes, sizeof rnd_bytes, &img);
        if (st == FV_OK) fv_image_destroy(img);
        /* Random bytes after each magic: never OK, never a crash. */
        static const char *magic[4] = {"\xFF\xD8\xFF", "\x89PNG\r\n\x1a\n", "RIFF\0\x10\0\0WEBP",
                                       "BM"};
        static const size_t mlen[4] = {3, 8, 12, 2};
        for (int m = 0; m < 4; m++) {
            memcpy(rnd_bytes, magic[m], mlen[m]);
            st = decode(rnd_bytes, sizeof rnd_bytes, &img);
            if (st == FV_OK) {
                fv_image_destroy(img);
                continue;
            }
            assert_true(st == FV_E_IMAGE_CORRUPT || st == FV_E_IMAGE_FORMAT ||
                        st == FV_E_IMAGE_TOO_LARGE);
        }
    }

    /* Truncated JPEG / PNG: corrupt, not grey-padded. */
    unsigned char *p = pattern24x16();
    size_t n;
    unsigned char *j = make_jpeg(p, 24, 16, 3, JCS_RGB, 0, &n);
    assert_int_equal(decode(j, n / 2, &img), FV_E_IMAGE_CORRUPT);
    assert_int_equal(decode(j, 100, &img), FV_E_IMAGE_CORRUPT);
    /* Only the EOI marker missing from a single-scan file: all pixels are
     * there, so it decodes, identically. */
    fv_image *full;
    assert_int_equal(decode(j, n, &full), FV_OK);
    assert_int_equal(decode(j, n - 2, &img), FV_OK);
    assert_memory_equal(img->rgb, full->rgb, 24 * 16 * 3);
    fv_image_destroy(img);
    fv_image_destroy(full);
    /* Cut inside the last bytes of entropy data: corrupt. */
    assert_int_equal(decode(j, n - 6, &img), FV_E_IMAGE_CORRUPT);
    free(j);
    /* Progressive: cut right before a later scan (no decoder runs short,
     * but detail is missing), or just the EOI: corrupt either way. */
    progressive = 1;
    j = make_jpeg(p, 24, 16, 3, JCS_RGB, 0, &n);
    progressive = 0;
    assert_int_equal(decode(j, n, &img), FV_OK);
    fv_image_destroy(img);
    size_t sos = 0, nsos = 0;
    for (size_t i = 2; i + 1 < n; i++)
        if (j[i] == 0xFF && j[i + 1] == 0xDA && ++nsos == 3) {
            sos = i;
            break;
        }
    assert_true(sos > 0);
    assert_int_equal(decode(j, sos, &img), FV_E_IMAGE_CORRUPT);
    assert_int_equal(decode(j, n - 2, &img), FV_E_IMAGE_CORRUPT);
    assert_int_equal(decode(j, n / 2, &img), FV_E_IMAGE_CORRUPT);
    free(j);
    unsigned char *q = make_png(24, 16, 8, PNG_COLOR_TYPE_RGB, 0, p, 72, NULL, 0, NULL, 0, 6, &n);
    assert_int_equal(decode(q, n / 2, &img), FV_E_IMAGE_CORRUPT);
    assert_int_equal(decode(q, 40, &img), FV_E_IMAGE_CORRUPT);
    /* A flipped bit in IDAT: the CRC catches it. */
    q[n - 20] ^= 0x10;
    assert_int_equal(decode(q, n, &img), FV_E_IMAGE_CORRUPT);
    free(q);
    free(p);
}

/* Random byte mutations of valid files of every format: any status is
 * allowed, but each must be a typed one and ASan must stay quiet. */
/* One small file of each decoder path (malloc'd, free each): JPEG with
 * EXIF orientation 6 (decodes to 16 x 24), interlaced PNG, lossy WebP,
 * 8-bit BMP (7 x 5), lossless WebP; the others 24 x 16. */
static const int five_dims[5][2] = {{16, 24}, {24, 16}, {24, 16}, {7, 5}, {24, 16}};
static void five_files(unsigned char *files[5], size_t n[5]) {
    unsigned char *p = pattern24x16();
    uint8_t *w;
    files[0] = make_jpeg(p, 24, 16, 3, JCS_RGB, 6, &n[0]);
    files[1] = make_png(24, 16, 8, PNG_COLOR_TYPE_RGB, 1, p, 72, NULL, 0, NULL, 0, 6, &n[1]);
    n[2] = WebPEncodeRGB(p, 24, 16, 72, 80, &w);
    files[2] = malloc(n[2]);
    memcpy(files[2], w, n[2]);
    WebPFree(w);
    files[3] = make_bmp(7, 5, 8, 0, &n[3]);
    n[4] = WebPEncodeLosslessRGB(p, 24, 16, 72, &w);
    files[4] = malloc(n[4]);
    memcpy(files[4], w, n[4]);
    WebPFree(w);
    free(p);
}

static void test_mutations(void **state) {
    (void)state;
    /* FV_IMAGE_FUZZ_ITERS=100000 makes this a longer local fuzz run. */
    const char *ie = getenv("FV_IMAGE_FUZZ_ITERS");
    int iters = ie && atoi(ie) > 0 ? atoi(ie) : 300;
    size_t n[5];
    unsigned char *files[5];
    five_files(files, n);
    for (int f = 0; f < 5; f++) {
        unsigned char *m = malloc(n[f]);
        for (int t = 0; t < iters; t++) {
            memcpy(m, files[f], n[f]);
            int k = 1 + (int)(rnd() % 4);
            for (int i = 0; i < k; i++) m[rnd() % n[f]] = (unsigned char)rnd();
            size_t len = t % 5 == 0 ? rnd() % n[f] : n[f];
            fv_image *img;
            fv_status st = decode(m, len, &img);
            if (st == FV_OK) {
                assert_true(img->width > 0 && img->height > 0);
                fv_image_destroy(img);
            } else {
                assert_true(st == FV_E_IMAGE_CORRUPT || st == FV_E_IMAGE_FORMAT ||
                            st == FV_E_IMAGE_TOO_LARGE);
            }
        }
        free(m);
        free(files[f]);
    }
}

/* fv_image_probe reads the size fv_image_decode will return, from the
 * header alone: the server reserves memory by it before decoding, so for
 * every input that decodes, the probe must succeed with the same size
 * (orientation applied), also on mutated files.  Limits and formats give
 * the decoder's statuses. */
static void test_probe(void **state) {
    (void)state;
    size_t n[5];
    unsigned char *files[5];
    five_files(files, n);
    const int(*want)[2] = five_dims;
    char err[256];
    for (int f = 0; f < 5; f++) {
        int pw = 0, ph = 0;
        assert_int_equal(fv_image_probe(files[f], n[f], NULL, &pw, &ph, err, sizeof err), FV_OK);
        assert_int_equal(pw, want[f][0]);
        assert_int_equal(ph, want[f][1]);
        unsigned char *m = malloc(n[f]);
        for (int t = 0; t < 200; t++) {
            memcpy(m, files[f], n[f]);
            for (int i = 0, k = 1 + (int)(rnd() % 4); i < k; i++)
                m[rnd() % n[f]] = (unsigned char)rnd();
            size_t len = t % 5 == 0 ? rnd() % n[f] : n[f];
            fv_image *img;
            if (decode(m, len, &img) != FV_OK) continue;
            pw = ph = 0;
            assert_int_equal(fv_image_probe(m, len, NULL, &pw, &ph, err, sizeof err), FV_OK);
            assert_int_equal(pw, img->width);
            assert_int_equal(ph, img->height);
            fv_image_destroy(img);
        }
        free(m);
        /* the limits apply to the header, as in the decoder */
        fv_limits lim;
        fv_limits_init(&lim);
        lim.max_pixels = 24 * 16 - 1;
        if (f != 3)
            assert_int_equal(fv_image_probe(files[f], n[f], &lim, &pw, &ph, err, sizeof err),
                             FV_E_IMAGE_TOO_LARGE);
        lim.max_pixels = 0;
        lim.max_input_bytes = n[f] - 1;
        assert_int_equal(fv_image_probe(files[f], n[f], &lim, &pw, &ph, err, sizeof err),
                         FV_E_IMAGE_TOO_LARGE);
        free(files[f]);
    }
    int pw, ph;
    assert_int_equal(fv_image_probe("\0\0\1\0........", 12, NULL, &pw, &ph, err, sizeof err),
                     FV_E_IMAGE_FORMAT);
    assert_non_null(strstr(err, "ICO"));
    assert_int_equal(fv_image_probe("x", 0, NULL, &pw, &ph, err, sizeof err), FV_E_IMAGE_FORMAT);
    assert_int_equal(fv_image_probe(NULL, 3, NULL, &pw, &ph, err, sizeof err),
                     FV_E_INVALID_ARGUMENT);
    assert_int_equal(fv_image_probe("abc", 3, NULL, NULL, &ph, err, sizeof err),
                     FV_E_INVALID_ARGUMENT);
}

static uint32_t crc32_of(const unsigned char *d, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= d[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void test_oversized_headers(void **state) {
    (void)state;
    fv_image *img;
    char err[256];
    size_t n;
    double t0 = fvi_now_ms();
    /* PNG whose IHDR (valid CRC) claims 60000 x 60000, then one tiny IDAT. */
    unsigned char g[8 * 8] = {0};
    unsigned char *q = make_png(8, 8, 8, PNG_COLOR_TYPE_GRAY, 0, g, 8, NULL, 0, NULL, 0, 6, &n);
    put_be32(q + 16, 60000);
    put_be32(q + 20, 60000);
    put_be32(q + 29, crc32_of(q + 12, 17));
    assert_int_equal(fv_image_decode(q, n, NULL, &img, err, sizeof err), FV_E_IMAGE_TOO_LARGE);
    assert_non_null(strstr(err, "60000x60000"));
    free(q);

    /* JPEG whose SOF0 claims 60000 x 60000. */
    unsigned char *p = pattern24x16();
    unsigned char *j = make_jpeg(p, 24, 16, 3, JCS_RGB, 0, &n);
    size_t sof = 0;
    for (size_t i = 2; i + 9 < n; i++)
        if (j[i] == 0xFF && j[i + 1] == 0xC0) {
            sof = i;
            break;
        }
    assert_true(sof > 0);
    j[sof + 5] = 60000 >> 8; /* height */
    j[sof + 6] = 60000 & 0xFF;
    j[sof + 7] = 60000 >> 8; /* width */
    j[sof + 8] = 60000 & 0xFF;
    assert_int_equal(decode(j, n, &img), FV_E_IMAGE_TOO_LARGE);
    free(j);

    /* Lossless WebP whose VP8L header claims 16384 x 16384. */
    uint8_t *w;
    n = WebPEncodeLosslessRGB(p, 24, 16, 72, &w);
    assert_true(w[20] == 0x2F);
    uint32_t bits =
        (uint32_t)w[21] | (uint32_t)w[22] << 8 | (uint32_t)w[23] << 16 | (uint32_t)w[24] << 24;
    bits = (bits & ~0x0FFFFFFFu) | 0x3FFFu | 0x3FFFu << 14;
    w[21] = (uint8_t)bits;
    w[22] = (uint8_t)(bits >> 8);
    w[23] = (uint8_t)(bits >> 16);
    w[24] = (uint8_t)(bits >> 24);
    assert_int_equal(decode(w, n, &img), FV_E_IMAGE_TOO_LARGE);
    WebPFree(w);

    /* BMP header claiming 60000 x 60000 with 50 bytes of data. */
    unsigned char *b = make_bmp(7, 5, 24, 0, &n);
    memcpy(b + 18, "\x60\xEA\0\0", 4);
    memcpy(b + 22, "\x60\xEA\0\0", 4);
    assert_int_equal(decode(b, n, &img), FV_E_IMAGE_TOO_LARGE);
    free(b);
    free(p);
    double dt = fvi_now_ms() - t0;
    assert_true(dt < 1000.0);
}

static void test_decompression_bomb(void **state) {
    (void)state;
    /* 8000 x 8000 zeros (64 MP, above the default 40 MP) compress to well
     * under the 10 MB input limit; refused from IHDR without inflating. */
    size_t n;
    unsigned char *q =
        make_png(8000, 8000, 8, PNG_COLOR_TYPE_GRAY, 0, NULL, 8000, NULL, 0, NULL, 0, 9, &n);
    assert_true(n < FV_DEFAULT_MAX_INPUT_BYTES);
    fv_image *img;
    double t0 = fvi_now_ms();
    assert_int_equal(decode(q, n, &img), FV_E_IMAGE_TOO_LARGE);
    assert_true(fvi_now_ms() - t0 < 1000.0);
    free(q);

    /* A caller's smaller pixel limit applies to every format. */
    unsigned char *p = pattern24x16();
    fv_limits lim;
    fv_limits_init(&lim);
    lim.max_pixels = 24 * 16 - 1;
    char err[256];
    unsigned char *j = make_jpeg(p, 24, 16, 3, JCS_RGB, 0, &n);
    assert_int_equal(fv_image_decode(j, n, &lim, &img, err, sizeof err), FV_E_IMAGE_TOO_LARGE);
    lim.max_pixels = 24 * 16;
    assert_int_equal(fv_image_decode(j, n, &lim, &img, err, sizeof err), FV_OK);
    fv_image_destroy(img);
    lim.max_pixels = 24 * 16 - 1;
    free(j);
    q = make_png(24, 16, 8, PNG_COLOR_TYPE_RGB, 0, p, 72, NULL, 0, NULL, 0, 6, &n);
    assert_int_equal(fv_image_decode(q, n, &lim, &img, err, sizeof err), FV_E_IMAGE_TOO_LARGE);
    /* Input byte limit. */
    fv_limits small = {n - 1, 0};
    assert_int_equal(fv_image_decode(q, n, &small, &img, err, sizeof err), FV_E_IMAGE_TOO_LARGE);
    small.max_input_bytes = n;
    assert_int_equal(fv_image_decode(q, n, &small, &img, err, sizeof err), FV_OK);
    fv_image_destroy(img);
    free(q);
    uint8_t *w;
    n = WebPEncodeLosslessRGB(p, 24, 16, 72, &w);
    assert_int_equal(fv_image_decode(w, n, &lim, &img, err, sizeof err), FV_E_IMAGE_TOO_LARGE);
    WebPFree(w);
    unsigned char *b = make_bmp(24, 16, 24, 0, &n);
    assert_int_equal(fv_image_decode(b, n, &lim, &img, err, sizeof err), FV_E_IMAGE_TOO_LARGE);
    free(b);
    free(p);
}

static void write_file(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(d, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void test_load_files(void **state) {
    (void)state;
    char dir[] = "/tmp/fv_test_image_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[256];
    fv_image *img = NULL;
    unsigned char *p = pattern24x16();
    size_t n;
    unsigned char *q = make_png(24, 16, 8, PNG_COLOR_TYPE_RGB, 0, p, 72, NULL, 0, NULL, 0, 6, &n);
    /* The name lies: the bytes decide. */
    snprintf(path, sizeof path, "%s/photo.jpg", dir);
    write_file(path, q, n);
    assert_int_equal(fv_image_load(path, NULL, &img, err, sizeof err), FV_OK);
    assert_memory_equal(img->rgb, p, 24 * 16 * 3);
    fv_image_destroy(img);
    /* Above max_input_bytes: refused before reading. */
    fv_limits lim = {n - 1, 0};
    img = NULL;
    assert_int_equal(fv_image_load(path, &lim, &img, err, sizeof err), FV_E_IMAGE_TOO_LARGE);
    assert_null(img);
    unlink(path);
    /* Missing file, a directory, an empty file, a text file. */
    assert_int_equal(fv_image_load(path, NULL, &img, err, sizeof err), FV_E_IO);
    assert_non_null(strstr(err, "photo.jpg"));
    assert_int_equal(fv_image_load(dir, NULL, &img, err, sizeof err), FV_E_IO);
    snprintf(path, sizeof path, "%s/empty.png", dir);
    write_file(path, "", 0);
    assert_int_equal(fv_image_load(path, NULL, &img, err, sizeof err), FV_E_IMAGE_FORMAT);
    unlink(path);
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    write_file(path, "just some text\n", 15);
    assert_int_equal(fv_image_load(path, NULL, &img, err, sizeof err), FV_E_IMAGE_FORMAT);
    unlink(path);
    /* 11 MB of zeros with the default limit. */
    snprintf(path, sizeof path, "%s/big.bin", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 11 * 1000 * 1000 - 1, SEEK_SET), 0);
    fputc(0, f);
    fclose(f);
    double t0 = fvi_now_ms();
    assert_int_equal(fv_image_load(path, NULL, &img, err, sizeof err), FV_E_IMAGE_TOO_LARGE);
    assert_true(fvi_now_ms() - t0 < 1000.0);
    unlink(path);
    rmdir(dir);
    free(q);
    free(p);
}

/* Every allocation of each decode path fails in turn: the result is
 * FV_E_NO_MEMORY (or FV_OK once enough succeed), and ASan sees no leak. */
static void test_alloc_failures(void **state) {
    (void)state;
    unsigned char *p = pattern24x16();
    enum { NF = 8 };
    unsigned char *files[NF];
    size_t n[NF];
    uint8_t *w;
    files[0] = make_jpeg(p, 24, 16, 3, JCS_RGB, 6, &n[0]);
    unsigned char cmyk[24 * 16 * 4];
    memset(cmyk, 100, sizeof cmyk);
    files[1] = make_jpeg(cmyk, 24, 16, 4, JCS_CMYK, 0, &n[1]);
    files[2] = make_png(24, 16, 8, PNG_COLOR_TYPE_RGB, 1, p, 72, NULL, 0, NULL, 0, 6, &n[2]);
    png_color pal[2] = {{1, 2, 3}, {4, 5, 6}};
    unsigned char idx[4] = {0, 1, 1, 0};
    files[3] = make_png(2, 2, 8, PNG_COLOR_TYPE_PALETTE, 0, idx, 2, pal, 2, NULL, 0, 6, &n[3]);
    n[4] = WebPEncodeLosslessRGB(p, 24, 16, 72, &w);
    files[4] = malloc(n[4]);
    memcpy(files[4], w, n[4]);
    WebPFree(w);
    static const unsigned char c2[2][3] = {{1, 2, 3}, {4, 5, 6}};
    files[5] = make_anim_webp(4, 4, c2, &n[5]);
    files[6] = make_bmp(7, 5, 8, 1, &n[6]);
    files[7] = make_jpeg(p, 24, 16, 3, JCS_RGB, 0, &n[7]);
    for (int f = 0; f < NF; f++) {
        int ok = 0;
        for (long k = 0; k < 500 && !ok; k++) {
            fv_image *img = NULL;
            char err[256];
            fvi_alloc_fail_after(k);
            fv_status st = fv_image_decode(files[f], n[f], NULL, &img, err, sizeof err);
            fvi_alloc_fail_after(-1);
            if (st == FV_OK) {
                ok = 1;
                fv_image_destroy(img);
            } else if (st != FV_E_NO_MEMORY) {
                fail_msg("file %d, fail after %ld: status %d (%s)", f, k, st, err);
            } else {
                assert_null(img);
            }
        }
        assert_true(ok);
    }
    /* fv_image_load's own buffer. */
    char path[] = "/tmp/fv_test_image_load_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, files[7], n[7]), (ssize_t)n[7]);
    close(fd);
    fv_image *img = NULL;
    fvi_alloc_fail_after(0);
    fv_status st = fv_image_load(path, NULL, &img, NULL, 0);
    fvi_alloc_fail_after(-1);
    assert_int_equal(st, FV_E_NO_MEMORY);
    unlink(path);
    for (int f = 0; f < NF; f++) free(files[f]);
    free(p);
}

typedef struct {
    const unsigned char *d[3];
    size_t n[3];
    const unsigned char *want;
    int bad;
} thread_arg;

static void *thread_main(void *v) {
    thread_arg *a = v;
    for (int it = 0; it < 30; it++)
        for (int k = 0; k < 3; k++) {
            fv_image *img = NULL;
            char err[128];
            if (fv_image_decode(a->d[k], a->n[k], NULL, &img, err, sizeof err) != FV_OK) {
                a->bad = 1;
                continue;
            }
            /* PNG and lossless WebP are exact; the JPEG only sized. */
            if (img->width != 24 || img->height != 16 ||
                (k > 0 && memcmp(img->rgb, a->want, 24 * 16 * 3) != 0))
                a->bad = 1;
            fv_image_destroy(img);
        }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    unsigned char *p = pattern24x16();
    size_t nj, np;
    uint8_t *w;
    unsigned char *j = make_jpeg(p, 24, 16, 3, JCS_RGB, 0, &nj);
    unsigned char *q = make_png(24, 16, 8, PNG_COLOR_TYPE_RGB, 0, p, 72, NULL, 0, NULL, 0, 6, &np);
    size_t nw = WebPEncodeLosslessRGB(p, 24, 16, 72, &w);
    enum { T = 4 };
    pthread_t th[T];
    thread_arg a[T];
    for (int t = 0; t < T; t++) {
        a[t] = (thread_arg){{j, q, w}, {nj, np, nw}, p, 0};
        assert_int_equal(pthread_create(&th[t], NULL, thread_main, &a[t]), 0);
    }
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(a[t].bad, 0);
    }
    WebPFree(w);
    free(j);
    free(q);
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_and_basics),
        cmocka_unit_test(test_sample_photos),
        cmocka_unit_test(test_jpeg_gray_and_rgb),
        cmocka_unit_test(test_jpeg_cmyk_ycck),
        cmocka_unit_test(test_oriented_copy),
        cmocka_unit_test(test_exif_orientations),
        cmocka_unit_test(test_png_variants),
        cmocka_unit_test(test_webp),
        cmocka_unit_test(test_bmp),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_probe),
        cmocka_unit_test(test_oversized_headers),
        cmocka_unit_test(test_decompression_bomb),
        cmocka_unit_test(test_load_files),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

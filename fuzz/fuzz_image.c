/*
 * fuzz_image.c: libFuzzer target for the image decoder front end,
 * fv_image_decode (format sniffing, the JPEG/PNG/WebP/BMP/HEIF/AVIF/TIFF/
 * GIF/PBM/PGM/PPM decoders, orientation, limits).  The pixel limit is lowered to 4 megapixels so
 * that inputs claiming huge images are refused quickly instead of spending
 * the fuzzer's time on allocations; the limit checks themselves are the
 * same code.
 */
#include <stddef.h>
#include <stdint.h>

#include "faceverify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fv_limits lim;
    fv_limits_init(&lim);
    lim.max_pixels = 4 * 1000 * 1000;
    fv_image *img = NULL;
    char err[256];
    fv_status st = fv_image_decode(data, size, &lim, &img, err, sizeof err);
    if (st == FV_OK) {
        /* Touch every byte so that a short pixel buffer is an ASan report. */
        volatile unsigned sum = 0;
        size_t n = (size_t)img->width * (size_t)img->height * 3;
        for (size_t i = 0; i < n; i += 61) sum += img->rgb[i];
        if (n) sum += img->rgb[n - 1];
        (void)sum;
    }
    fv_image_destroy(img);
    return 0;
}

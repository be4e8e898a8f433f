/*
 * chip_png.h: an RGB face chip as a "data:image/png;base64,..." JSON string.
 */
#ifndef FVS_CHIP_PNG_H
#define FVS_CHIP_PNG_H

#include <jansson.h>

/* Encodes w x h packed 8-bit RGB (row-major, no padding) as a PNG data URL.
 * Returns a new JSON string (the caller owns it), or NULL when encoding or
 * an allocation failed.  Thread-safe. */
json_t *fvs_chip_data_url(const unsigned char *rgb, int w, int h);

#endif

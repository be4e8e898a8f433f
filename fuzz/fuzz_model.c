/*
 * fuzz_model.c: libFuzzer target for the model-file loaders: the dlib
 * serialization reader (src/nn/dlib_serial.c) under the three network
 * loaders (MMOD detector, 5-point shape predictor, ResNet embedder) and the
 * OpenCV Haar cascade XML parser.  The first byte picks the loader; the
 * rest is the file's bytes, exactly as *_load would read them from disk.
 */
#include <stddef.h>
#include <stdint.h>

#include "align/align.h"
#include "detect/mmod.h"
#include "detect/haar.h"
#include "embed/embed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *file = data + 1;
    size_t len = size - 1;
    char err[256];
    switch (data[0] % 4) {
    case 0: {
        fvi_mmod *m = NULL;
        if (fvi_mmod_load_mem(file, len, &m, err, sizeof err) == FV_OK) fvi_mmod_destroy(m);
        break;
    }
    case 1: {
        fvi_shape_predictor *sp = NULL;
        if (fvi_shape_predictor_load_mem(file, len, &sp, err, sizeof err) == FV_OK)
            fvi_shape_predictor_destroy(sp);
        break;
    }
    case 2: {
        fvi_resnet *net = NULL;
        if (fvi_resnet_load_mem(file, len, &net, err, sizeof err) == FV_OK) fvi_resnet_destroy(net);
        break;
    }
    default: {
        fvi_haar *h = NULL;
        if (fvi_haar_parse(file, len, &h, err, sizeof err) == FV_OK) fvi_haar_destroy(h);
        break;
    }
    }
    return 0;
}

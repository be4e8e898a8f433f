/*
 * status.c: the status table (fv_strerror, fv_status_name), error-buffer
 * formatting and the monotonic clock.  The table is indexed by status so a
 * test can check that every value below FV_STATUS_COUNT_ has an entry.
 */
#include <stdio.h>
#include <time.h>

#include "core/fvi.h"

static const struct {
    const char *name;
    const char *text;
} status_table[FV_STATUS_COUNT_] = {
    [FV_OK] = {"ok", "success"},
    [FV_E_INVALID_ARGUMENT] = {"invalid_argument", "invalid argument"},
    [FV_E_NO_MEMORY] = {"no_memory", "out of memory"},
    [FV_E_IO] = {"io_error", "file could not be read"},
    [FV_E_IMAGE_FORMAT] = {"invalid_image", "unsupported or unrecognised image format"},
    [FV_E_IMAGE_CORRUPT] = {"invalid_image", "corrupt or truncated image"},
    [FV_E_IMAGE_TOO_LARGE] = {"image_too_large", "image exceeds the size limits"},
    [FV_E_MODEL_MISSING] = {"model_unavailable", "model file missing"},
    [FV_E_MODEL_CORRUPT] = {"model_unavailable", "model file corrupt"},
    [FV_E_NO_FACE] = {"no_face", "no face found"},
    [FV_E_MULTIPLE_FACES] = {"multiple_faces", "several faces found where one was required"},
    [FV_E_UNSUPPORTED] = {"unsupported", "unsupported feature"},
    [FV_E_INTERNAL] = {"internal_error", "internal error"},
    [FV_E_MODEL_MISMATCH] = {"model_mismatch", "embeddings come from different models"},
};

const char *fv_strerror(fv_status st) {
    if ((int)st < 0 || st >= FV_STATUS_COUNT_ || !status_table[st].text) return "unknown status";
    return status_table[st].text;
}

const char *fv_status_name(fv_status st) {
    if ((int)st < 0 || st >= FV_STATUS_COUNT_ || !status_table[st].name) return "unknown";
    return status_table[st].name;
}

fv_status fvi_seterr(char *err, size_t errlen, fv_status st, const char *fmt, ...) {
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

double fvi_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

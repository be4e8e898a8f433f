/*
 * fuzz_multipart.c: libFuzzer target for faceverifyd's form parsing path:
 * libmicrohttpd's MHD_PostProcessor feeding http.c's field collector
 * (post_iter), then the handlers reading those fields.
 *
 * Input: one byte choosing the route, the Content-Type header value up to
 * the first newline (so that boundaries and form kinds vary too), then the
 * body.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const ROUTES[] = {"/api/v1/verify/embeddings", "/api/v1/subjects",
                                     "/api/v1/identify/embeddings", "/api/v1/detect",
                                     "/api/v1/subjects/1/faces"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *path = ROUTES[data[0] % (sizeof ROUTES / sizeof *ROUTES)];
    data++;
    size--;
    char ctype[256] = "multipart/form-data; boundary=fz";
    const uint8_t *nl = memchr(data, '\n', size < 255 ? size : 255);
    if (nl) {
        size_t n = 0;
        for (const uint8_t *p = data; p < nl; p++)
            if (*p >= 0x20 && *p != 0x7f) ctype[n++] = (char)*p; /* one header line */
        ctype[n] = 0;
        size -= (size_t)(nl + 1 - data);
        data = nl + 1;
    }
    fz_http_post("POST", path, ctype, data, size);
    return 0;
}

/*
 * fuzz_gate.c: libFuzzer target for faceverifyd's request heads.
 *
 * Input: the raw bytes of one HTTP request, request line and headers
 * included.  They go through the connection gate's validator (gate.c) and,
 * when it passes them, through libmicrohttpd and http.c as in faceverifyd
 * (fz_http_request); a refusal must be a whole JSON answer with a 4xx or
 * 5xx status, and nothing may answer a 5xx other than 503.  The key of the
 * harness's collection replaces each "KEY" in the input, so that keyed
 * routes are reached too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 65536) return 0;
    const char *key = fz_http_key();
    size_t klen = strlen(key);
    /* Each "KEY" may grow into the key: room for all of them. */
    size_t cap = size + (size / 3 + 1) * klen + 1;
    uint8_t *req = malloc(cap);
    if (!req) return 0;
    size_t n = 0;
    for (size_t i = 0; i < size;) {
        if (i + 3 <= size && memcmp(data + i, "KEY", 3) == 0) {
            memcpy(req + n, key, klen);
            n += klen;
            i += 3;
        } else {
            req[n++] = data[i++];
        }
    }
    fz_http_request(req, n);
    free(req);
    return 0;
}

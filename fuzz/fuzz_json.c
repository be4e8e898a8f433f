/*
 * fuzz_json.c: libFuzzer target for faceverifyd's JSON request parsers.
 *
 * Input: one byte choosing the route, then a JSON body.  The body goes
 * through the real HTTP path (jansson, routes.c's embedding, name,
 * metadata, threshold, top_k and k parsing, the collection settings of
 * PATCH /api/v1/collection, and the face ids, subject and options of the
 * unassigned-face, assign and merge routes).  Because the harness server
 * has no models, the image routes stop before reading their fields, so the
 * field readers of http.h (base64 and data: URL decoding, numbers, text)
 * are also called directly on the parsed object, as those routes would.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_http.h"
#include "server/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const ROUTES[][2] = {{"POST", "/api/v1/verify/embeddings"},
                                        {"POST", "/api/v1/identify/embeddings"},
                                        {"POST", "/api/v1/subjects"},
                                        {"GET", "/api/v1/subjects"},
                                        {"POST", "/api/v1/detect"},
                                        {"POST", "/api/v1/subjects/1/verify"},
                                        {"PATCH", "/api/v1/collection"},
                                        {"POST", "/api/v1/faces"},
                                        {"POST", "/api/v1/faces/assign"},
                                        {"POST", "/api/v1/subjects/1/merge"},
                                        {"GET", "/api/v1/faces"}};

/* The field readers, without a connection: only names present in the
 * object are looked up (an absent name would fall back to the query
 * string, which needs one). */
static void read_fields(json_t *obj) {
    fvs_req r;
    memset(&r, 0, sizeof r);
    r.json = obj;
    static const char *const bytes[] = {"image", "image_a", "image_b"};
    for (size_t i = 0; i < sizeof bytes / sizeof *bytes; i++) {
        if (!json_object_get(obj, bytes[i])) continue;
        fvs_resp out = {0};
        unsigned char *owned = NULL;
        const unsigned char *p = NULL;
        size_t len = 0;
        if (fvs_req_bytes(&r, bytes[i], &owned, &p, &len, &out) == 0 && len) {
            volatile unsigned char c = p[len - 1];
            (void)c;
        }
        free(owned);
        fvs_resp_free(&out);
    }
    static const char *const numbers[] = {"threshold", "top_k", "k", "limit", "offset"};
    for (size_t i = 0; i < sizeof numbers / sizeof *numbers; i++) {
        if (!json_object_get(obj, numbers[i])) continue;
        fvs_resp out = {0};
        double v = 0;
        fvs_req_number(&r, numbers[i], 0, 1e9, &v, &out);
        fvs_resp_free(&out);
    }
    static const char *const texts[] = {"name", "detector",   "face",
                                        "pick", "unassigned", "from_subject_id"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        if (!json_object_get(obj, texts[i])) continue;
        char buf[64];
        const char *s = fvs_req_text(&r, texts[i], buf, sizeof buf);
        if (s) {
            volatile size_t n = strlen(s);
            (void)n;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *const *route = ROUTES[data[0] % (sizeof ROUTES / sizeof *ROUTES)];
    data++;
    size--;
    fz_http_post(route[0], route[1], "application/json", data, size);
    json_t *obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(obj)) read_fields(obj);
    json_decref(obj);
    return 0;
}

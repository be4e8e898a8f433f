/*
 * test_server_gate.c: faceverifyd's header-block validator and its error
 * answers (gate.c), the pure part of the connection gate.  The thread
 * (accept, peek, deadlines, hand-over) is covered by
 * tests/py/test_hardening.py against a live server.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/gate.h"

static fvs_gate_verdict judge(const char *s, size_t len) {
    fvs_gate_verdict v;
    fvs_gate_check((const unsigned char *)s, len, &v);
    return v;
}

#define JUDGE(lit) judge(lit, sizeof(lit) - 1)

static void test_valid_blocks_pass(void **state) {
    (void)state;
    static const char get[] = "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
    fvs_gate_verdict v = JUDGE(get);
    assert_int_equal(v.state, FVS_GATE_PASS);
    assert_int_equal(v.head_len, sizeof get - 1);
    /* The body (and a pipelined request) after the blank line is not the
     * gate's: head_len stops at the blank line. */
    static const char post[] = "\r\nPOST /a?b=c HTTP/1.0\r\nContent-Length: 3\r\n"
                               "X-Empty:\r\nX-Tab:\tv\t\r\n\r\nabcGET / HTTP/1.1\r\n\0";
    v = judge(post, sizeof post - 1);
    assert_int_equal(v.state, FVS_GATE_PASS);
    assert_memory_equal(post + v.head_len, "abc", 3);
    /* Bare LF line ends are tolerated (RFC 9112 2.2). */
    v = JUDGE("GET / HTTP/1.1\nHost: x\n\n");
    assert_int_equal(v.state, FVS_GATE_PASS);
    assert_int_equal(v.head_len, 24);
}

typedef struct refusal {
    const char *name;
    const char *head;
    size_t len;
    int status;
    const char *code;
} refusal;

#define R(name, lit, status, code)                                                                 \
    { name, lit, sizeof(lit) - 1, status, code }

static void test_refusals(void **state) {
    (void)state;
    static const refusal cases[] = {
        R("bad content-length", "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400,
          "validation_error"),
        R("signed content-length", "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400,
          "validation_error"),
        R("content-length list", "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", 400,
          "validation_error"),
        R("no colon", "GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400, "validation_error"),
        R("space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "validation_error"),
        R("empty name", "GET / HTTP/1.1\r\n: x\r\n\r\n", 400, "validation_error"),
        R("obs-fold", "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", 400, "validation_error"),
        R("NUL in key", "GET / HTTP/1.1\r\nX-API-Key: k\0junk\r\n\r\n", 400, "validation_error"),
        R("NUL in host", "GET / HTTP/1.1\r\nHost: x\0junk\r\n\r\n", 400, "validation_error"),
        R("bare CR", "GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n", 400, "validation_error"),
        R("control byte", "GET / HTTP/1.1\r\nHost: x\x01\r\n\r\n", 400, "validation_error"),
        R("DEL byte", "GET / HTTP/1.1\r\nHost: x\x7f\r\n\r\n", 400, "validation_error"),
        R("no version", "GET /\r\n\r\n", 400, "validation_error"),
        R("two spaces", "GET  / HTTP/1.1\r\n\r\n", 400, "validation_error"),
        R("bad method", "G(T / HTTP/1.1\r\n\r\n", 400, "validation_error"),
        R("lower-case version", "GET / http/1.1\r\n\r\n", 400, "validation_error"),
        R("HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported"),
        R("HTTP/9.9", "GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505, "http_version_not_supported"),
        R("HTTP/1.2", "GET / HTTP/1.2\r\n\r\n", 505, "http_version_not_supported"),
        R("chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411,
          "length_required"),
        R("CL and TE", "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
          400, "validation_error"),
        R("two CL", "POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", 400,
          "validation_error"),
        R("gzip, chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400,
          "validation_error"),
        R("two TE",
          "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
          400, "validation_error"),
        R("two Host", "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, "validation_error"),
        R("two keys", "GET / HTTP/1.1\r\nX-API-Key: a\r\nX-Api-Key: b\r\n\r\n", 400,
          "validation_error"),
        R("two demo tokens", "GET / HTTP/1.1\r\nX-Demo-Token: a\r\nX-Demo-Token: a\r\n\r\n", 400,
          "validation_error"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fvs_gate_verdict v = judge(cases[i].head, cases[i].len);
        if (v.state != FVS_GATE_REFUSE || v.status != cases[i].status ||
            strcmp(v.code, cases[i].code) != 0)
            fail_msg("%s: state %d status %d", cases[i].name, v.state, v.status);
        assert_non_null(v.message);
    }
}

/* A request line or header block of n bytes of padding. */
static char *padded(const char *pre, size_t n, const char *post, size_t *len) {
    size_t a = strlen(pre), b = strlen(post);
    char *s = malloc(a + n + b);
    assert_non_null(s);
    memcpy(s, pre, a);
    memset(s + a, 'a', n);
    memcpy(s + a + n, post, b);
    *len = a + n + b;
    return s;
}

static void test_size_limits(void **state) {
    (void)state;
    size_t len;
    /* A target at the limit passes, one byte more is 414, and a long one
     * is refused before its line is complete. */
    char *s = padded("GET /", FVS_GATE_MAX_TARGET - 1, " HTTP/1.1\r\n\r\n", &len);
    assert_int_equal(judge(s, len).state, FVS_GATE_PASS);
    free(s);
    s = padded("GET /", FVS_GATE_MAX_TARGET, " HTTP/1.1\r\n\r\n", &len);
    assert_int_equal(judge(s, len).status, 414);
    free(s);
    s = padded("GET /", 10 * 1024, "", &len);
    assert_int_equal(judge(s, len).status, 414);
    free(s);
    /* A 20 KiB header line: 431 as soon as the limit is passed. */
    s = padded("GET / HTTP/1.1\r\nX-A: ", 20 * 1024, "\r\n\r\n", &len);
    fvs_gate_verdict v = judge(s, len);
    assert_int_equal(v.state, FVS_GATE_REFUSE);
    assert_int_equal(v.status, 431);
    assert_string_equal(v.code, "header_fields_too_large");
    free(s);
}

static void test_incremental(void **state) {
    (void)state;
    /* Every proper prefix of a valid block waits; the whole one passes. */
    static const char get[] = "GET /x HTTP/1.1\r\nHost: x\r\nX-API-Key: fvk_abc\r\n\r\n";
    for (size_t n = 0; n < sizeof get - 1; n++)
        assert_int_equal(judge(get, n).state, FVS_GATE_MORE);
    assert_int_equal(judge(get, sizeof get - 1).state, FVS_GATE_PASS);
    /* A NUL is refused as soon as it comes, before the line ends. */
    assert_int_equal(JUDGE("GET / HTTP/1.1\r\nX-API-Key: k\0").status, 400);
    /* A CR at the end may be followed by LF: wait. */
    assert_int_equal(JUDGE("GET / HTTP/1.1\r").state, FVS_GATE_MORE);
}

static void test_answer(void **state) {
    (void)state;
    char out[2048];
    const char *rid = "0123456789abcdef0123456789abcdef";
    size_t n = fvs_gate_answer(431, "header_fields_too_large", "request header block too large",
                               rid, out, sizeof out);
    assert_true(n > 0 && n < sizeof out);
    out[n] = 0;
    assert_true(strncmp(out, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46) == 0);
    assert_non_null(strstr(out, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(out, "\r\nX-Content-Type-Options: nosniff\r\n"));
    assert_non_null(strstr(out, "\r\nX-Frame-Options: DENY\r\n"));
    assert_non_null(strstr(out, "\r\nCache-Control: no-store\r\n"));
    assert_non_null(strstr(out, "\r\nX-Request-Id: 0123456789abcdef0123456789abcdef\r\n"));
    assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
    const char *body = strstr(out, "\r\n\r\n");
    assert_non_null(body);
    body += 4;
    assert_string_equal(body, "{\"error\":{\"code\":\"header_fields_too_large\","
                              "\"message\":\"request header block too large\"}}");
    unsigned long cl = strtoul(strstr(out, "Content-Length: ") + 16, NULL, 10);
    assert_int_equal(cl, strlen(body));
    /* Too small a buffer: 0, never a cut answer. */
    assert_int_equal(fvs_gate_answer(400, "validation_error", "x", rid, out, 100), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_blocks_pass),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

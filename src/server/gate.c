/*
 * gate.c: the connection gate in front of libmicrohttpd (see gate.h).
 *
 * The validator (fvs_gate_check) walks the header block line by line and
 * judges what has arrived so far: a fault is reported as soon as its line
 * is in (a NUL at once), so a trickling client is refused early, and only
 * a block without a fault waits for more.  It is stricter than
 * libmicrohttpd in exactly the places where libmicrohttpd would answer
 * itself (HTML) or cut a value short, and it keeps the framing checks of
 * RFC 9112 6.3 (http.c repeats them on MHD's view, which is harmless).
 *
 * The thread: one poll() over a wake pipe, the listening socket and every
 * connection not yet handed over.  A connection's bytes are peeked
 * (MSG_PEEK), never consumed, so libmicrohttpd reads the same request.
 * After a peek that found the block incomplete, SO_RCVLOWAT is raised to
 * one byte more than was peeked: Linux's poll() then reports the socket
 * only when something new has come (or the peer closed), so a trickler
 * costs one wake-up per byte, not a busy loop.  It is reset to 1 before
 * the hand-over.  A refused connection has what it sent drained, gets its
 * answer (non-blocking, best effort), a half-close, and stays in the list
 * for up to LINGER_S while the rest of what it sends is drained: closing
 * a socket with unread bytes makes the kernel send a reset, which could
 * destroy the answer before the client reads it.
 *
 * Limits: the header block must be complete within request_timeout of the
 * accept (else 408, then close), and a connection that sends nothing for
 * conn_timeout is closed without an answer, as libmicrohttpd closes an
 * idle one; the gate holds at most max_pending
 * connections and max_per_ip from one address (past either, a new
 * connection is closed at once: answering would cost what the cap saves).
 */
#define _GNU_SOURCE /* accept4, pipe2, POLLRDHUP */
#include "server/gate.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "server/guard.h"

/* ------------------------------------------------------------ validator */

/* RFC 9110 5.6.2 tchar: the bytes of a method or a field name. */
static int is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void refuse(fvs_gate_verdict *v, int status, const char *code, const char *message) {
    v->state = FVS_GATE_REFUSE;
    v->status = status;
    v->code = code;
    v->message = message;
}

static void bad(fvs_gate_verdict *v, const char *message) {
    refuse(v, 400, "validation_error", message);
}

/* Case-insensitive: does name[0..n) equal lit? */
static int name_is(const unsigned char *name, size_t n, const char *lit) {
    return strlen(lit) == n && strncasecmp((const char *)name, lit, n) == 0;
}

/* What the header lines said, for the framing checks at the end. */
typedef struct head_counts {
    int content_length, transfer_encoding, te_chunked, host, api_key, demo_token;
} head_counts;

/* Checks the request line p[0..n) (CR LF excluded); 0 when valid. */
static int check_request_line(const unsigned char *p, size_t n, fvs_gate_verdict *v) {
    size_t i = 0;
    while (i < n && is_tchar(p[i])) i++;
    if (i == 0 || i == n || p[i] != ' ') {
        bad(v, "malformed request line");
        return -1;
    }
    size_t t0 = ++i;
    while (i < n && p[i] != ' ') i++;
    if (i == t0 || i == n) {
        bad(v, "malformed request line");
        return -1;
    }
    if (i - t0 > FVS_GATE_MAX_TARGET) {
        refuse(v, 414, "uri_too_long", "request target too long");
        return -1;
    }
    const unsigned char *ver = p + i + 1;
    size_t vlen = n - i - 1;
    if (vlen != 8 || memcmp(ver, "HTTP/", 5) != 0 || ver[5] < '0' || ver[5] > '9' ||
        ver[6] != '.' || ver[7] < '0' || ver[7] > '9') {
        bad(v, "malformed request line");
        return -1;
    }
    if (ver[5] != '1' || (ver[7] != '0' && ver[7] != '1')) {
        refuse(v, 505, "http_version_not_supported",
               "HTTP version not supported (1.0 and 1.1 are)");
        return -1;
    }
    return 0;
}

/* Checks one header line p[0..n) (CR LF excluded) and counts it; 0 when
 * valid. */
static int check_header_line(const unsigned char *p, size_t n, head_counts *h,
                             fvs_gate_verdict *v) {
    if (p[0] == ' ' || p[0] == '\t') {
        bad(v, "folded header line (obs-fold)");
        return -1;
    }
    const unsigned char *colon = memchr(p, ':', n);
    if (!colon) {
        bad(v, "header line without a colon");
        return -1;
    }
    size_t nlen = (size_t)(colon - p);
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar(p[i])) {
            bad(v, "invalid header name (white space or a separator before the colon)");
            return -1;
        }
    if (nlen == 0) {
        bad(v, "empty header name");
        return -1;
    }
    const unsigned char *val = colon + 1, *end = p + n;
    while (val < end && (*val == ' ' || *val == '\t')) val++;
    while (end > val && (end[-1] == ' ' || end[-1] == '\t')) end--;
    size_t vlen = (size_t)(end - val);
    if (name_is(p, nlen, "Content-Length")) {
        h->content_length++;
        if (vlen == 0 || vlen > 19) {
            bad(v, "Content-Length must be a decimal number");
            return -1;
        }
        for (size_t i = 0; i < vlen; i++)
            if (val[i] < '0' || val[i] > '9') {
                bad(v, "Content-Length must be a decimal number");
                return -1;
            }
    } else if (name_is(p, nlen, "Transfer-Encoding")) {
        h->transfer_encoding++;
        h->te_chunked = name_is(val, vlen, "chunked");
    } else if (name_is(p, nlen, "Host")) {
        h->host++;
    } else if (name_is(p, nlen, "X-API-Key")) {
        h->api_key++;
    } else if (name_is(p, nlen, "X-Demo-Token")) {
        h->demo_token++;
    }
    return 0;
}

/* The framing checks once the block is complete (RFC 9112 6.3). */
static void check_framing(const head_counts *h, fvs_gate_verdict *v) {
    if (h->content_length > 1 || h->transfer_encoding > 1 ||
        (h->content_length && h->transfer_encoding)) {
        bad(v, "ambiguous body length: repeated Content-Length or Transfer-Encoding, or both");
    } else if (h->transfer_encoding && !h->te_chunked) {
        bad(v, "unsupported Transfer-Encoding");
    } else if (h->transfer_encoding) {
        refuse(v, 411, "length_required",
               "chunked request bodies are not accepted: send Content-Length");
    } else if (h->host > 1 || h->api_key > 1 || h->demo_token > 1) {
        bad(v, "repeated Host, X-API-Key or X-Demo-Token header");
    } else {
        v->state = FVS_GATE_PASS;
    }
}

void fvs_gate_check(const unsigned char *buf, size_t len, fvs_gate_verdict *v) {
    memset(v, 0, sizeof *v);
    v->state = FVS_GATE_MORE;
    head_counts h = {0};
    size_t pos = 0;
    /* RFC 9112 2.2: empty lines before the request line are ignored. */
    while (pos < len &&
           (buf[pos] == '\n' || (buf[pos] == '\r' && pos + 1 < len && buf[pos + 1] == '\n')))
        pos += buf[pos] == '\r' ? 2 : 1;
    for (int line = 0;; line++) {
        /* One line: its bytes up to LF, checked as they are, even when the
         * LF has not come yet. */
        size_t i = pos;
        while (i < len && buf[i] != '\n') {
            unsigned char c = buf[i];
            if (c == 0) {
                bad(v, "NUL byte in the request head");
                return;
            }
            if (c == '\r' && i + 1 < len && buf[i + 1] != '\n') {
                bad(v, "bare CR in the request head");
                return;
            }
            if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f) {
                bad(v, "control character in the request head");
                return;
            }
            i++;
        }
        if (i >= FVS_GATE_MAX_HEAD) {
            if (line == 0)
                refuse(v, 414, "uri_too_long", "request target too long");
            else
                refuse(v, 431, "header_fields_too_large", "request header block too large");
            return;
        }
        if (i == len) {
            /* Incomplete: an over-long request target is known already. */
            if (line == 0 && i - pos > FVS_GATE_MAX_TARGET + 32)
                refuse(v, 414, "uri_too_long", "request target too long");
            return;
        }
        size_t n = i - pos;
        if (n && buf[pos + n - 1] == '\r') n--;
        const unsigned char *p = buf + pos;
        pos = i + 1;
        if (line == 0) {
            if (check_request_line(p, n, v)) return;
            continue;
        }
        if (n == 0) { /* the blank line: the block is complete */
            v->head_len = pos;
            check_framing(&h, v);
            return;
        }
        if (check_header_line(p, n, &h, v)) return;
    }
}

static const char *reason_phrase(int status) {
    switch (status) {
    case 400:
        return "Bad Request";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

size_t fvs_gate_answer(int status, const char *code, const char *message, const char *request_id,
                       char *out, size_t cap) {
    /* code and message are the gate's own static texts (no quote or
     * backslash, never request bytes), so they go into the JSON as they
     * are. */
    char body[512];
    int blen = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code,
                        message);
    if (blen < 0 || (size_t)blen >= sizeof body) return 0;
    size_t len = 0;
    int n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n",
                     status, reason_phrase(status), blen);
    if (n < 0 || (size_t)n >= cap) return 0;
    len = (size_t)n;
    const char *const *h = fvs_security_headers();
    for (int i = 0; h[i]; i += 2) {
        n = snprintf(out + len, cap - len, "%s: %s\r\n", h[i], h[i + 1]);
        if (n < 0 || (size_t)n >= cap - len) return 0;
        len += (size_t)n;
    }
    n = snprintf(out + len, cap - len,
                 "Content-Security-Policy: %s\r\nCache-Control: %s\r\nX-Request-Id: %s\r\n"
                 "Connection: close\r\n\r\n%s",
                 fvs_csp(0), fvs_cache_control(0), request_id, body);
    if (n < 0 || (size_t)n >= cap - len) return 0;
    return len + (size_t)n;
}

/* ------------------------------------------------------------ the thread */

/* How long a refused connection is drained after its answer. */
#define LINGER_S 1.0
/* How long the gate stops accepting after accept() failed for want of
 * file descriptors (the listening socket stays readable: polling it at
 * once again would spin). */
#define ACCEPT_PAUSE_S 0.1

/* The most bytes drained from a refused connection in one wake-up. */
#define DRAIN_STEP ((size_t)256 * 1024)

typedef struct pending {
    int fd;
    int lingering; /* answered: draining until EOF or the deadline */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    double deadline;      /* for the header block (or the lingering) */
    double idle_deadline; /* last byte + conn_timeout */
    size_t peeked;
} pending;

struct fvs_gate {
    fvs_gate_config cfg;
    pthread_t thread;
    int wake[2];
    pending *p;
    int n;
    double accept_paused_until; /* after EMFILE/ENFILE */
    struct pollfd *pfd;
    unsigned char buf[FVS_GATE_MAX_HEAD + 1];
};

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) return 0;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return 1; /* other families: one bucket */
}

static void set_lowat(int fd, size_t bytes) {
    int v = bytes > (size_t)FVS_GATE_MAX_HEAD + 1 ? FVS_GATE_MAX_HEAD + 1 : (int)bytes;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v);
}

/* Drops p[i] from the list (its fd is the caller's business). */
static void forget(fvs_gate *g, int i) {
    g->p[i] = g->p[--g->n];
}

/* Reads and drops what fd has (up to DRAIN_STEP): 0 when more may come,
 * 1 when the peer has finished sending (EOF), -1 when the socket failed. */
static int drain(int fd, unsigned char *tmp, size_t tmplen) {
    size_t total = 0;
    while (total < DRAIN_STEP) {
        ssize_t r = recv(fd, tmp, tmplen, MSG_DONTWAIT);
        if (r > 0) {
            total += (size_t)r;
            continue;
        }
        if (r == 0) return 1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (errno != EINTR) return -1;
    }
    return 0;
}

/* Answers p[i] with a JSON error and lets it linger (see the top). */
static void answer(fvs_gate *g, int i, int status, const char *code, const char *message) {
    pending *c = &g->p[i];
    set_lowat(c->fd, 1);
    int drained = drain(c->fd, g->buf, sizeof g->buf);
    if (drained < 0) {
        close(c->fd);
        forget(g, i);
        return;
    }
    unsigned char rid[16];
    char hex[33];
    randombytes_buf(rid, sizeof rid);
    sodium_bin2hex(hex, sizeof hex, rid, sizeof rid);
    char out[2048];
    size_t len = fvs_gate_answer(status, code, message, hex, out, sizeof out);
    if (len) (void)send(c->fd, out, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (drained) { /* the client half-closed after its request: nothing to drain */
        close(c->fd);
        forget(g, i);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->lingering = 1;
    c->deadline = mono_s() + LINGER_S;
}

/* p[i] is readable: peek, judge, and pass it on, answer it or wait. */
static void on_readable(fvs_gate *g, int i, short revents) {
    pending *c = &g->p[i];
    if (c->lingering) {
        if (drain(c->fd, g->buf, sizeof g->buf) != 0) {
            close(c->fd);
            forget(g, i);
        }
        return;
    }
    ssize_t r = recv(c->fd, g->buf, sizeof g->buf, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    /* Closed or failed, or the peer half-closed with the block unfinished
     * (poll reports that however high the low-water mark). */
    if (r <= 0 || ((size_t)r <= c->peeked && (revents & (POLLRDHUP | POLLHUP | POLLERR)))) {
        close(c->fd);
        forget(g, i);
        return;
    }
    fvs_gate_verdict v;
    fvs_gate_check(g->buf, (size_t)r, &v);
    if (v.state == FVS_GATE_MORE && (size_t)r > FVS_GATE_MAX_HEAD)
        refuse(&v, 431, "header_fields_too_large", "request header block too large");
    if (v.state == FVS_GATE_REFUSE) {
        answer(g, i, v.status, v.code, v.message);
    } else if (v.state == FVS_GATE_PASS) {
        pending hand = *c;
        forget(g, i);
        set_lowat(hand.fd, 1);
        g->cfg.handover(g->cfg.handover_cls, hand.fd, (const struct sockaddr *)&hand.addr,
                        hand.addrlen);
    } else {
        c->peeked = (size_t)r;
        c->idle_deadline = mono_s() + g->cfg.conn_timeout;
        set_lowat(c->fd, (size_t)r + 1);
    }
}

/* Accepts what the listening socket has, within the caps. */
static void accept_new(fvs_gate *g, double now) {
    for (int k = 0; k < 64; k++) {
        struct sockaddr_storage a;
        socklen_t alen = sizeof a;
        int fd = accept4(g->cfg.listen_fd, (struct sockaddr *)&a, &alen, SOCK_CLOEXEC);
        if (fd < 0) { /* EAGAIN, a connection that went away, or no fds left */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                g->accept_paused_until = now + ACCEPT_PAUSE_S;
            return;
        }
        int from_ip = 0;
        for (int i = 0; i < g->n; i++) from_ip += same_host(&g->p[i].addr, &a);
        if (g->n >= g->cfg.max_pending || from_ip >= g->cfg.max_per_ip) {
            close(fd);
            continue;
        }
        pending *c = &g->p[g->n++];
        memset(c, 0, sizeof *c);
        c->fd = fd;
        c->addr = a;
        c->addrlen = alen;
        c->deadline = now + g->cfg.request_timeout;
        c->idle_deadline = now + g->cfg.conn_timeout;
    }
}

static void *gate_main(void *arg) {
    fvs_gate *g = arg;
    for (;;) {
        double now = mono_s();
        /* Deadlines: a block not complete in time is answered 408; a
         * connection idle for conn_timeout, and a lingering one, are
         * closed (as libmicrohttpd closes idle ones, without an answer). */
        for (int i = g->n - 1; i >= 0; i--) {
            int idle = !g->p[i].lingering && g->p[i].idle_deadline <= now;
            if (g->p[i].deadline > now && !idle) continue;
            if (g->p[i].lingering || idle) {
                /* What it sent is read first: a close with unread bytes
                 * would be a reset instead of an end of stream. */
                (void)drain(g->p[i].fd, g->buf, sizeof g->buf);
                close(g->p[i].fd);
                forget(g, i);
            } else {
                answer(g, i, 408, "request_timeout",
                       "the request head did not arrive within the request timeout");
            }
        }
        int accepting = now >= g->accept_paused_until;
        double next = accepting ? -1 : g->accept_paused_until;
        for (int i = 0; i < g->n; i++) {
            double t = g->p[i].deadline;
            if (!g->p[i].lingering && g->p[i].idle_deadline < t) t = g->p[i].idle_deadline;
            if (next < 0 || t < next) next = t;
        }
        int timeout = next < 0 ? -1 : (int)((next - now) * 1000) + 1;
        g->pfd[0] = (struct pollfd){.fd = g->wake[0], .events = POLLIN};
        g->pfd[1] = (struct pollfd){.fd = accepting ? g->cfg.listen_fd : -1, .events = POLLIN};
        for (int i = 0; i < g->n; i++)
            g->pfd[i + 2] = (struct pollfd){.fd = g->p[i].fd, .events = POLLIN | POLLRDHUP};
        int np = g->n;
        if (poll(g->pfd, (nfds_t)np + 2, timeout) < 0) {
            if (errno == EINTR) continue;
            perror("faceverifyd: gate: poll");
            break;
        }
        if (g->pfd[0].revents) break;
        /* From the end: forget() moves the last entry into the hole, and
         * the last entry has been seen already. */
        for (int i = np - 1; i >= 0; i--)
            if (g->pfd[i + 2].revents) on_readable(g, i, g->pfd[i + 2].revents);
        if (g->pfd[1].revents) accept_new(g, mono_s());
    }
    return NULL;
}

fvs_gate *fvs_gate_start(const fvs_gate_config *cfg) {
    if (cfg->max_pending <= 0 || cfg->max_per_ip <= 0 || !cfg->handover) {
        errno = EINVAL;
        return NULL;
    }
    fvs_gate *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->cfg = *cfg;
    if (g->cfg.request_timeout <= 0) g->cfg.request_timeout = 30;
    if (g->cfg.conn_timeout <= 0) g->cfg.conn_timeout = g->cfg.request_timeout;
    g->p = calloc((size_t)cfg->max_pending, sizeof *g->p);
    g->pfd = calloc((size_t)cfg->max_pending + 2, sizeof *g->pfd);
    g->wake[0] = g->wake[1] = -1;
    if (!g->p || !g->pfd || pipe2(g->wake, O_CLOEXEC) != 0 ||
        pthread_create(&g->thread, NULL, gate_main, g) != 0) {
        int e = errno;
        if (g->wake[0] >= 0) {
            close(g->wake[0]);
            close(g->wake[1]);
        }
        free(g->p);
        free(g->pfd);
        free(g);
        errno = e;
        return NULL;
    }
    return g;
}

void fvs_gate_stop(fvs_gate *g) {
    if (!g) return;
    char b = 1;
    while (write(g->wake[1], &b, 1) < 0 && errno == EINTR) {
    }
    pthread_join(g->thread, NULL);
    for (int i = 0; i < g->n; i++) close(g->p[i].fd);
    close(g->cfg.listen_fd);
    close(g->wake[0]);
    close(g->wake[1]);
    free(g->p);
    free(g->pfd);
    free(g);
}

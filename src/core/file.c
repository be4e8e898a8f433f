/*
 * file.c: the one capped whole-file reader of the library.
 *
 * Every file the library reads (the three dlib models, the Haar cascade, a
 * trained model, an image given by path) is read whole into memory through
 * fvi_read_file, so that the same failure gives the same status whichever
 * file it hit, and the CLI's exit code depends on what went wrong, not on
 * which model was unreadable.  The size is checked (fstat) before the
 * buffer is allocated, and only regular files are read: a FIFO or a device
 * could block or never end.  Messages use strerror_r (thread-safe; the
 * XSI version, since the build defines _POSIX_C_SOURCE).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fvi.h"

/* Reads up to n bytes, retrying after EINTR; bytes read, or -1 on error
 * (errno set). */
static long long read_all(int fd, unsigned char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long long)got;
}

/* The message of errno value e in buf (empty when strerror_r fails). */
static const char *errno_text(int e, char *buf, size_t cap) {
    if (strerror_r(e, buf, cap) != 0) buf[0] = '\0';
    return buf;
}

fv_status fvi_read_file(const char *path, size_t max_bytes, const char *what, fv_status absent,
                        fv_status too_large, unsigned char **data, size_t *len, char *err,
                        size_t errlen) {
    char eb[128];
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return fvi_seterr(err, errlen, e == ENOENT || e == ENOTDIR ? absent : FV_E_IO,
                          "cannot open %s %s: %s", what, path, errno_text(e, eb, sizeof eb));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return fvi_seterr(err, errlen, FV_E_IO, "cannot read %s %s: %s", what, path,
                          errno_text(e, eb, sizeof eb));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return fvi_seterr(err, errlen, FV_E_IO, "cannot read %s %s: %s", what, path,
                          S_ISDIR(sb.st_mode) ? errno_text(EISDIR, eb, sizeof eb)
                                              : "not a regular file");
    }
    if (sb.st_size < 0 || (unsigned long long)sb.st_size > (unsigned long long)max_bytes) {
        close(fd);
        return fvi_seterr(err, errlen, too_large, "%s %s: %lld bytes exceed the limit of %zu", what,
                          path, (long long)sb.st_size, max_bytes);
    }
    size_t n = (size_t)sb.st_size;
    unsigned char *buf = fvi_malloc(n + 1); /* n + 1: never 0, and room for a NUL */
    if (!buf) {
        close(fd);
        return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory reading %s %s", what, path);
    }
    long long got = read_all(fd, buf, n);
    int e = errno;
    close(fd);
    if (got < 0 || (size_t)got != n) {
        fvi_free(buf);
        return fvi_seterr(err, errlen, FV_E_IO, "cannot read %s %s: %s", what, path,
                          got < 0 ? errno_text(e, eb, sizeof eb) : "file shrank while read");
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return FV_OK;
}

fv_status fvi_read_model_file(const char *path, size_t max_bytes, const char *what,
                              unsigned char **data, size_t *len, char *err, size_t errlen) {
    return fvi_read_file(path, max_bytes, what, FV_E_MODEL_MISSING, FV_E_MODEL_CORRUPT, data, len,
                         err, errlen);
}

fv_status fvi_load_model_file(const char *path, size_t max_bytes, const char *what,
                              fvi_parse_fn parse, void *out, char *err, size_t errlen) {
    unsigned char *buf = NULL;
    size_t len = 0;
    fv_status st = fvi_read_model_file(path, max_bytes, what, &buf, &len, err, errlen);
    if (st != FV_OK) return st;
    char msg[200] = "";
    st = parse(buf, len, out, msg, sizeof msg);
    fvi_free(buf);
    if (st != FV_OK)
        return fvi_seterr(err, errlen, st, "%s %s: %s", what, path, msg[0] ? msg : fv_strerror(st));
    return FV_OK;
}

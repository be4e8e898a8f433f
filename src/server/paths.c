/*
 * paths.c: faceverifyd's default assets folder and database (paths.h).
 *
 * The same binary runs from the build tree (make run, the tests: the
 * source tree's files) and installed under a prefix that need not be the
 * CMAKE_INSTALL_PREFIX compiled in (cmake --install --prefix DIR), so the
 * daemon reads where it runs from /proc/self/exe at start-up and takes
 * its files relative to that.  The compiled-in paths (FVS_*) are set in
 * CMakeLists.txt.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "server/paths.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FVS_DEFAULT_DB
#define FVS_DEFAULT_DB "var/faceverify.db"
#endif
#ifndef FVS_ASSETS_DIR
#define FVS_ASSETS_DIR "src/server"
#endif
#ifndef FVS_FETCH_SCRIPT
#define FVS_FETCH_SCRIPT "scripts/fetch_models.sh"
#endif
#ifndef FVS_BUILD_DIR
#define FVS_BUILD_DIR ""
#endif
#ifndef FVS_INSTALL_PREFIX
#define FVS_INSTALL_PREFIX "/usr/local"
#endif

#define ASSETS_UNDER_PREFIX "/share/faceverify/server"

/* 1 when dir holds the API description (the marker of an assets folder). */
static int holds_assets(const char *dir) {
    char probe[PATH_MAX + 16];
    struct stat sb;
    if ((size_t)snprintf(probe, sizeof probe, "%s/openapi.json", dir) >= sizeof probe) return 0;
    return stat(probe, &sb) == 0;
}

void fvs_paths_default(fvs_paths *p) {
    char exe[PATH_MAX], build[PATH_MAX];
    memset(p, 0, sizeof *p);
    snprintf(p->assets, sizeof p->assets, "%s", FVS_ASSETS_DIR);
    snprintf(p->db_url, sizeof p->db_url, "sqlite://%s", FVS_DEFAULT_DB);
    snprintf(p->fetch, sizeof p->fetch, "%s", FVS_FETCH_SCRIPT);
    if (!realpath("/proc/self/exe", exe)) return; /* no /proc: the build-tree defaults */
    size_t bn = 0;
    if (FVS_BUILD_DIR[0] && realpath(FVS_BUILD_DIR, build)) bn = strlen(build);
    if (bn && strncmp(exe, build, bn) == 0 && exe[bn] == '/') return;
    /* exe is PREFIX/bin/faceverifyd: cut two components to get PREFIX */
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(exe, '/');
        if (!slash) return;
        *slash = 0;
    }
    const char *prefix = exe; /* "" for a daemon at /bin/faceverifyd */
    snprintf(p->fetch, sizeof p->fetch, "%s/share/faceverify/fetch_models.sh", prefix);
    snprintf(p->assets, sizeof p->assets, "%s" ASSETS_UNDER_PREFIX, prefix);
    if (!holds_assets(p->assets) && holds_assets(FVS_INSTALL_PREFIX ASSETS_UNDER_PREFIX))
        snprintf(p->assets, sizeof p->assets, "%s", FVS_INSTALL_PREFIX ASSETS_UNDER_PREFIX);
    /* FHS: a system-wide install keeps its state in /var/lib */
    const char *state = strcmp(prefix, "/usr") == 0 ? "" : prefix;
    snprintf(p->db_url, sizeof p->db_url, "sqlite://%s/var/lib/faceverify/faceverify.db", state);
}

/* mkdir -p of path's folders; the innermost gets mode last, the others
 * 0755.  0 or -1 (errno set). */
static int make_parents(char *path, mode_t last) {
    char *end = strrchr(path, '/');
    if (!end || end == path) return 0;
    *end = 0;
    int rc = 0;
    for (char *s = strchr(path + 1, '/');; s = strchr(s + 1, '/')) {
        if (s) *s = 0;
        if (mkdir(path, s ? 0755 : last) != 0 && errno != EEXIST) rc = -1;
        if (!s) break;
        *s = '/';
        if (rc) break;
    }
    *end = '/';
    return rc;
}

int fvs_paths_prepare_sqlite(const char *url, char *err, size_t errlen) {
    if (strncmp(url, "sqlite://", 9) != 0) return 0;
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s", url + 9) >= sizeof path) {
        snprintf(err, errlen, "database path too long");
        return -1;
    }
    if (!path[0]) return 0;
    if (make_parents(path, 0700)) {
        snprintf(err, errlen, "cannot create the folders of %s: %s", path, strerror(errno));
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    else if (errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/*
 * paths.c: the models folder of a library that was told none (paths.h).
 *
 * One binary must work in two places.  Built, it runs from the build tree
 * and the models are in the source tree (make run, the tests).  Installed,
 * with `make install PREFIX=DIR` or `cmake --install --prefix DIR`, the
 * prefix may differ from the CMAKE_INSTALL_PREFIX compiled in, so the
 * library asks the dynamic linker where its own code lives (dladdr1 on a
 * function of this file): the shared library's path, or for the static
 * library the main program's (/proc/self/exe, since glibc reports argv[0]
 * for it).  Code under CMAKE_BINARY_DIR (FV_BUILD_DIR) is the build tree;
 * anything else looks in ../share/faceverify next to it.  This file
 * depends on nothing above core.
 */
#define _GNU_SOURCE /* dladdr1, RTLD_DL_LINKMAP */
#include "core/paths.h"

#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef FV_DEFAULT_MODELS_DIR
#define FV_DEFAULT_MODELS_DIR "models"
#endif
#ifndef FV_INSTALL_MODELS_DIR
#define FV_INSTALL_MODELS_DIR "/usr/local/share/faceverify"
#endif
#ifndef FV_BUILD_DIR
#define FV_BUILD_DIR ""
#endif

/* The file whose presence marks a models folder (the first one loaded). */
#define PROBE_MODEL "mmod_human_face_detector.dat"

static pthread_once_t resolve_once = PTHREAD_ONCE_INIT;
static char resolved[PATH_MAX + 32]; /* written once, under resolve_once */

/* 1 when dir/PROBE_MODEL exists. */
static int holds_models(const char *dir) {
    char probe[PATH_MAX + 64];
    struct stat sb;
    if ((size_t)snprintf(probe, sizeof probe, "%s/%s", dir, PROBE_MODEL) >= sizeof probe) return 0;
    return stat(probe, &sb) == 0;
}

/* Real path of the file holding this code into out[PATH_MAX]; 0 or -1. */
static int own_file(char *out) {
    Dl_info info;
    struct link_map *map = NULL;
    const char *name = "/proc/self/exe";
    if (dladdr1((void *)own_file, &info, (void **)&map, RTLD_DL_LINKMAP) && map && map->l_name &&
        map->l_name[0])
        name = map->l_name; /* a shared object; "" is the main program */
    return realpath(name, out) ? 0 : -1;
}

/* 1 when path lies in dir (a prefix ending at a '/'). */
static int is_under(const char *path, const char *dir) {
    size_t n = strlen(dir);
    return n && strncmp(path, dir, n) == 0 && path[n] == '/';
}

static void resolve(void) {
    char self[PATH_MAX], build[PATH_MAX];
    snprintf(resolved, sizeof resolved, "%s", FV_INSTALL_MODELS_DIR);
    if (own_file(self)) return;
    if (FV_BUILD_DIR[0] && realpath(FV_BUILD_DIR, build) && is_under(self, build)) {
        snprintf(resolved, sizeof resolved, "%s", FV_DEFAULT_MODELS_DIR);
        return;
    }
    /* self is PREFIX/<lib or bin>/file: cut the last two components */
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(self, '/');
        if (!slash) return;
        *slash = 0;
    }
    char mine[PATH_MAX + 32];
    snprintf(mine, sizeof mine, "%s/share/faceverify", self);
    if (holds_models(mine) || !holds_models(FV_INSTALL_MODELS_DIR))
        snprintf(resolved, sizeof resolved, "%s", mine);
}

const char *fvi_models_dir(const char *configured) {
    if (configured && *configured) return configured;
    const char *env = getenv("FACEVERIFY_MODELS");
    if (env && *env) return env;
    pthread_once(&resolve_once, resolve);
    return resolved;
}

/*
 * paths.h: faceverifyd's default files, for a daemon in its build tree or
 * installed under some prefix (paths.c).
 */
#ifndef FVS_PATHS_H
#define FVS_PATHS_H

#include <limits.h>
#include <stddef.h>

typedef struct fvs_paths {
    char assets[PATH_MAX + 32]; /* openapi.json, docs.html, static/ */
    char db_url[PATH_MAX + 64]; /* "sqlite://" + the default database file */
    char fetch[PATH_MAX + 64];  /* fetch_models.sh, for `faceverifyd fetch-models` */
} fvs_paths;

/* The defaults when neither a flag nor the environment names them:
 *   build tree (the daemon lies under CMAKE_BINARY_DIR): the source tree's
 *     src/server and var/faceverify.db, as make run and the tests expect;
 *   installed at PREFIX/bin/faceverifyd: PREFIX/share/faceverify/server
 *     (else the compiled-in CMAKE_INSTALL_PREFIX's, when only that exists)
 *     and PREFIX/var/lib/faceverify/faceverify.db (/var/lib/faceverify
 *     for PREFIX /usr).
 * The models' fetch script: the source tree's scripts/fetch_models.sh, or
 * PREFIX/share/faceverify/fetch_models.sh.
 * Creates nothing.  Thread-safe. */
void fvs_paths_default(fvs_paths *p);

/* For a sqlite:// URL: creates the database file's missing folders (the
 * last one 0700, so only the server's user can read the templates) and an
 * empty database file 0600 when there is none (SQLite gives its journal
 * files the same mode).  Other URLs: nothing.  Returns 0, or -1 with the
 * reason in err. */
int fvs_paths_prepare_sqlite(const char *url, char *err, size_t errlen);

#endif

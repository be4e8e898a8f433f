/*
 * models.c: the model registry (see models.h).  A small array filled once
 * at start, in file-name order so that a name shared by two files
 * resolves the same way on every start.
 */
#include "server/models.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_MODELS 64
#define EXT ".fvm"

typedef struct entry {
    char *stem; /* file name without EXT */
    fv_model *m;
} entry;

struct fvs_models {
    entry e[MAX_MODELS];
    int n;
};

void fvs_models_destroy(fvs_models *ms) {
    if (!ms) return;
    for (int i = 0; i < ms->n; i++) {
        free(ms->e[i].stem);
        fv_model_destroy(ms->e[i].m);
    }
    free(ms);
}

/* Ids go into URLs, JSON, index file names and log lines. */
static int id_ok(const char *id) {
    size_t n = strlen(id);
    if (n == 0 || n > 63 || strcmp(id, FV_MODEL_ID) == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

fvs_models *fvs_models_load(const char *dir, char *err, size_t errlen) {
    fvs_models *ms = calloc(1, sizeof *ms);
    if (!ms) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!dir || !*dir) return ms;
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "models dir %s: cannot open", dir);
        free(ms);
        return NULL;
    }
    char *names[MAX_MODELS] = {0};
    int nn = 0, rc = 0;
    const struct dirent *de;
    while (!rc && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len <= strlen(EXT) || strcmp(de->d_name + len - strlen(EXT), EXT) != 0 ||
            de->d_name[0] == '.')
            continue;
        if (nn == MAX_MODELS) {
            snprintf(err, errlen, "models dir %s: more than %d model files", dir, MAX_MODELS);
            rc = -1;
        } else if (!(names[nn] = strdup(de->d_name))) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        } else {
            nn++;
        }
    }
    closedir(d);
    qsort(names, (size_t)nn, sizeof names[0], by_name);
    for (int i = 0; i < nn; i++) {
        char path[4096], lerr[400] = "";
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (rc || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        fv_model *m = NULL;
        fv_status st = fv_model_load(path, &m, lerr, sizeof lerr);
        if (st != FV_OK) {
            snprintf(err, errlen, "%s", lerr[0] ? lerr : fv_strerror(st));
            rc = -1;
        } else if (!id_ok(fv_model_id(m))) {
            snprintf(err, errlen, "%s: unusable model id", path);
            fv_model_destroy(m);
            rc = -1;
        } else {
            names[i][strlen(names[i]) - strlen(EXT)] = 0;
            ms->e[ms->n].stem = names[i];
            ms->e[ms->n].m = m;
            ms->n++;
            names[i] = NULL;
        }
    }
    for (int i = 0; i < nn; i++) free(names[i]);
    if (rc) {
        fvs_models_destroy(ms);
        return NULL;
    }
    return ms;
}

int fvs_models_find(const fvs_models *ms, const char *name, const char **id,
                    const fv_model **model) {
    if (!name) return -1;
    if (strcmp(name, FV_MODEL_ID) == 0) {
        *id = FV_MODEL_ID;
        *model = NULL;
        return 0;
    }
    /* Ids first: an id is what is stored, a stem only a convenience. */
    for (int pass = 0; ms && pass < 2; pass++)
        for (int i = 0; i < ms->n; i++) {
            const char *key = pass == 0 ? fv_model_id(ms->e[i].m) : ms->e[i].stem;
            if (strcmp(key, name) == 0) {
                *id = fv_model_id(ms->e[i].m);
                *model = ms->e[i].m;
                return 0;
            }
        }
    return -1;
}

json_t *fvs_models_json(const fvs_models *ms, float resnet_threshold) {
    json_t *arr = json_array();
    json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:i, s:f}", "name", FV_MODEL_ID, "id",
                                         FV_MODEL_ID, "kind", "resnet", "dim", FV_EMBED_DIM,
                                         "threshold", (double)resnet_threshold));
    for (int i = 0; ms && i < ms->n; i++) {
        const fv_model *m = ms->e[i].m;
        json_t *o = json_pack("{s:s, s:s, s:s, s:i}", "name", ms->e[i].stem, "id", fv_model_id(m),
                              "kind", fv_model_kind(m), "dim", fv_model_dim(m));
        float t = fv_model_threshold(m);
        json_object_set_new(o, "threshold", t > 0 ? json_real((double)t) : json_null());
        json_array_append_new(arr, o);
    }
    return arr;
}

/*
 * bulk.c: `faceverifyd import COLLECTION DIR`, `faceverifyd export
 * COLLECTION FILE` and `faceverifyd import COLLECTION --from FILE`.
 *
 * Folder import: DIR holds one folder per person, named as the subject;
 * every regular file directly inside a person folder is one photo (deeper
 * folders are not read; files directly in DIR and hidden entries are
 * reported or skipped, see scan()).  Photos are embedded by `threads`
 * worker threads at once, each with the whole image to itself (the
 * engine is made with one thread, so the workers do not queue on the
 * engine's pool, which runs one job at a time); each worker then applies
 * the API's enrolment rules (enrol.h: quality gate, duplicate warning) and
 * queues the face; the worker that fills the queue stores it in one
 * transaction (WRITE_BATCH).  Every insert goes through the store's one
 * insert path (fvs_faces_insert_many), so templates are sealed as the API
 * seals them and the change log tells a running faceverifyd's index about
 * each new face.
 *
 * Idempotence: each photo's fingerprint (store.h fvs_store_import_fp, a
 * keyed hash, never a plain one) is looked up in the collection before the
 * photo is decoded; a photo already there is skipped.
 *
 * Export and import: one JSON document (docs/export-format.md).  With a
 * template key the templates are re-sealed for the file, bound to their
 * subject's position in it, and opened on import with the same key;
 * without one they are plaintext and the file is made 0600.  An import
 * validates and opens everything before it writes anything.
 */
#define _XOPEN_SOURCE 700 /* scandir, alphasort, fstatat */
#include "server/bulk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/crypto.h"
#include "server/enrol.h"
#include "server/models.h"

#define EXPORT_FORMAT "faceverify-export"
#define EXPORT_VERSION 1
/* The largest export file an import reads. */
#define EXPORT_MAX_BYTES (2LL * 1024 * 1024 * 1024)

/* ------------------------------------------------------------ helpers */

typedef struct coll_find {
    const char *name;
    fvs_collection c;
    int found;
} coll_find;

static int coll_row(void *ctx, const fvs_collection *c) {
    coll_find *f = ctx;
    if (strcmp(c->name, f->name) == 0) {
        f->c = *c;
        f->found = 1;
    }
    return 0;
}

/* The collection named name: 0, 1 when there is none, -1 after a message. */
static int find_coll(fvs_store *st, const char *name, fvs_collection *out) {
    coll_find f = {name, {0}, 0};
    char err[512];
    if (fvs_collection_each(st, coll_row, &f, err, sizeof err)) {
        fprintf(stderr, "faceverifyd: %s\n", err);
        return -1;
    }
    if (!f.found) return 1;
    *out = f.c;
    return 0;
}

/* The API's rule for a subject name (routes.c): 1..FVS_NAME_MAX bytes of
 * UTF-8 (json_string refuses anything else). */
static int valid_subject_name(const char *s) {
    size_t n = strlen(s);
    json_t *j = n > 0 && n <= FVS_NAME_MAX ? json_string(s) : NULL;
    json_decref(j);
    return j != NULL;
}

/* One audit row for a whole command (no key: the operator did it). */
static void audit(fvs_store *st, int64_t coll, const char *action, json_t *detail) {
    char *text = detail ? json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    fvs_audit_entry e = {coll, NULL, action, 0, 0, NULL, 200, "ok", text};
    char err[512];
    if (fvs_audit_write(st, &e, err, sizeof err))
        fprintf(stderr, "faceverifyd: audit log: %s\n", err);
    free(text);
    json_decref(detail);
}

/* ------------------------------------------------------------ folder import */

typedef enum { ST_PENDING, ST_QUEUED, ST_ENROLLED, ST_SKIPPED, ST_REJECTED } item_state;

/* Faces wait in a queue and are stored WRITE_BATCH at a time, one
 * transaction each: on SQLite every commit is a sync to disk, which cost
 * more than embedding an LFW photo.  A crash loses at most the queue (a
 * re-run enrols it again); the duplicate check does not see faces still
 * queued. */
#define WRITE_BATCH 32

/* A face waiting to be stored. */
typedef struct queued {
    size_t item;
    int64_t sid;
    fv_face_result fr;
    char fp[65];
    int keyed; /* fp is the template key's image MAC, else an import_fp */
} queued;

typedef struct folder {
    char *name;
    int64_t id; /* 0 until found or created */
} folder;

typedef struct item {
    char *path;    /* as given under DIR */
    size_t folder; /* index into folders; SIZE_MAX: not in a person folder */
    item_state state;
    const char *code;  /* the reject's reason (an API error code) */
    char message[256]; /* its detail */
    int64_t face_id;
    fvs_dup_hit dup; /* dup.subject > 0: enrolled with a duplicate warning */
} item;

typedef struct run {
    fvs_store *st;
    fvs_index *ix;
    const fv_engine *eng;
    const fv_model *model;
    fvs_collection coll;
    double gate;
    const fvs_bulk_opts *o;
    item *items;
    size_t n;
    folder *folders;
    size_t nfolders;
    atomic_size_t next;
    pthread_mutex_t mu; /* the counters, folder ids, the progress line */
    size_t done, enrolled, skipped, rejected, created, dups;
    int tty;
    atomic_int fatal;
    char fatal_err[512];
    queued *q, *wq; /* the queue (r->mu) and the batch being written (wmu) */
    size_t nq;
    pthread_mutex_t wmu; /* one writer at a time */
} run;

/* Grows *arr (elements of size sz) to hold one more; 0 ok. */
static int grow(void **arr, size_t *cap, size_t n, size_t sz) {
    if (n < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    if (nc > SIZE_MAX / sz) return -1;
    void *p = realloc(*arr, nc * sz);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 2 > PATH_MAX) return NULL;
    char *p = malloc(la + lb + 2);
    if (!p) return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

static int not_hidden(const struct dirent *d) {
    return d->d_name[0] != '.';
}

/* Adds one item (path owned by the list); -1 out of memory. */
static int add_item(run *r, size_t *cap, char *path, size_t folder) {
    if (!path || grow((void **)&r->items, cap, r->n, sizeof *r->items)) {
        free(path);
        return -1;
    }
    item *it = &r->items[r->n++];
    memset(it, 0, sizeof *it);
    it->path = path;
    it->folder = folder;
    return 0;
}

static void reject(item *it, const char *code, const char *fmt, const char *detail) {
    it->state = ST_REJECTED;
    it->code = code;
    snprintf(it->message, sizeof it->message, fmt, detail);
}

/* Lists DIR: a folder per person (sorted by name), the regular files
 * directly inside each (sorted); files directly in DIR and person folders
 * whose name is no valid subject name become rejects.  Hidden entries
 * (".name") are not read.  0, or -1 after a message. */
static int scan(run *r, const char *dir) {
    struct dirent **top = NULL;
    int nt = scandir(dir, &top, not_hidden, alphasort);
    if (nt < 0) {
        fprintf(stderr, "faceverifyd: import: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    size_t icap = 0, fcap = 0;
    int rc = 0;
    for (int i = 0; i < nt && !rc; i++) {
        char *sub = join(dir, top[i]->d_name);
        struct stat sb;
        if (!sub || stat(sub, &sb)) {
            rc = sub ? 0 : -1;
            if (sub) rc = add_item(r, &icap, sub, SIZE_MAX);
            if (!rc) reject(&r->items[r->n - 1], "unreadable", "%s", strerror(errno));
            continue;
        }
        if (!S_ISDIR(sb.st_mode)) {
            rc = add_item(r, &icap, sub, SIZE_MAX);
            if (!rc)
                reject(&r->items[r->n - 1], "no_subject_folder", "%s",
                       "a photo must be inside a folder named after its person");
            continue;
        }
        if (!valid_subject_name(top[i]->d_name)) {
            rc = add_item(r, &icap, sub, SIZE_MAX);
            if (!rc)
                reject(&r->items[r->n - 1], "validation_error", "%s",
                       "the folder's name is no subject name (1..200 bytes of UTF-8)");
            continue;
        }
        struct dirent **files = NULL;
        int nf = scandir(sub, &files, not_hidden, alphasort);
        if (nf < 0) {
            rc = add_item(r, &icap, sub, SIZE_MAX);
            if (!rc) reject(&r->items[r->n - 1], "unreadable", "%s", strerror(errno));
            continue;
        }
        if (grow((void **)&r->folders, &fcap, r->nfolders, sizeof *r->folders)) rc = -1;
        char *name = rc ? NULL : strdup(top[i]->d_name);
        if (!rc && !name) rc = -1;
        if (!rc) {
            r->folders[r->nfolders].name = name;
            r->folders[r->nfolders].id = 0;
            r->nfolders++;
        }
        for (int j = 0; j < nf; j++) {
            char *p = rc ? NULL : join(sub, files[j]->d_name);
            struct stat fb;
            /* regular files only: a deeper folder is not read */
            if (!rc && p && stat(p, &fb) == 0 && !S_ISREG(fb.st_mode)) {
                free(p);
                p = NULL;
            } else if (!rc) {
                rc = add_item(r, &icap, p, r->nfolders - 1);
            }
            free(files[j]);
        }
        free(files);
        free(sub);
    }
    for (int i = 0; i < nt; i++) free(top[i]);
    free(top);
    if (rc) fprintf(stderr, "faceverifyd: import: out of memory listing %s\n", dir);
    return rc;
}

/* Reads a whole file of at most max bytes into *buf; 0, or the reject. */
static int read_photo(item *it, size_t max, unsigned char **buf, size_t *len) {
    int fd = open(it->path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb)) {
        reject(it, "unreadable", "%s", strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    if (sb.st_size <= 0 || (unsigned long long)sb.st_size > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "%lld bytes (at most %zu: --max-body)", (long long)sb.st_size,
                 max);
        reject(it, sb.st_size <= 0 ? "invalid_image" : "payload_too_large", "%s",
               sb.st_size <= 0 ? "empty file" : msg);
        close(fd);
        return -1;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    unsigned char *b = malloc(n);
    while (b && got < n) {
        ssize_t k = read(fd, b + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd);
    if (!b || got != n) {
        reject(it, "unreadable", "%s", b ? "short read" : "out of memory");
        free(b);
        return -1;
    }
    *buf = b;
    *len = n;
    return 0;
}

static void set_fatal(run *r, const char *err) {
    pthread_mutex_lock(&r->mu);
    if (!atomic_load(&r->fatal)) snprintf(r->fatal_err, sizeof r->fatal_err, "%s", err);
    atomic_store(&r->fatal, 1);
    pthread_mutex_unlock(&r->mu);
}

/* The subject id of folder f, made on first use.  0 ok, -1 fatal. */
static int subject_of(run *r, size_t f, int64_t *id) {
    char err[512];
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    folder *fo = &r->folders[f];
    if (!fo->id) {
        rc = fvs_subject_find(r->st, r->coll.id, fo->name, &fo->id, err, sizeof err);
        if (rc == 1) {
            json_t *s = NULL;
            rc = fvs_subject_create(r->st, r->coll.id, fo->name, NULL, &s, err, sizeof err);
            if (rc == 0) {
                fo->id = (int64_t)json_integer_value(json_object_get(s, "id"));
                r->created++;
            } else if (rc == 1) { /* made by another process meanwhile */
                rc = fvs_subject_find(r->st, r->coll.id, fo->name, &fo->id, err, sizeof err);
            }
            json_decref(s);
        }
    }
    *id = fo->id;
    pthread_mutex_unlock(&r->mu);
    if (rc) set_fatal(r, rc > 0 ? "subject vanished during the import" : err);
    return rc ? -1 : 0;
}

/* Stores the queued faces in one transaction and marks their items
 * enrolled.  Called with neither lock held. */
static void flush(run *r) {
    pthread_mutex_lock(&r->wmu);
    pthread_mutex_lock(&r->mu);
    size_t n = r->nq;
    memcpy(r->wq, r->q, n * sizeof *r->q);
    r->nq = 0;
    pthread_mutex_unlock(&r->mu);
    fvs_face_row rows[WRITE_BATCH];
    int64_t sids[WRITE_BATCH], ids[WRITE_BATCH];
    for (size_t i = 0; i < n; i++) {
        const queued *e = &r->wq[i];
        rows[i] =
            fvs_enrol_row(r->coll.model, &e->fr, e->keyed ? e->fp : NULL, e->keyed ? NULL : e->fp);
        sids[i] = e->sid;
    }
    char err[512];
    int rc = n ? fvs_faces_insert_many(r->st, r->coll.id, n, sids, rows, ids, err, sizeof err) : 0;
    if (rc) set_fatal(r, rc > 0 ? "a subject vanished during the import" : err);
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; !rc && i < n; i++) {
        item *it = &r->items[r->wq[i].item];
        it->face_id = ids[i];
        it->state = ST_ENROLLED;
        r->enrolled++;
        r->dups += it->dup.subject > 0;
    }
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_unlock(&r->wmu);
}

/* Queues it's face (subject sid, fingerprint fp) for the next batch,
 * writing the batch first when the queue is full. */
static void queue_face(run *r, item *it, int64_t sid, const fv_face_result *fr, const char *fp,
                       int keyed) {
    for (;;) {
        pthread_mutex_lock(&r->mu);
        if (r->nq < WRITE_BATCH) break;
        pthread_mutex_unlock(&r->mu);
        flush(r);
    }
    queued *e = &r->q[r->nq++];
    e->item = (size_t)(it - r->items);
    e->sid = sid;
    e->fr = *fr;
    snprintf(e->fp, sizeof e->fp, "%s", fp);
    e->keyed = keyed;
    it->state = ST_QUEUED;
    int full = r->nq == WRITE_BATCH;
    pthread_mutex_unlock(&r->mu);
    if (full) flush(r);
}

/* One photo through the API's enrolment: fingerprint (skip when known),
 * decode, detect and embed, quality gate, duplicate check, insert. */
static void enrol_one(run *r, item *it) {
    unsigned char *buf = NULL;
    size_t len = 0;
    char fp[65], err[512] = "";
    const char *column = NULL;
    int exists = 0;
    if (read_photo(it, r->o->max_bytes, &buf, &len)) return;
    if (fvs_store_import_fp(r->st, buf, len, fp, &column, err, sizeof err) ||
        fvs_face_fp_exists(r->st, r->coll.id, fp, &exists, err, sizeof err)) {
        free(buf);
        set_fatal(r, err);
        return;
    }
    if (exists) {
        free(buf);
        it->state = ST_SKIPPED;
        return;
    }
    fv_image *img = NULL;
    fv_status s = fv_image_decode(buf, len, NULL, &img, err, sizeof err);
    free(buf);
    if (s != FV_OK) {
        reject(it, s == FV_E_IMAGE_TOO_LARGE ? "payload_too_large" : fv_status_name(s), "%s",
               err[0] ? err : fv_strerror(s));
        return;
    }
    fv_detect_options opt;
    fv_detect_options_init(&opt);
    fv_face_result fr;
    s = fv_model_embed_face(r->eng, r->model, img, &opt, !r->o->largest, &fr, err, sizeof err);
    fv_image_destroy(img);
    if (s == FV_E_MULTIPLE_FACES) {
        char msg[96];
        snprintf(msg, sizeof msg, "%zu faces found (--largest enrols the largest)", fr.faces);
        reject(it, fv_status_name(s), "%s", msg);
        return;
    }
    if (s != FV_OK) {
        reject(it, fv_status_name(s), "%s", err[0] ? err : fv_strerror(s));
        return;
    }
    if (fr.quality.score < r->gate && !r->o->force) {
        char msg[128];
        snprintf(msg, sizeof msg, "face quality %.3f is below the minimum %.3f (--force)",
                 (double)fr.quality.score, r->gate);
        reject(it, "low_quality", "%s", msg);
        return;
    }
    int64_t sid = 0;
    if (subject_of(r, it->folder, &sid)) return;
    if (fvs_enrol_find_duplicate(r->st, r->ix, &r->coll, sid, fr.embedding, fr.quality.score,
                                 &it->dup, err, sizeof err)) {
        set_fatal(r, err);
        return;
    }
    queue_face(r, it, sid, &fr, fp, strcmp(column, "image_sha256") == 0);
}

/* The progress line on a terminal: a bar and the counts.  r->mu held. */
static void progress(const run *r) {
    if (!r->tty) return;
    enum { WIDTH = 30 };
    size_t fill = r->n ? r->done * WIDTH / r->n : WIDTH;
    char bar[WIDTH + 1];
    for (size_t i = 0; i < WIDTH; i++) bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = 0;
    fprintf(stderr, "\r[%s] %zu/%zu  enrolled %zu  skipped %zu  rejected %zu", bar, r->done, r->n,
            r->enrolled, r->skipped, r->rejected);
    fflush(stderr);
}

static void *worker(void *arg) {
    run *r = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->n || atomic_load(&r->fatal)) break;
        item *it = &r->items[i];
        if (it->state == ST_PENDING) enrol_one(r, it);
        pthread_mutex_lock(&r->mu);
        r->done++; /* enrolled and dups: counted when written (flush) */
        r->skipped += it->state == ST_SKIPPED;
        r->rejected += it->state == ST_REJECTED;
        progress(r);
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

/* The report: one JSON document (--json) or lines of text, on stdout. */
static void report(const run *r) {
    json_t *rejects = json_array(), *warnings = json_array();
    for (size_t i = 0; i < r->n; i++) {
        const item *it = &r->items[i];
        const char *subj = it->folder == SIZE_MAX ? NULL : r->folders[it->folder].name;
        if (it->state == ST_REJECTED)
            json_array_append_new(rejects,
                                  json_pack("{s:s, s:s?, s:s, s:s}", "path", it->path, "subject",
                                            subj, "reason", it->code, "message", it->message));
        if (it->state == ST_ENROLLED && it->dup.subject > 0)
            json_array_append_new(
                warnings, json_pack("{s:s, s:s?, s:I, s:s, s:{s:I, s:s}, s:f}", "path", it->path,
                                    "subject", subj, "face_id", (json_int_t)it->face_id, "code",
                                    "duplicate", "matches", "id", (json_int_t)it->dup.subject,
                                    "name", it->dup.name, "distance", (double)it->dup.distance));
    }
    if (r->o->json) {
        json_t *doc =
            json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "collection", r->coll.name,
                      "photos", (json_int_t)r->n, "enrolled", (json_int_t)r->enrolled, "skipped",
                      (json_int_t)r->skipped, "rejected", (json_int_t)r->rejected,
                      "subjects_created", (json_int_t)r->created, "duplicate_warnings",
                      (json_int_t)r->dups, "rejects", rejects, "warnings", warnings);
        char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        if (text) printf("%s\n", text);
        free(text);
        json_decref(doc);
        return;
    }
    printf("faceverifyd: import into '%s': %zu photo%s: %zu enrolled, %zu skipped (already "
           "enrolled), %zu rejected; %zu subject%s created; %zu duplicate warning%s\n",
           r->coll.name, r->n, r->n == 1 ? "" : "s", r->enrolled, r->skipped, r->rejected,
           r->created, r->created == 1 ? "" : "s", r->dups, r->dups == 1 ? "" : "s");
    size_t i;
    json_t *e;
    json_array_foreach(rejects, i, e) {
        printf("rejected: %s: %s (%s)\n", json_string_value(json_object_get(e, "path")),
               json_string_value(json_object_get(e, "reason")),
               json_string_value(json_object_get(e, "message")));
    }
    json_array_foreach(warnings, i, e) {
        printf("warning: %s: enrolled, but matches subject %s: the same person twice?\n",
               json_string_value(json_object_get(e, "path")),
               json_string_value(json_object_get(json_object_get(e, "matches"), "name")));
    }
    json_decref(rejects);
    json_decref(warnings);
}

static void free_run(run *r) {
    for (size_t i = 0; i < r->n; i++) free(r->items[i].path);
    for (size_t i = 0; i < r->nfolders; i++) free(r->folders[i].name);
    free(r->items);
    free(r->folders);
    free(r->q);
    free(r->wq);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->wmu);
}

int fvs_bulk_import_dir(fvs_store *st, const fvs_bulk_opts *o, const char *dir) {
    run r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    pthread_mutex_init(&r.wmu, NULL);
    r.st = st;
    r.o = o;
    r.q = calloc(WRITE_BATCH, sizeof *r.q);
    r.wq = calloc(WRITE_BATCH, sizeof *r.wq);
    int rc = r.q && r.wq ? find_coll(st, o->collection, &r.coll) : -1;
    if (rc) {
        if (!r.q || !r.wq) fprintf(stderr, "faceverifyd: import: out of memory\n");
        if (rc > 0)
            fprintf(stderr,
                    "faceverifyd: import: no collection '%s' (faceverifyd createcollection "
                    "makes one)\n",
                    o->collection);
        free_run(&r);
        return 1;
    }
    r.gate = o->min_quality >= 0 ? o->min_quality : fvs_enrol_gate(&r.coll, o->gate_default);
    char err[512];
    fvs_models *reg = fvs_models_load(o->trained_dir, err, sizeof err);
    const char *mid = NULL;
    if (!reg || fvs_models_find(reg, r.coll.model, &mid, &r.model)) {
        fprintf(stderr, "faceverifyd: import: %s\n",
                reg ? "this collection's model is not in --models-dir" : err);
        fvs_models_destroy(reg);
        free_run(&r);
        return 1;
    }
    fv_config ec;
    fv_config_init(&ec);
    ec.models_dir = o->models_dir;
    ec.threads = 1; /* the workers below are the parallelism (see the top) */
    fv_engine *eng = NULL;
    fv_status s = fv_engine_create(&ec, &eng, err, sizeof err);
    /* The duplicate check's index checks storage before each search: this
     * process runs no LISTEN thread (--index-sync notify). */
    fvs_index_config icfg = *o->icfg;
    icfg.sync_notify = 0;
    r.ix = s == FV_OK ? fvs_index_create(st, &icfg) : NULL;
    if (s != FV_OK || !r.ix || scan(&r, dir)) {
        if (s != FV_OK) fprintf(stderr, "faceverifyd: import: models: %s\n", err);
        fvs_index_destroy(r.ix);
        fv_engine_destroy(eng);
        fvs_models_destroy(reg);
        free_run(&r);
        return 1;
    }
    r.eng = eng;
    r.tty = isatty(STDERR_FILENO);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nt = o->threads > 0 ? (size_t)o->threads : ncpu > 0 ? (size_t)ncpu : 1;
    if (nt > r.n) nt = r.n ? r.n : 1;
    pthread_t th[256];
    if (nt > 256) nt = 256;
    size_t started = 0;
    while (started < nt && pthread_create(&th[started], NULL, worker, &r) == 0) started++;
    if (started == 0) worker(&r); /* no thread: the work still gets done */
    for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
    if (!atomic_load(&r.fatal)) flush(&r);
    if (r.tty) fputc('\n', stderr);
    rc = 0;
    if (atomic_load(&r.fatal)) {
        fprintf(stderr,
                "faceverifyd: import stopped: %s (what was enrolled stays; a re-run skips it)\n",
                r.fatal_err);
        rc = 1;
    }
    report(&r);
    audit(st, r.coll.id, "face.import",
          json_pack("{s:I, s:I, s:I, s:I}", "photos", (json_int_t)r.n, "enrolled",
                    (json_int_t)r.enrolled, "skipped", (json_int_t)r.skipped, "rejected",
                    (json_int_t)r.rejected));
    if (!rc && r.rejected) rc = FVS_IMPORT_REJECTS_EXIT;
    fvs_index_destroy(r.ix);
    fv_engine_destroy(eng);
    fvs_models_destroy(reg);
    free_run(&r);
    return rc;
}

/* ------------------------------------------------------------ export */

typedef struct export_ctx {
    fvs_store *st;
    json_t *by_subject; /* subject id (text) -> its faces array */
    json_t *ordinal;    /* subject id (text) -> its 1-based position in the file */
    int sealed;
    size_t faces;
} export_ctx;

static json_t *b64(const void *data, size_t n) {
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc(cap);
    if (!out) return NULL;
    sodium_bin2base64(out, cap, data, n, sodium_base64_VARIANT_ORIGINAL);
    json_t *j = json_string(out);
    free(out);
    return j;
}

static json_t *opt_number(double v, int set) {
    return set ? json_real(v) : json_null();
}

static int export_face(void *ctx, const fvs_face_full *f) {
    export_ctx *x = ctx;
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)f->subject_id);
    json_t *arr = json_object_get(x->by_subject, key);
    json_int_t ord = json_integer_value(json_object_get(x->ordinal, key));
    if (!arr || ord <= 0) return 0; /* a subject made after the list was read */
    json_t *tmpl = NULL;
    if (x->sealed) {
        unsigned char sealed[FVS_TEMPLATE_SEALED_BYTES];
        if (fvs_store_seal(x->st, 0, (int64_t)ord, f->embedding, sealed)) return 1;
        tmpl = b64(sealed, sizeof sealed);
    } else {
        tmpl = b64(f->embedding, FVS_TEMPLATE_PLAIN_BYTES);
    }
    json_t *o = json_pack("{s:s, s:{s:f, s:f, s:f, s:f}, s:f, s:o, s:I, s:o}", "model", f->model,
                          "box", "left", (double)f->left, "top", (double)f->top, "right",
                          (double)f->right, "bottom", (double)f->bottom, "score", (double)f->score,
                          "quality", opt_number(f->quality, f->quality >= 0), "created_at",
                          (json_int_t)f->created_at, "template", tmpl);
    if (!o) return 1;
    /* The keyed fingerprint is the same key's on the other side: kept, so
     * that a folder import there skips what this one enrolled. */
    if (x->sealed && f->image_sha256)
        json_object_set_new(o, "image_sha256", json_string(f->image_sha256));
    x->faces++;
    return json_array_append_new(arr, o);
}

/* The collection's subjects in id order (paged), each given an empty
 * faces array in x and its position.  NULL after a message. */
static json_t *export_subjects(fvs_store *st, int64_t coll, export_ctx *x) {
    json_t *out = json_array();
    char err[512];
    for (int64_t off = 0; out;) {
        json_t *page = NULL;
        int64_t count = 0;
        if (fvs_subject_list(st, coll, 1000, off, &page, &count, err, sizeof err)) {
            fprintf(stderr, "faceverifyd: export: %s\n", err);
            json_decref(out);
            return NULL;
        }
        size_t i;
        json_t *s;
        json_array_foreach(page, i, s) {
            char key[32];
            snprintf(key, sizeof key, "%lld",
                     (long long)json_integer_value(json_object_get(s, "id")));
            json_t *faces = json_array();
            json_object_set(x->by_subject, key, faces);
            json_object_set_new(x->ordinal, key,
                                json_integer((json_int_t)json_array_size(out) + 1));
            json_t *meta = json_object_get(s, "metadata");
            json_array_append_new(out,
                                  json_pack("{s:O, s:O, s:o}", "name", json_object_get(s, "name"),
                                            "metadata", meta ? meta : json_null(), "faces", faces));
        }
        size_t got = json_array_size(page);
        json_decref(page);
        off += (int64_t)got;
        if (got == 0 || off >= count) break;
    }
    return out;
}

int fvs_bulk_export(fvs_store *st, const fvs_bulk_opts *o, const char *file) {
    fvs_collection c;
    int rc = find_coll(st, o->collection, &c);
    if (rc) {
        if (rc > 0) fprintf(stderr, "faceverifyd: export: no collection '%s'\n", o->collection);
        return 1;
    }
    export_ctx x = {st, json_object(), json_object(), fvs_store_has_template_key(st), 0};
    json_t *subjects = export_subjects(st, c.id, &x);
    char err[512];
    json_t *doc = NULL;
    if (subjects && fvs_faces_each(st, c.id, 0, export_face, &x, err, sizeof err)) {
        fprintf(stderr, "faceverifyd: export: %s\n", err);
        json_decref(subjects);
        subjects = NULL;
    }
    if (subjects)
        doc =
            json_pack("{s:s, s:i, s:I, s:{s:s, s:s, s:o, s:o, s:o, s:o, s:s?}, s:{s:s, s:s}, s:o}",
                      "format", EXPORT_FORMAT, "version", EXPORT_VERSION, "exported_at",
                      (json_int_t)time(NULL), "collection", "name", c.name, "model", c.model,
                      "threshold", opt_number(c.threshold, c.threshold > 0), "fmr",
                      opt_number(c.fmr, c.fmr > 0), "fpir", opt_number(c.fpir, c.fpir > 0),
                      "min_quality", opt_number(c.min_quality, c.min_quality >= 0), "index_backend",
                      c.index_backend[0] ? c.index_backend : NULL, "templates", "encoding",
                      x.sealed ? "sealed" : "plain", "cipher",
                      x.sealed ? "xchacha20poly1305-ietf" : "none", "subjects", subjects);
    json_decref(x.by_subject);
    json_decref(x.ordinal);
    if (!doc) {
        if (subjects) fprintf(stderr, "faceverifyd: export: out of memory\n");
        return 1;
    }
    /* 0600 whatever the umask: without a key the templates are plaintext
     * biometric data; never over an existing file or through a link. */
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        fprintf(stderr, "faceverifyd: export: %s: %s%s\n", file, strerror(errno),
                errno == EEXIST ? " (an export never overwrites a file)" : "");
        if (fd >= 0) close(fd);
        json_decref(doc);
        return 1;
    }
    int bad = json_dumpf(doc, f, JSON_INDENT(1) | JSON_SORT_KEYS) != 0;
    bad |= fputc('\n', f) == EOF;
    bad |= fflush(f) != 0 || fsync(fd) != 0;
    bad |= fclose(f) != 0;
    size_t nsub = json_array_size(subjects);
    json_decref(doc);
    if (bad) {
        fprintf(stderr, "faceverifyd: export: cannot write %s: %s\n", file, strerror(errno));
        unlink(file);
        return 1;
    }
    audit(st, c.id, "collection.export",
          json_pack("{s:I, s:I, s:b}", "subjects", (json_int_t)nsub, "faces", (json_int_t)x.faces,
                    "sealed", x.sealed));
    printf("faceverifyd: exported '%s': %zu subject%s, %zu face%s, templates %s, to %s\n", c.name,
           nsub, nsub == 1 ? "" : "s", x.faces, x.faces == 1 ? "" : "s",
           x.sealed ? "sealed with the template key" : "in PLAINTEXT (file mode 0600)", file);
    return 0;
}

/* ------------------------------------------------------------ import --from */

/* One face of the file, validated and opened. */
typedef struct in_face {
    size_t subject; /* index into the file's subjects */
    char model[FVS_MODEL_ID_MAX + 1];
    char mac[65];
    float left, top, right, bottom, score;
    double quality;
    int64_t created_at;
    float emb[FV_EMBED_DIM];
} in_face;

static int bad_file(const char *file, const char *what, size_t si, size_t fi) {
    if (fi != SIZE_MAX)
        fprintf(stderr, "faceverifyd: import: %s: subjects[%zu].faces[%zu]: %s\n", file, si, fi,
                what);
    else if (si != SIZE_MAX)
        fprintf(stderr, "faceverifyd: import: %s: subjects[%zu]: %s\n", file, si, what);
    else
        fprintf(stderr, "faceverifyd: import: %s: %s\n", file, what);
    return -1;
}

/* A number member in [lo, hi], or null (*v = unset) when nullable. */
static int get_num(const json_t *o, const char *k, double lo, double hi, int nullable, double unset,
                   double *v) {
    const json_t *j = json_object_get(o, k);
    if (nullable && (!j || json_is_null(j))) {
        *v = unset;
        return 0;
    }
    if (!json_is_number(j)) return -1;
    double d = json_number_value(j);
    if (!(d >= lo && d <= hi)) return -1;
    *v = d;
    return 0;
}

/* Reads face j of subject si (position si + 1 in the file) into f. */
static int read_face(fvs_store *st, const json_t *j, int sealed, size_t si, in_face *f,
                     const char **why, char *err, size_t errlen) {
    const char *model = json_string_value(json_object_get(j, "model"));
    const char *tmpl = json_string_value(json_object_get(j, "template"));
    const json_t *box = json_object_get(j, "box");
    const json_t *mac = json_object_get(j, "image_sha256");
    const json_t *ca = json_object_get(j, "created_at");
    double l, t, r, b, sc, q;
    *why = "expected {model, box, score, quality, created_at, template}";
    if (!json_is_object(j) || !model || !*model || strlen(model) > FVS_MODEL_ID_MAX || !tmpl ||
        !json_is_object(box) || get_num(box, "left", -1e6, 1e6, 0, 0, &l) ||
        get_num(box, "top", -1e6, 1e6, 0, 0, &t) || get_num(box, "right", -1e6, 1e6, 0, 0, &r) ||
        get_num(box, "bottom", -1e6, 1e6, 0, 0, &b) || get_num(j, "score", -1e6, 1e6, 0, 0, &sc) ||
        get_num(j, "quality", 0, 1, 1, -1, &q) || !json_is_integer(ca) ||
        json_integer_value(ca) < 0 ||
        (mac && !json_is_null(mac) && (!json_is_string(mac) || json_string_length(mac) != 64)))
        return -1;
    unsigned char blob[FVS_TEMPLATE_SEALED_BYTES];
    size_t n = 0;
    const char *end = NULL;
    size_t want = sealed ? FVS_TEMPLATE_SEALED_BYTES : FVS_TEMPLATE_PLAIN_BYTES;
    if (sodium_base642bin(blob, sizeof blob, tmpl, strlen(tmpl), NULL, &n, &end,
                          sodium_base64_VARIANT_ORIGINAL) ||
        *end || n != want) {
        *why = sealed ? "template: expected base64 of a sealed template"
                      : "template: expected base64 of 128 little-endian float32";
        return -1;
    }
    if (sealed && !fvs_template_is_sealed(blob, n)) {
        *why = "template: not a sealed template";
        return -1;
    }
    if (fvs_store_open_sealed(st, 0, (int64_t)si + 1, blob, n, f->emb, err, errlen)) {
        *why = err;
        return -1;
    }
    for (int i = 0; i < FV_EMBED_DIM; i++)
        if (!isfinite(f->emb[i])) {
            *why = "template: not finite numbers";
            return -1;
        }
    snprintf(f->model, sizeof f->model, "%s", model);
    snprintf(f->mac, sizeof f->mac, "%s", mac && json_is_string(mac) ? json_string_value(mac) : "");
    f->subject = si;
    f->left = (float)l;
    f->top = (float)t;
    f->right = (float)r;
    f->bottom = (float)b;
    f->score = (float)sc;
    f->quality = q;
    f->created_at = (int64_t)json_integer_value(ca);
    return 0;
}

/* The collection settings of the file into c (name: the target's). */
static int read_settings(const json_t *cj, fvs_collection *c) {
    const char *model = json_string_value(json_object_get(cj, "model"));
    const json_t *bj = json_object_get(cj, "index_backend");
    fvsearch_kind kind;
    if (!json_is_object(cj) || !model || !*model || strlen(model) > FVS_MODEL_ID_MAX ||
        get_num(cj, "threshold", 1e-6, FVS_THRESHOLD_MAX, 1, 0, &c->threshold) ||
        get_num(cj, "fmr", FV_FMR_MIN, FV_FMR_MAX, 1, 0, &c->fmr) ||
        get_num(cj, "fpir", FVS_FPIR_MIN, FVS_FPIR_MAX, 1, 0, &c->fpir) ||
        get_num(cj, "min_quality", 0, 1, 1, -1, &c->min_quality) ||
        (bj && !json_is_null(bj) &&
         (!json_is_string(bj) || fvsearch_kind_parse(json_string_value(bj), &kind))))
        return -1;
    snprintf(c->model, sizeof c->model, "%s", model);
    snprintf(c->index_backend, sizeof c->index_backend, "%s",
             json_is_string(bj) ? json_string_value(bj) : "");
    return 0;
}

/* Validates the whole file and opens every template: *faces (free()) and
 * *n.  0, or -1 after a message. */
static int read_export(fvs_store *st, const char *file, json_t *doc, fvs_collection *c,
                       in_face **faces, size_t *n) {
    const json_t *subjects = json_object_get(doc, "subjects");
    const char *fmt = json_string_value(json_object_get(doc, "format"));
    const json_t *ver = json_object_get(doc, "version");
    const char *enc =
        json_string_value(json_object_get(json_object_get(doc, "templates"), "encoding"));
    if (!fmt || strcmp(fmt, EXPORT_FORMAT) || !json_is_integer(ver))
        return bad_file(file, "not a faceverify export (format: " EXPORT_FORMAT ")", SIZE_MAX,
                        SIZE_MAX);
    if (json_integer_value(ver) != EXPORT_VERSION)
        return bad_file(file, "export version not supported (this faceverifyd reads version 1)",
                        SIZE_MAX, SIZE_MAX);
    if (!enc || (strcmp(enc, "sealed") && strcmp(enc, "plain")) || !json_is_array(subjects))
        return bad_file(file, "expected templates.encoding (sealed or plain) and subjects",
                        SIZE_MAX, SIZE_MAX);
    if (read_settings(json_object_get(doc, "collection"), c))
        return bad_file(file, "collection: bad settings", SIZE_MAX, SIZE_MAX);
    int sealed = strcmp(enc, "sealed") == 0;
    if (sealed && !fvs_store_has_template_key(st))
        return bad_file(file,
                        "its templates are sealed: set FACEVERIFY_TEMPLATE_KEY to the key of "
                        "the server that exported it",
                        SIZE_MAX, SIZE_MAX);
    size_t total = 0, si;
    json_t *s;
    json_t *names = json_object();
    json_array_foreach(subjects, si, s) {
        const char *name = json_string_value(json_object_get(s, "name"));
        const json_t *meta = json_object_get(s, "metadata");
        const json_t *fa = json_object_get(s, "faces");
        if (!json_is_object(s) || !name || !valid_subject_name(name) || !json_is_array(fa) ||
            (meta && !json_is_null(meta) && !json_is_object(meta)) ||
            json_object_get(names, name)) {
            json_decref(names);
            return bad_file(file,
                            "expected {name (unique, 1..200 bytes of UTF-8), metadata "
                            "(object or null), faces (array)}",
                            si, SIZE_MAX);
        }
        char why[160];
        if (json_is_object(meta) && fvs_metadata_check(meta, why, sizeof why)) {
            json_decref(names);
            return bad_file(file, why, si, SIZE_MAX);
        }
        json_object_set_new(names, name, json_true());
        total += json_array_size(fa);
    }
    json_decref(names);
    in_face *out = calloc(total ? total : 1, sizeof *out);
    if (!out) return bad_file(file, "out of memory", SIZE_MAX, SIZE_MAX);
    size_t k = 0;
    json_array_foreach(subjects, si, s) {
        size_t fi;
        json_t *fj;
        json_array_foreach(json_object_get(s, "faces"), fi, fj) {
            const char *why = NULL;
            char err[256] = "";
            if (read_face(st, fj, sealed, si, &out[k], &why, err, sizeof err)) {
                free(out);
                return bad_file(file, why, si, fi);
            }
            k++;
        }
    }
    *faces = out;
    *n = k;
    return 0;
}

/* Makes collection name with the file's settings and prints its key. */
static int create_target(fvs_store *st, const char *name, fvs_collection *c) {
    char key[FVS_KEY_MAX], prefix[FVS_KEY_PREFIX_LEN + 1], err[512];
    unsigned char hash[FVS_KEY_HASH_BYTES];
    if (fvs_key_generate(key, prefix, hash)) {
        fprintf(stderr, "faceverifyd: import: cannot make an API key\n");
        return -1;
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    int64_t id = 0;
    int rc = fvs_collection_create(st, c, prefix, hash, &id, err, sizeof err);
    if (rc) {
        fprintf(stderr, "faceverifyd: import: %s\n",
                rc > 0 ? "the collection was made meanwhile" : err);
        return -1;
    }
    c->id = id;
    printf("created collection '%s' (id %lld); its API key (shown once):\n%s\n", name,
           (long long)id, key);
    sodium_memzero(key, sizeof key);
    return 0;
}

int fvs_bulk_import_file(fvs_store *st, const fvs_bulk_opts *o, const char *file) {
    struct stat sb;
    if (stat(file, &sb)) {
        fprintf(stderr, "faceverifyd: import: %s: %s\n", file, strerror(errno));
        return 1;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size > EXPORT_MAX_BYTES) {
        fprintf(stderr, "faceverifyd: import: %s: not a regular file of at most 2 GiB\n", file);
        return 1;
    }
    json_error_t jerr;
    json_t *doc = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        fprintf(stderr, "faceverifyd: import: %s: line %d: %s\n", file, jerr.line, jerr.text);
        return 1;
    }
    fvs_collection c;
    memset(&c, 0, sizeof c);
    in_face *faces = NULL;
    size_t n = 0;
    if (read_export(st, file, doc, &c, &faces, &n)) {
        json_decref(doc);
        return 1;
    }
    fvs_collection existing;
    int rc = find_coll(st, o->collection, &existing);
    if (rc == 0 && !o->merge) {
        fprintf(stderr,
                "faceverifyd: import: collection '%s' exists: --merge adds the file's "
                "subjects to it (by name), or import into a new name\n",
                o->collection);
        rc = -1;
    } else if (rc == 0) {
        c = existing;
    } else if (rc > 0) {
        rc = create_target(st, o->collection, &c);
    }
    const json_t *subjects = json_object_get(doc, "subjects");
    size_t ns = json_array_size(subjects), created = 0, added = 0;
    int64_t *sid = rc ? NULL : calloc(ns ? ns : 1, sizeof *sid);
    char err[512];
    if (!rc && !sid) {
        fprintf(stderr, "faceverifyd: import: out of memory\n");
        rc = -1;
    }
    for (size_t i = 0; !rc && i < ns; i++) {
        const json_t *s = json_array_get(subjects, i);
        const char *name = json_string_value(json_object_get(s, "name"));
        const json_t *meta = json_object_get(s, "metadata");
        rc = fvs_subject_find(st, c.id, name, &sid[i], err, sizeof err);
        if (rc == 1) {
            json_t *sj = NULL;
            rc = fvs_subject_create(st, c.id, name, json_is_object(meta) ? meta : NULL, &sj, err,
                                    sizeof err);
            sid[i] = (int64_t)json_integer_value(json_object_get(sj, "id"));
            json_decref(sj);
            created += rc == 0;
        }
        if (rc) fprintf(stderr, "faceverifyd: import: subject '%s': %s\n", name, err);
    }
    int keyed = fvs_store_has_template_key(st);
    for (size_t i = 0; !rc && i < n; i++) {
        const in_face *f = &faces[i];
        fvs_face_row row = {f->model,   f->emb,    f->left,      f->top,
                            f->right,   f->bottom, f->score,     keyed && f->mac[0] ? f->mac : NULL,
                            f->quality, NULL,      f->created_at};
        json_t *fj = NULL;
        rc = fvs_face_insert(st, c.id, sid[f->subject], &row, &fj, err, sizeof err);
        json_decref(fj);
        if (rc)
            fprintf(stderr, "faceverifyd: import: face %zu: %s (%zu of %zu faces added)\n", i,
                    rc > 0 ? "its subject vanished" : err, added, n);
        else
            added++;
    }
    if (!rc) {
        audit(st, c.id, "collection.import",
              json_pack("{s:I, s:I, s:I, s:b}", "subjects", (json_int_t)ns, "subjects_created",
                        (json_int_t)created, "faces", (json_int_t)added, "merge", o->merge));
        printf("faceverifyd: imported into '%s': %zu subject%s (%zu new), %zu face%s\n", c.name, ns,
               ns == 1 ? "" : "s", created, added, added == 1 ? "" : "s");
    }
    sodium_memzero(faces, (n ? n : 1) * sizeof *faces);
    free(faces);
    free(sid);
    json_decref(doc);
    return rc ? 1 : 0;
}

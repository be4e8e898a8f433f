/*
 * bulk.h: faceverifyd's bulk commands (bulk.c): enrol a folder tree into a
 * collection, and move a collection between databases through an export
 * file (docs/export-format.md).
 */
#ifndef FVS_BULK_H
#define FVS_BULK_H

#include "server/index.h"
#include "server/store.h"

/* Exit status of an import that ran but rejected some photos (0: every
 * photo went in or was already there). */
#define FVS_IMPORT_REJECTS_EXIT 3

typedef struct fvs_bulk_opts {
    const char *collection;
    const char *models_dir;  /* the engine's model files (--models) */
    const char *trained_dir; /* --models-dir */
    const fvs_index_config *icfg;
    double min_quality;  /* --min-quality given to import: the gate; < 0: none */
    double gate_default; /* the gate of collections without one (serve's default) */
    int threads;         /* photos embedded at once; 0: CPUs */
    size_t max_bytes;    /* largest photo file (--max-body) */
    int force;           /* enrol below the quality gate */
    int largest;         /* several faces: enrol the largest, not reject */
    int json;            /* one JSON report on stdout */
    int merge;           /* import --from into an existing collection */
} fvs_bulk_opts;

/* faceverifyd import COLLECTION DIR.  Returns the exit status: 0, 1 after
 * an error message, FVS_IMPORT_REJECTS_EXIT. */
int fvs_bulk_import_dir(fvs_store *st, const fvs_bulk_opts *o, const char *dir);
/* faceverifyd export COLLECTION FILE: 0, or 1 after a message. */
int fvs_bulk_export(fvs_store *st, const fvs_bulk_opts *o, const char *file);
/* faceverifyd import COLLECTION --from FILE: 0, or 1 after a message. */
int fvs_bulk_import_file(fvs_store *st, const fvs_bulk_opts *o, const char *file);

#endif

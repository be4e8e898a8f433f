/*
 * models.h: faceverifyd's model registry, the embedders a collection can
 * use: the engine's dlib ResNet (FV_MODEL_ID) and the models trained by
 * `faceverify train` (docs/model-format.md) found in the models dir
 * (--models-dir, FACEVERIFY_MODELS_DIR): every regular file there whose
 * name ends in ".fvm", loaded once at start.
 *
 * A model is named by its id (the `id` line of its file, what templates
 * keep) or by its file name without ".fvm"; collections store the id, so
 * renaming a file changes nothing stored.  FV_MODEL_ID always means the
 * ResNet, whatever the files are called.
 *
 * Thread-safety: immutable after fvs_models_load; fv_model handles are
 * read-only during embedding (include/faceverify.h), so one registry is
 * shared by every request thread without locks.
 */
#ifndef FVS_MODELS_H
#define FVS_MODELS_H

#include <jansson.h>
#include <stddef.h>

#include "faceverify.h"

typedef struct fvs_models fvs_models;

/* Loads every *.fvm in dir (NULL or "": none, only the ResNet).  A file
 * that fails to load, or whose id is unusable (not 1..63 characters of
 * [A-Za-z0-9._-], or FV_MODEL_ID), is an error naming the file: a model
 * that a collection names must not silently go missing.  NULL on failure
 * with err set. */
fvs_models *fvs_models_load(const char *dir, char *err, size_t errlen);
void fvs_models_destroy(fvs_models *ms);

/* Resolves a name (id or file stem) to the model's id (static for the
 * registry's lifetime) and its handle: *model NULL for the ResNet.
 * Returns 0, or -1 when no model has that name.  ms may be NULL (only the
 * ResNet is known). */
int fvs_models_find(const fvs_models *ms, const char *name, const char **id,
                    const fv_model **model);

/* A JSON array describing the models: {name, id, kind ("resnet",
 * "scratch", "adapter"), dim, threshold}: the calibrated threshold a
 * collection on that model decides with unless it sets its own (the
 * ResNet's is resnet_threshold, the engine's; null: none in the file). */
json_t *fvs_models_json(const fvs_models *ms, float resnet_threshold);

#endif

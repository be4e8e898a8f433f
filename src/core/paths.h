/*
 * paths.h: where libfaceverify finds its model files when the caller does
 * not say (paths.c).
 */
#ifndef FVI_PATHS_H
#define FVI_PATHS_H

/* The folder to load the model files from.  Order:
 *   1. configured (fv_config.models_dir), when non-empty;
 *   2. $FACEVERIFY_MODELS, when non-empty;
 *   3. a library running from its build tree (the static library linked
 *      into a program there, or the shared one there): the source tree's
 *      models/ (FV_DEFAULT_MODELS_DIR);
 *   4. otherwise PREFIX/share/faceverify, where PREFIX is the folder above
 *      the one holding the code (PREFIX/lib/libfaceverify.so, or the
 *      PREFIX/bin/ program the static library is linked into), when it
 *      holds the detector model; else the compiled-in install folder
 *      (FV_INSTALL_MODELS_DIR) when that does; else (neither holds one)
 *      the PREFIX one, so a missing-model error names where it was looked
 *      for.
 * Steps 3-4 look at the process only once (pthread_once); the answer is
 * immutable and shared.  Returns a string that outlives the call: configured,
 * the environment's, or that shared one.  Thread-safe as far as getenv is
 * (nothing may setenv concurrently). */
const char *fvi_models_dir(const char *configured);

#endif

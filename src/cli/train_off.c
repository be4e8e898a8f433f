/*
 * train_off.c: `faceverify train` in a build configured with FV_TRAIN=OFF.
 *
 * Such a build leaves out the trainer (train.c) but keeps
 * everything that uses a trained model (--model, fv_model_load), so the
 * command stays in the usage and says plainly why it cannot run.
 */
#include <stdio.h>

#include "cli/cli.h"

/* Prints why and returns the failure exit code; argv is ignored. */
int cli_train(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "faceverify: train: not built with training (configured with "
                    "-DFV_TRAIN=OFF)\n");
    return CLI_EXIT_FAILURE;
}

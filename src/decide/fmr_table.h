/* fmr_table.h: PROVISIONAL, replaced by bench/calibrate_fmr.py */
#ifndef FVI_FMR_TABLE_H
#define FVI_FMR_TABLE_H
#define FVI_FMR_MODEL_ID "dlib_resnet_v1"
#define FVI_FMR_STEP 0.25
#define FVI_FMR_POINTS 25
typedef struct fvi_fmr_bin {
    float quality_min;
    float threshold[FVI_FMR_POINTS];
} fvi_fmr_bin;
static const fvi_fmr_bin FVI_FMR_BINS[] = {
    {0.0f, {0.9500f, 0.9220f, 0.8940f, 0.8660f, 0.8380f, 0.8100f, 0.7820f, 0.7540f, 0.7260f,
            0.6980f, 0.6700f, 0.6420f, 0.6140f, 0.5860f, 0.5580f, 0.5300f, 0.5020f, 0.4740f,
            0.4460f, 0.4180f, 0.3900f, 0.3620f, 0.3340f, 0.3060f, 0.2780f}},
};
#endif

/*
 * fpir_table.h: open-set score thresholds of the dlib ResNet, generated
 * by bench/calibrate_openset.py (do not edit by hand; rerun it) from
 * LFW View 1 training people.  Row: a gallery size; column k: the
 * score threshold at FPIR 10^(-0.25*k).
 */
#ifndef FVI_FPIR_TABLE_H
#define FVI_FPIR_TABLE_H

#define FVI_FPIR_MODEL_ID "dlib_resnet_v1"
#define FVI_OPENSET_COHORT 5
#define FVI_FPIR_MIN_GALLERY 6
#define FVI_OPENSET_FMR_GUARD 0.1
#define FVI_FPIR_STEP 0.25
#define FVI_FPIR_POINTS 13
#define FVI_FPIR_SIZES 7

static const unsigned FVI_FPIR_GALLERY[FVI_FPIR_SIZES] = {6, 10, 30, 100, 300, 1000, 3000};
/* non-mated probe scores behind each row: 6: 37934, 10: 37878, 30: 37544, 100: 35090, 300: 31995,
 * 1000: 28135, 3000: 21192 */
static const float FVI_FPIR_THRESHOLD[FVI_FPIR_SIZES][FVI_FPIR_POINTS] = {
    {0.00861f, 0.13489f, 0.17713f, 0.20922f, 0.23680f, 0.26433f, 0.29210f, 0.31725f, 0.34427f,
     0.36734f, 0.39043f, 0.40758f, 0.42092f},
    {0.00537f, 0.09748f, 0.13311f, 0.16271f, 0.19045f, 0.21725f, 0.24581f, 0.27956f, 0.31184f,
     0.33778f, 0.36282f, 0.38027f, 0.40173f},
    {0.00548f, 0.08389f, 0.11884f, 0.14956f, 0.17893f, 0.20873f, 0.23567f, 0.25960f, 0.28316f,
     0.30510f, 0.32789f, 0.34929f, 0.36851f},
    {0.00433f, 0.06764f, 0.09671f, 0.12254f, 0.14613f, 0.16883f, 0.19061f, 0.21107f, 0.23278f,
     0.25523f, 0.27669f, 0.29490f, 0.30863f},
    {0.00315f, 0.05944f, 0.08503f, 0.10799f, 0.12863f, 0.14952f, 0.17011f, 0.18937f, 0.20767f,
     0.22848f, 0.25013f, 0.27333f, 0.29463f},
    {0.00263f, 0.05372f, 0.07701f, 0.09777f, 0.11714f, 0.13608f, 0.15363f, 0.17200f, 0.18985f,
     0.20941f, 0.22730f, 0.24545f, 0.27117f},
    {0.00273f, 0.04899f, 0.07124f, 0.09043f, 0.10796f, 0.12503f, 0.14260f, 0.16272f, 0.18409f,
     0.20529f, 0.23130f, 0.32450f, 0.35022f},
};

#endif

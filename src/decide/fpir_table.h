/* fpir_table.h: PROVISIONAL, replaced by bench/calibrate_openset.py */
#ifndef FVI_FPIR_TABLE_H
#define FVI_FPIR_TABLE_H
#define FVI_FPIR_MODEL_ID "dlib_resnet_v1"
#define FVI_OPENSET_COHORT 20
#define FVI_OPENSET_SD_FLOOR 0.01
#define FVI_FPIR_MIN_GALLERY 5
#define FVI_FPIR_STEP 0.25
#define FVI_FPIR_POINTS 13
#define FVI_FPIR_SIZES 7
static const unsigned FVI_FPIR_GALLERY[FVI_FPIR_SIZES] = {5, 10, 30, 100, 300, 1000, 3000};
static const float FVI_FPIR_THRESHOLD[FVI_FPIR_SIZES][FVI_FPIR_POINTS] = {
    {1.2097f, 1.5597f, 1.9097f, 2.2597f, 2.6097f, 2.9597f, 3.3097f, 3.6597f, 4.0097f, 4.3597f,
     4.7097f, 5.0597f, 5.4097f},
    {1.3000f, 1.6500f, 2.0000f, 2.3500f, 2.7000f, 3.0500f, 3.4000f, 3.7500f, 4.1000f, 4.4500f,
     4.8000f, 5.1500f, 5.5000f},
    {1.4431f, 1.7931f, 2.1431f, 2.4931f, 2.8431f, 3.1931f, 3.5431f, 3.8931f, 4.2431f, 4.5931f,
     4.9431f, 5.2931f, 5.6431f},
    {1.6000f, 1.9500f, 2.3000f, 2.6500f, 3.0000f, 3.3500f, 3.7000f, 4.0500f, 4.4000f, 4.7500f,
     5.1000f, 5.4500f, 5.8000f},
    {1.7431f, 2.0931f, 2.4431f, 2.7931f, 3.1431f, 3.4931f, 3.8431f, 4.1931f, 4.5431f, 4.8931f,
     5.2431f, 5.5931f, 5.9431f},
    {1.9000f, 2.2500f, 2.6000f, 2.9500f, 3.3000f, 3.6500f, 4.0000f, 4.3500f, 4.7000f, 5.0500f,
     5.4000f, 5.7500f, 6.1000f},
    {2.0431f, 2.3931f, 2.7431f, 3.0931f, 3.4431f, 3.7931f, 4.1431f, 4.4931f, 4.8431f, 5.1931f,
     5.5431f, 5.8931f, 6.2431f},
};
#endif

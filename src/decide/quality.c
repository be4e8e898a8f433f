/*
 * quality.c: fv_face_quality, how fit a detected face is for recognition.
 *
 * Measured, not learned: five factors, each a ramp to [0,1] between a
 * "poor" and a "good" value, multiplied into the score.  The ramps' ends
 * were set from the distributions on LFW (good faces) and on the derived
 * hard sets (docs/operating-points.md: FNMR per quality bin shows that the
 * score ranks faces by how often they are missed).
 *
 *   size       sqrt of the box area in original pixels.  The ResNet sees a
 *              150 px chip; a face of 30 px is upsampled five times and
 *              its identity detail is gone.
 *   sharpness  1 - the blur effect of Crete, Dolmiere, Ladret and Nicolas
 *              (SPIE 2007): how much of the chip's gradient energy
 *              survives a further 9-tap blur.  Insensitive to contrast, so
 *              a dim sharp face is not called blurred.
 *   exposure   mean and spread of the luma of the chip's face area.
 *   pose       yaw and pitch estimated from the 5 landmarks: the nose
 *              base's offset from the eyes' midpoint in the eye frame.
 *   detector   MMOD's confidence, the Haar cascade's hit count, or MTCNN's
 *              O-Net face probability.
 *
 * The chip is dlib's get_face_chip with padding 0.25, so the face
 * template fills its middle 2/3 (pixels 25..124 of 150): the face area.
 */
#include <math.h>
#include <string.h>

#include "core/fvi.h"

#define FACE_LO 25 /* the face area of the chip: [FACE_LO, FACE_HI) */
#define FACE_HI 125
#define BLUR_TAPS 9

/* Ramp: 0 at or beyond poor, 1 at or beyond good (either order). */
static float ramp(float v, float poor, float good) {
    float t = (v - poor) / (good - poor);
    return t < 0 ? 0.0f : t > 1 ? 1.0f : t;
}

/* The factors' ramps (see the header comment; docs/operating-points.md). */
#define SIZE_POOR 32.0f /* px */
#define SIZE_GOOD 80.0f
#define SHARP_POOR 0.22f /* 1 - blur effect */
#define SHARP_GOOD 0.38f
#define DARK_POOR 25.0f /* mean luma */
#define DARK_GOOD 60.0f
#define BRIGHT_POOR 235.0f
#define BRIGHT_GOOD 200.0f
#define CONTRAST_POOR 8.0f /* luma standard deviation */
#define CONTRAST_GOOD 24.0f
#define YAW_POOR 55.0f /* degrees */
#define YAW_GOOD 25.0f
#define PITCH_POOR 40.0f
#define PITCH_GOOD 20.0f
#define MMOD_POOR 0.0f /* MMOD detection score */
#define MMOD_GOOD 0.6f
#define HAAR_POOR 3.0f /* Haar hits */
#define HAAR_GOOD 12.0f
#define MTCNN_POOR 0.7f  /* O-Net face probability: its threshold ... */
#define MTCNN_GOOD 0.95f /* ... and where clear faces score (LFW: > 0.99) */
/* Landmark geometry of a frontal face: the nose base lies below the eyes'
 * midpoint by NOSE_DROP interocular distances; NOSE_DEPTH is its depth in
 * front of the eye plane in the same unit (sets the yaw/pitch scale). */
#define NOSE_DROP 0.71f
#define NOSE_DEPTH 0.50f

/* Luma of the face area into g (100 x 100). */
static void face_luma(const unsigned char *chip, float *g) {
    const int n = FACE_HI - FACE_LO;
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) {
            const unsigned char *p =
                chip + ((size_t)(y + FACE_LO) * FV_CHIP_SIZE + x + FACE_LO) * 3;
            g[y * n + x] = 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2];
        }
}

/* Blur effect along one axis (dx, dy = 1, 0 or 0, 1) of the n x n image g:
 * 1 - (gradient energy the re-blur removes) / (gradient energy), in [0,1]. */
static float blur_effect(const float *g, int n, int dx, int dy) {
    double total = 0, kept = 0;
    const int h = BLUR_TAPS / 2;
    for (int y = 1 + h; y < n - h; y++)
        for (int x = 1 + h; x < n - h; x++) {
            float b0 = 0, b1 = 0; /* 9-tap mean at (x,y) and at the previous pixel */
            for (int k = -h; k <= h; k++) {
                b0 += g[(y + k * dy) * n + x + k * dx];
                b1 += g[(y - dy + k * dy) * n + x - dx + k * dx];
            }
            float df = fabsf(g[y * n + x] - g[(y - dy) * n + x - dx]);
            float db = fabsf(b0 - b1) / BLUR_TAPS;
            total += df;
            kept += df > db ? df - db : 0;
        }
    return total > 0 ? (float)((total - kept) / total) : 1.0f;
}

/* Yaw and pitch (degrees) from the 5 landmarks (dlib order: right eye
 * outer, right eye inner, left eye outer, left eye inner, nose base). */
static void pose(const fv_point *lm, float *yaw, float *pitch) {
    float rx = 0.5f * (lm[0].x + lm[1].x), ry = 0.5f * (lm[0].y + lm[1].y);
    float lx = 0.5f * (lm[2].x + lm[3].x), ly = 0.5f * (lm[2].y + lm[3].y);
    float ex = lx - rx, ey = ly - ry;
    float iod = sqrtf(ex * ex + ey * ey);
    *yaw = *pitch = 0;
    if (!(iod > 1e-3f)) return;
    ex /= iod;
    ey /= iod;
    float mx = 0.5f * (rx + lx), my = 0.5f * (ry + ly);
    float nx = lm[4].x - mx, ny = lm[4].y - my;
    float u = (nx * ex + ny * ey) / iod;       /* along the eye line */
    float v = fabsf(-nx * ey + ny * ex) / iod; /* below it (either eye order) */
    const float deg = 57.29578f;
    /* turned by yaw, the nose moves depth*sin along the line while the
     * eyes close up by cos: u = (depth/iod) tan(yaw) */
    *yaw = atanf(u / NOSE_DEPTH) * deg;
    *pitch = atanf((v - NOSE_DROP) / NOSE_DEPTH) * deg;
}

fv_status fv_face_quality(const fv_face *face, fv_detector detector, const unsigned char *chip,
                          fv_quality *out) {
    if (!face || !chip || !out) return FV_E_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    float w = face->right - face->left, h = face->bottom - face->top;
    out->size_px = w > 0 && h > 0 ? sqrtf(w * h) : 0;

    enum { N = FACE_HI - FACE_LO };
    float g[N * N];
    face_luma(chip, g);
    double sum = 0, sq = 0;
    for (int i = 0; i < N * N; i++) {
        sum += g[i];
        sq += (double)g[i] * g[i];
    }
    double mean = sum / (N * N), var = sq / (N * N) - mean * mean;
    out->brightness = (float)mean;
    out->contrast = (float)sqrt(var > 0 ? var : 0);
    float bv = blur_effect(g, N, 0, 1), bh = blur_effect(g, N, 1, 0);
    out->sharpness = 1.0f - (bv > bh ? bv : bh);
    pose(face->landmarks, &out->yaw, &out->pitch);
    out->detector_score = face->score;

    out->size_factor = ramp(out->size_px, SIZE_POOR, SIZE_GOOD);
    out->sharpness_factor = ramp(out->sharpness, SHARP_POOR, SHARP_GOOD);
    float dark = ramp(out->brightness, DARK_POOR, DARK_GOOD);
    float bright = ramp(out->brightness, BRIGHT_POOR, BRIGHT_GOOD);
    float flat = ramp(out->contrast, CONTRAST_POOR, CONTRAST_GOOD);
    out->exposure_factor = dark * bright * flat;
    float fy = ramp(fabsf(out->yaw), YAW_POOR, YAW_GOOD);
    float fp = ramp(fabsf(out->pitch), PITCH_POOR, PITCH_GOOD);
    out->pose_factor = fy * fp;
    /* a detector's doubt halves the score at most: a low score on a clear,
     * large face is more often a hat or a hand than no face */
    float fd = detector == FV_DETECTOR_MMOD    ? ramp(face->score, MMOD_POOR, MMOD_GOOD)
               : detector == FV_DETECTOR_HAAR  ? ramp(face->score, HAAR_POOR, HAAR_GOOD)
               : detector == FV_DETECTOR_MTCNN ? ramp(face->score, MTCNN_POOR, MTCNN_GOOD)
                                               : 1.0f;
    out->detector_factor = 0.5f + 0.5f * fd;
    out->score = out->size_factor * out->sharpness_factor * out->exposure_factor *
                 out->pose_factor * out->detector_factor;

    unsigned r = 0;
    if (out->size_factor < 0.5f) r |= FV_QUALITY_TOO_SMALL;
    if (out->sharpness_factor < 0.5f) r |= FV_QUALITY_BLURRED;
    if (dark < 0.5f) r |= FV_QUALITY_DARK;
    if (bright < 0.5f) r |= FV_QUALITY_OVEREXPOSED;
    if (flat < 0.5f) r |= FV_QUALITY_LOW_CONTRAST;
    if (fy < 0.5f) r |= FV_QUALITY_PROFILE;
    if (fp < 0.5f) r |= FV_QUALITY_PITCHED;
    if (fd < 0.5f && detector != FV_DETECTOR_NONE) r |= FV_QUALITY_LOW_CONFIDENCE;
    out->reasons = r;
    return FV_OK;
}

const char *fv_quality_reason_name(unsigned reason) {
    static const char *const names[FV_QUALITY_REASON_COUNT] = {
        "too_small",    "blurred", "dark",    "overexposed",
        "low_contrast", "profile", "pitched", "low_confidence"};
    for (int i = 0; i < FV_QUALITY_REASON_COUNT; i++)
        if (reason == (1u << i)) return names[i];
    return NULL;
}

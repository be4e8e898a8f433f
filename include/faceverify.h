/*
 * faceverify.h: the whole public API of libfaceverify.
 *
 * The data flows one way: bytes -> fv_image (decode) -> fv_face[] (detect,
 * with 5 landmarks) -> 150x150 aligned chip -> 128-d embedding -> distance
 * and decision.  Every function returns an fv_status; details of a failure
 * go into an optional caller-supplied error buffer (err, errlen), which is
 * always NUL-terminated when errlen > 0.  The library never prints, never
 * exits, and never aborts on input.
 *
 * Ownership: objects made by fv_*_create / fv_image_* are owned by the
 * caller and released with the matching destroy function; destroy(NULL) is
 * a no-op.  Output arrays (faces, embeddings, chips) are caller-owned.
 *
 * Threads: an fv_engine is immutable after creation (models loaded, pool
 * started) and all fv_* functions taking a const engine may be called from
 * several threads at once; each call uses the engine's pool for its inner
 * parallelism.
 */
#ifndef FACEVERIFY_H
#define FACEVERIFY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(FV_BUILDING_LIBRARY)
#define FV_API __attribute__((visibility("default")))
#else
#define FV_API
#endif

#define FV_VERSION_STRING "0.1.0"
#define FV_EMBED_DIM 128
#define FV_CHIP_SIZE 150
#define FV_NUM_LANDMARKS 5
#define FV_MODEL_ID "dlib_resnet_v1"

/* One status enum for the whole library.  Append-only: values never change
 * meaning once released. */
typedef enum fv_status {
    FV_OK = 0,
    FV_E_INVALID_ARGUMENT = 1, /* NULL pointer, bad option value */
    FV_E_NO_MEMORY = 2,        /* allocation failed */
    FV_E_IO = 3,               /* a file could not be opened or read */
    FV_E_IMAGE_FORMAT = 4,     /* not a supported image format */
    FV_E_IMAGE_CORRUPT = 5,    /* truncated or corrupt image data */
    FV_E_IMAGE_TOO_LARGE = 6,  /* input bytes or pixel count above limits */
    FV_E_MODEL_MISSING = 7,    /* a model file is not where it should be */
    FV_E_MODEL_CORRUPT = 8,    /* a model file failed validation */
    FV_E_NO_FACE = 9,          /* no face found */
    FV_E_MULTIPLE_FACES = 10,  /* several faces where one was required */
    FV_E_UNSUPPORTED = 11,     /* feature or detector not available */
    FV_E_INTERNAL = 12,        /* a bug: an invariant did not hold */
    FV_E_MODEL_MISMATCH = 13,  /* embeddings of different models compared */
    FV_STATUS_COUNT_ = 14      /* not a status; keeps tests honest */
} fv_status;

/* Returns a static, human-readable description of a status; never NULL
 * (unknown values give "unknown status").  Thread-safe. */
FV_API const char *fv_strerror(fv_status st);

/* Returns a short stable identifier such as "no_face" for a status; never
 * NULL.  Used by the CLI and server for machine-readable error codes. */
FV_API const char *fv_status_name(fv_status st);

/* ---------------------------------------------------------------- images */

/* Limits applied before any pixel memory is allocated. */
typedef struct fv_limits {
    size_t max_input_bytes; /* default 10 MB (10 * 1000 * 1000) */
    uint64_t max_pixels;    /* default 40 megapixels */
} fv_limits;

#define FV_DEFAULT_MAX_INPUT_BYTES ((size_t)10 * 1000 * 1000)
#define FV_DEFAULT_MAX_PIXELS ((uint64_t)40 * 1000 * 1000)

/* Fills *lim with the defaults above. */
FV_API void fv_limits_init(fv_limits *lim);

/* A decoded image: 8-bit RGB, interleaved, rows packed (stride 3*width),
 * EXIF orientation already applied.  Owned by the caller. */
typedef struct fv_image {
    int width;
    int height;
    unsigned char *rgb;
} fv_image;

/* Decodes JPEG, PNG, WebP, BMP, HEIC/HEIF, AVIF, TIFF (first page), GIF
 * (first frame) or PBM/PGM/PPM bytes (format sniffed from the bytes, not a
 * name) into *out.  lim may be NULL for the defaults.  Grayscale, alpha,
 * palette, CMYK and 16-bit inputs are converted to RGB8; EXIF (JPEG), TIFF
 * and HEIF orientations are applied.  Thread-safe. */
FV_API fv_status fv_image_decode(const void *bytes, size_t len, const fv_limits *lim,
                                 fv_image **out, char *err, size_t errlen);

/* Reads only the header of the bytes (any format fv_image_decode reads):
 * *width x *height of the image fv_image_decode would return (orientation
 * applied), with the same input-size and pixel limits and the same errors
 * for bytes that are too large, not an image or a header that is corrupt.
 * No pixel memory is allocated, so a caller can budget memory before
 * decoding.
 * A valid header does not promise a decodable image.  Thread-safe. */
FV_API fv_status fv_image_probe(const void *bytes, size_t len, const fv_limits *lim, int *width,
                                int *height, char *err, size_t errlen);

/* Peak memory fv_image_decode needs for these bytes' format, in bytes per
 * pixel of the image it returns (the RGB image included), measured on 12 MP
 * photos: 3 for JPEG, PNG, WebP, BMP, TIFF, GIF and PBM/PGM/PPM (the image
 * itself), 9 for HEIC/HEIF and 16 for AVIF (the codecs' own frame and plane
 * buffers).  Reads only the signature; 3 for bytes of no known format.
 * With fv_image_probe, a caller can budget memory before decoding. */
FV_API unsigned fv_image_decode_bpp(const void *bytes, size_t len);

/* Reads a file (refusing files above lim->max_input_bytes before reading
 * them in full) and decodes it as fv_image_decode does.  A missing or
 * unreadable file (or a directory) is FV_E_IO, one above the limit
 * FV_E_IMAGE_TOO_LARGE; err names the file. */
FV_API fv_status fv_image_load(const char *path, const fv_limits *lim, fv_image **out, char *err,
                               size_t errlen);

/* Makes an image from caller pixels (copied).  For bindings and tests. */
FV_API fv_status fv_image_from_rgb(const unsigned char *rgb, int width, int height, fv_image **out);

/* Frees an image; NULL is a no-op. */
FV_API void fv_image_destroy(fv_image *img);

/* ---------------------------------------------------------------- engine */

typedef enum fv_detector {
    FV_DETECTOR_MMOD = 0,  /* dlib's MMOD CNN face detector */
    FV_DETECTOR_NONE = 1,  /* the whole image is the face (tight crops) */
    FV_DETECTOR_HAAR = 2,  /* OpenCV Haar cascade (Viola-Jones), see fv_config */
    FV_DETECTOR_MTCNN = 3, /* MTCNN (P-/R-/O-Net, facenet-pytorch's weights), see fv_config */
    /* The default: MTCNN when its weights (mtcnn.bin) are installed, else
     * MMOD's automatic scale policy; MMOD when upsample is set (see
     * fv_detect_options_resolve). */
    FV_DETECTOR_AUTO = 4
} fv_detector;

/* Returns "mmod", "none", "haar", "mtcnn", "auto"; NULL for an unknown value. */
FV_API const char *fv_detector_name(fv_detector d);
/* Parses a detector name; FV_E_UNSUPPORTED for an unknown name. */
FV_API fv_status fv_detector_parse(const char *name, fv_detector *out);

typedef enum fv_flip {
    FV_FLIP_NONE = 0, /* embed the chip only */
    FV_FLIP_MEAN = 1, /* mean of the chip's and its mirror's embeddings */
    FV_FLIP_UNIT = 2  /* that mean rescaled to unit length */
} fv_flip;

typedef struct fv_config {
    const char *models_dir; /* NULL: $FACEVERIFY_MODELS, else the built-in default */
    int threads;            /* worker threads; 0: number of online CPUs */
    fv_limits limits;       /* decode limits */
    float threshold;        /* default decision threshold; <= 0: calibrated default */
    /* OpenCV Haar cascade XML for FV_DETECTOR_HAAR.  NULL:
     * haarcascade_frontalface_default.xml in $FACEVERIFY_CASCADES, else in
     * /usr/share/opencv4/haarcascades (Debian's opencv-data).  Loaded on
     * first use: a missing cascade only fails calls that ask for haar. */
    const char *haar_cascade;
    /* Flipped-image averaging: also embed the horizontal mirror of each
     * face chip and combine the two embeddings (one ResNet pass on a
     * batch of 2, so about twice the embedding time).  FV_FLIP_NONE
     * (default, 0): the chip alone, dlib's behaviour.  With threshold <= 0
     * each mode gets its own calibrated threshold (config/faceverify.conf). */
    fv_flip flip;
    /* MTCNN weights for FV_DETECTOR_MTCNN (scripts/mtcnn_convert.py's
     * format).  NULL: mtcnn.bin in the models folder.  Optional, fetched by
     * `make models` when PyPI is reachable; loaded on first use, so a
     * missing file only fails calls that ask for mtcnn
     * (FV_E_MODEL_MISSING). */
    const char *mtcnn_model;
    /* Test-time jitter, face_recognition's num_jitters: each chip is also
     * resampled under `jitters` small fixed transforms (rotation within 3
     * degrees, scale 0.96..1, shift within 2%, every other one mirrored),
     * and the embeddings of all the passes are averaged (1 + jitters
     * network passes, 2 + jitters with a flip mode).  0 (default): none.
     * 0..FV_MAX_JITTERS.  The transforms are fixed, so a photo always gets
     * the same embedding.  Distances move, so the FMR calibration, which
     * is the plain ResNet's, is refused for jittered embeddings.
     * bench/openset_tta.py measures what it buys. */
    int jitters;
} fv_config;

#define FV_MAX_JITTERS 64

/* Fills *cfg with defaults. */
FV_API void fv_config_init(fv_config *cfg);

/* The models folder fv_engine_create reads for cfg->models_dir =
 * configured: configured itself when not NULL or empty, else
 * $FACEVERIFY_MODELS, else the build tree's models/ or, installed,
 * PREFIX/share/faceverify.  The string is static or configured. */
FV_API const char *fv_models_dir(const char *configured);

typedef struct fv_engine fv_engine;

/* A trained embedding model (see "trained models" below).  Wherever a
 * function takes a const fv_model *, NULL means the engine's own ResNet
 * (FV_MODEL_ID): one code path serves every model. */
typedef struct fv_model fv_model;

/* Loads the three models (detector, shape predictor, ResNet) from the
 * models directory and starts the thread pool.  Every model file is read
 * the same way, so a failure gives one status whichever file it hit, with
 * the file named in err:
 *   FV_E_MODEL_MISSING    a model file does not exist;
 *   FV_E_IO               it exists but cannot be read (permissions, a
 *                         directory or other non-regular file, read error);
 *   FV_E_MODEL_CORRUPT    it is larger than that model's cap or fails
 *                         validation;
 *   FV_E_INVALID_ARGUMENT out is NULL, threads outside 0..256, flip
 *                         outside the enum;
 *   FV_E_NO_MEMORY        allocation failed, or the pool could not start;
 *   FV_E_INTERNAL         only on a bug (an invariant did not hold).
 * *out is NULL on failure. */
FV_API fv_status fv_engine_create(const fv_config *cfg, fv_engine **out, char *err, size_t errlen);

/* Stops the pool and frees the models; NULL is a no-op.  No call on the
 * engine may be in progress. */
FV_API void fv_engine_destroy(fv_engine *eng);

/* The calibrated default threshold of this engine (Euclidean distance). */
FV_API float fv_engine_threshold(const fv_engine *eng);

/* Worker threads of the engine's pool. */
FV_API int fv_engine_threads(const fv_engine *eng);

/* ---------------------------------------------------------------- faces */

typedef struct fv_point {
    float x, y;
} fv_point;

typedef struct fv_face {
    /* Box in original image pixels: left, top, right, bottom (exclusive). */
    float left, top, right, bottom;
    float score; /* detector confidence; 0 for FV_DETECTOR_NONE */
    /* 5 landmarks (dlib order: right eye outer, right eye inner, left eye
     * outer, left eye inner, nose base), original pixel coordinates. */
    fv_point landmarks[FV_NUM_LANDMARKS];
} fv_face;

typedef struct fv_detect_options {
    fv_detector detector;
    /* MMOD: times to double the image before detecting (0..2: one pass,
     * dlib's boxes); -1: auto (default), which looks for faces down to
     * ~20 px in every photo (see the README's detection policy). */
    int upsample;
    /* Images whose longer side exceeds this are downscaled for detection
     * (boxes are mapped back); 0: never.  Default -1: the detector's own,
     * 1600 for MMOD and Haar (their cost and memory grow fast with the
     * pixels), never for MTCNN (it finds 20 px faces in 24 MP photos in
     * bounded memory: P-Net runs in strips). */
    int max_side;
    float min_score; /* drop detections below this score; default 0 */
    /* 1 (default): find faces in photos turned 90, 270 or 180 degrees
     * without EXIF.  When no confident upright face is found, the turned
     * photo is searched at a reduced scale; when one is, an orientation
     * check (OpenCV's frontal Haar cascade, when its file is installed, on
     * a small crop of the strongest face) decides whether it lies on its
     * side or upside down.  A turned photo is detected again turned
     * upright; boxes and landmarks are mapped back to the original image,
     * so the chip comes out upright.  0: the image as given (dlib's
     * behaviour, the parity tests' setting). */
    int try_rotations;
    /* Which face comes first (and is "the face used" by fv_embed_face and
     * fv_verify): FV_ORDER_LARGEST (default) or FV_ORDER_CENTER, the face
     * whose box centre is nearest the image centre (for centred crops such
     * as LFW, where bystanders can be larger than the subject). */
    int order;
    /* HAAR (OpenCV's detectMultiScale parameters): image shrink per pyramid
     * level (1.01..10, default 1.1); hits a face needs besides its own
     * (0..1000, default 3; 0 keeps every raw hit); smallest and largest
     * face side in pixels (default 0: the cascade window, the image).
     * Haar boxes are mapped to dlib's box convention (see src/detect/haar.c)
     * so that the landmarks and the chip match MMOD's; score = hit count.
     * max_side above also applies (boxes mapped back).
     * MTCNN: faces from 20 px, pyramid factor 0.709, thresholds 0.6/0.7/0.7
     * (fixed); boxes mapped to dlib's convention (src/detect/mtcnn.c),
     * score = O-Net's face probability (faces from 0.8, 1 at most; see
     * src/detect/policy.c); try_rotations applies as
     * for Haar, max_side when set (its default: never). */
    float haar_scale_factor;
    int haar_min_neighbors;
    int haar_min_size;
    int haar_max_size;
    /* MMOD arithmetic: FV_PRECISION_EXACT, float32 as dlib (its boxes and
     * scores to the pixel: the parity tests use it), or FV_PRECISION_FAST,
     * bfloat16 convolutions with float32 accumulation on CPUs with AVX-512
     * BF16 (about 2x faster MMOD), exact elsewhere.  Fast finds the same
     * faces (recall equal, scores within 0.005 of exact), but where two
     * windows of one face score within ~0.001 it may keep the other one
     * (2.4% of LFW faces: a box of IoU 0.57-0.95 with exact's); see
     * docs/benchmarks.md.  Default: FV_PRECISION_EXACT. */
    int precision;
} fv_detect_options;

#define FV_ORDER_LARGEST 0
#define FV_ORDER_CENTER 1

#define FV_PRECISION_EXACT 0
#define FV_PRECISION_FAST 1

FV_API void fv_detect_options_init(fv_detect_options *opt);

/* Replaces the options' defaults by what the engine will run:
 * FV_DETECTOR_AUTO by FV_DETECTOR_MTCNN when the engine's MTCNN weights
 * load (they are then loaded), by FV_DETECTOR_MMOD when the file is
 * missing (FV_E_MODEL_MISSING) or upsample is 0..2 (MMOD's exact mode,
 * dlib's boxes); max_side -1 by the detector's own.  A
 * corrupt file (FV_E_MODEL_CORRUPT, FV_E_IO) or FV_E_NO_MEMORY is returned
 * with opt unchanged.  Every detecting function does this itself; callers
 * use it to report the detector in force or to size the work. */
FV_API fv_status fv_detect_options_resolve(const fv_engine *eng, fv_detect_options *opt, char *err,
                                           size_t errlen);

/* Detects faces and their 5 landmarks.  Writes up to cap faces into faces[]
 * (largest first) and the number found (which may exceed cap) into *count.
 * Zero faces is FV_OK with *count = 0. */
FV_API fv_status fv_detect(const fv_engine *eng, const fv_image *img, const fv_detect_options *opt,
                           fv_face *faces, size_t cap, size_t *count, char *err, size_t errlen);

/* Predicts the 5 landmarks of face (whose box is set) into
 * face->landmarks, for boxes that come from elsewhere. */
FV_API fv_status fv_face_landmarks(const fv_engine *eng, const fv_image *img, fv_face *face);

/* Extracts the 150x150 RGB aligned chip (dlib's get_face_chip, padding
 * 0.25) for a face whose landmarks are set.  chip: caller-owned
 * FV_CHIP_SIZE*FV_CHIP_SIZE*3 bytes. */
FV_API fv_status fv_face_chip(const fv_engine *eng, const fv_image *img, const fv_face *face,
                              unsigned char *chip);

/* Embeds n chips (n * 150*150*3 bytes, packed) into out (n * 128 floats)
 * with the engine's ResNet, applying fv_config.flip as fv_embed_face does
 * (same code: this is fv_model_embed_chips with model NULL).
 * Deterministic for a given input and thread count. */
FV_API fv_status fv_embed_chips(const fv_engine *eng, const unsigned char *chips, size_t n,
                                float *out, char *err, size_t errlen);

/* ---------------------------------------------------------------- compare */

/* Euclidean distance of two 128-d embeddings. */
FV_API float fv_distance(const float *a, const float *b);

/* Similarity in [0,1], a decreasing function of distance:
 *   s = 1 / (1 + exp((d - t) / 0.05))
 * so s = 0.5 exactly at the threshold t, > 0.5 for a match. */
FV_API float fv_similarity(float distance, float threshold);

/* ---------------------------------------------------------------- quality
 * How fit a detected face is for recognition, from what was measured on
 * it: its size in the photo, the sharpness and exposure of its aligned
 * chip, its pose (from the 5 landmarks) and the detector's confidence.
 * Each factor maps to [0,1]; the score is their product, so one bad factor
 * is enough to make a face poor.  The thresholds are in src/decide/quality.c
 * and docs/operating-points.md, with the error rates per quality bin that
 * justify them. */

/* Reasons a face is poor (fv_quality.reasons, bit flags). */
#define FV_QUALITY_TOO_SMALL (1u << 0)      /* few pixels on the face */
#define FV_QUALITY_BLURRED (1u << 1)        /* little fine detail in the chip */
#define FV_QUALITY_DARK (1u << 2)           /* underexposed */
#define FV_QUALITY_OVEREXPOSED (1u << 3)    /* washed out */
#define FV_QUALITY_LOW_CONTRAST (1u << 4)   /* flat: fog, glare, a grey scan */
#define FV_QUALITY_PROFILE (1u << 5)        /* head turned sideways (yaw) */
#define FV_QUALITY_PITCHED (1u << 6)        /* head tilted up or down */
#define FV_QUALITY_LOW_CONFIDENCE (1u << 7) /* the detector is unsure it is a face */
#define FV_QUALITY_REASON_COUNT 8

typedef struct fv_quality {
    float score;          /* [0,1]: the product of the factors below */
    float size_px;        /* face size: sqrt of the box area, original pixels */
    float sharpness;      /* [0,1]: 1 - the chip's blur effect (Crete et al. 2007) */
    float brightness;     /* mean luma of the chip's face area, 0..255 */
    float contrast;       /* standard deviation of that luma */
    float yaw, pitch;     /* degrees, estimated from the landmarks; 0 = frontal */
    float detector_score; /* the face's score (MMOD confidence, Haar hits, MTCNN probability) */
    /* the factors in [0,1] that make up score */
    float size_factor, sharpness_factor, exposure_factor, pose_factor, detector_factor;
    unsigned reasons; /* FV_QUALITY_* bits: the factors below 0.5 */
} fv_quality;

/* Quality of face (box and landmarks set, found by detector) from its
 * aligned chip (FV_CHIP_SIZE^2 RGB bytes, from fv_face_chip).  Pure
 * arithmetic, about 0.1 ms.  FV_E_INVALID_ARGUMENT for NULL arguments. */
FV_API fv_status fv_face_quality(const fv_face *face, fv_detector detector,
                                 const unsigned char *chip, fv_quality *out);

/* Name of one reason bit ("too_small", "blurred", "dark", "overexposed",
 * "low_contrast", "profile", "pitched", "low_confidence"); NULL for
 * anything else. */
FV_API const char *fv_quality_reason_name(unsigned reason);

typedef struct fv_timings {
    double decode_ms, detect_ms, landmarks_ms, chip_ms, embed_ms;
} fv_timings;

typedef struct fv_face_result {
    fv_face face; /* the face used */
    size_t faces; /* faces detected in the image */
    float embedding[FV_EMBED_DIM];
    fv_timings timings; /* decode_ms is left 0: decoding is the caller's */
    fv_quality quality; /* of the face used (fv_face_quality on its chip) */
} fv_face_result;

/* Detects, aligns and embeds the face to use in img with the engine's
 * ResNet, under fv_config.flip (this is fv_model_embed_face with model
 * NULL).  Several faces: the first in opt->order is used, unless strict, in
 * which case FV_E_MULTIPLE_FACES.  No face: FV_E_NO_FACE.  Landmarks are
 * predicted for the face used only. */
FV_API fv_status fv_embed_face(const fv_engine *eng, const fv_image *img,
                               const fv_detect_options *opt, int strict, fv_face_result *out,
                               char *err, size_t errlen);

typedef struct fv_verify_options {
    fv_detect_options detect;
    float threshold; /* <= 0: the model's calibrated threshold (the engine's
                        for the ResNet) */
    int strict;      /* 1: several faces in an image is FV_E_MULTIPLE_FACES */
    /* The embedding model; NULL (default): the engine's ResNet.  Not owned;
     * must outlive the call. */
    const fv_model *model;
    /* > 0: decide at this false-match rate (FV_FMR_MIN..FV_FMR_MAX) with
     * the calibrated threshold for the pair's quality (fv_pair_quality,
     * fv_fmr_threshold); then threshold must be 0.  Default 0: threshold
     * decides. */
    double fmr;
} fv_verify_options;

/* Fills *opt with the defaults: fv_detect_options_init, threshold 0 (the
 * model's), not strict, model NULL (the ResNet). */
FV_API void fv_verify_options_init(fv_verify_options *opt);

typedef struct fv_verify_result {
    int verified; /* 1 when distance <= threshold */
    float distance;
    float threshold;
    float similarity;
    fv_face_result a, b;
    const char *model;    /* FV_MODEL_ID, or the model's id (fv_model_id) */
    const char *detector; /* static string */
    double total_ms;
    /* The operating point: fmr is the false-match rate asked for (0 when
     * a threshold was given instead); estimated_fmr is the calibrated
     * false-match rate at this pair's distance and quality
     * (fv_estimated_fmr), -1 when the model has no calibration. */
    double fmr;
    double estimated_fmr;
} fv_verify_result;

/* Is the face in a the same person as the face in b?  Both faces are
 * embedded by opt->model (NULL: the ResNet) through fv_model_embed_face;
 * the distance is fv_distance over the zero-padded embeddings.  On error,
 * err names which image ("image a: no face found"). */
FV_API fv_status fv_verify(const fv_engine *eng, const fv_image *a, const fv_image *b,
                           const fv_verify_options *opt, fv_verify_result *out, char *err,
                           size_t errlen);

/* ------------------------------------------------------ operating points
 * A threshold is a policy only once its error rate is known.  These map a
 * false-match rate (FMR: the fraction of pairs of two different people
 * that are called the same) to the distance threshold that gives it, and a
 * distance back to its FMR, from the impostor distances of LFW View 1
 * training people and derived harder variants of them (grey, small,
 * blurred, JPEG q=20, turned), binned by pair quality (fv_pair_quality).
 * Poor faces sit closer to everyone, so their thresholds are stricter.  docs/operating-points.md
 * has the method, and the stated-vs-measured FMR on people the calibration never saw. */

#define FV_FMR_MIN 1e-6
#define FV_FMR_MAX 1e-1
/* The product's default: one false match in a thousand impostor pairs. */
#define FV_DEFAULT_FMR 1e-3

/* A pair's quality for the calibration: the mean of the two faces'
 * fv_quality.score (a face of unknown quality, such as a bare embedding,
 * counts as 1).  The mean, not the poorer: impostor distances shrink when
 * both faces are poor much more than when one is, and the mean tells the
 * two apart (docs/operating-points.md). */
FV_API float fv_pair_quality(float quality_a, float quality_b);

/* Threshold on fv_distance for false-match rate fmr (FV_FMR_MIN..
 * FV_FMR_MAX) for a pair of quality quality (fv_pair_quality; pass 1
 * when unknown).  model_id NULL
 * is FV_MODEL_ID.  FV_E_UNSUPPORTED: no calibration for that model (trained
 * models carry only their own threshold); FV_E_INVALID_ARGUMENT: fmr out of
 * range, quality not in [0,1], NULL threshold. */
FV_API fv_status fv_fmr_threshold(const char *model_id, double fmr, float quality,
                                  float *threshold);

/* The calibrated false-match rate at distance d for a pair of that
 * quality: the fraction of impostor pairs at or below d.  Values beyond
 * the calibration's reach are clamped to [FV_FMR_MIN, 1].  Statuses as
 * fv_fmr_threshold. */
FV_API fv_status fv_estimated_fmr(const char *model_id, float distance, float quality, double *fmr);

/* ------------------------------------------------------ open-set identify
 * "Who is this, if anyone?"  The nearest enrolled subject is only a match
 * when the probe is closer to it than to the rest of the gallery by more
 * than chance allows at the gallery's size: an unknown face is always
 * nearest to someone, and the more people are enrolled, the nearer.  The
 * rule (src/decide/openset.c; docs/operating-points.md has the
 * measurements that chose it) scores the nearest subject against the
 * probe's distances to the next subjects (a normalised score), and the
 * score threshold for a false-positive identification rate (FPIR: the
 * fraction of people who are not enrolled but get a match) depends on the
 * gallery size.  Subjects are compared through one fused template each. */

#define FV_FPIR_MIN 1e-3
#define FV_FPIR_MAX 1e-1
/* The product's default: one unknown person in a hundred gets a match. */
#define FV_DEFAULT_FPIR 1e-2

/* Fuses a subject's n templates (n x dim floats) into out (dim floats):
 * the mean of the unit-length templates, scaled to their mean length.
 * FV_E_INVALID_ARGUMENT for n == 0, dim outside 1..FV_EMBED_DIM, NULL, or
 * a zero template. */
FV_API fv_status fv_fuse_templates(const float *templates, size_t n, int dim, float *out);

typedef struct fv_openset_decision {
    float score;           /* normalised score of the nearest subject (higher: surer) */
    float threshold;       /* score threshold at the FPIR asked for, at this gallery size */
    double estimated_fpir; /* the FPIR at this score and gallery size, in [FV_FPIR_MIN, 1] */
    int match;             /* 1 when score >= threshold: the nearest subject is the answer */
    /* 1: the gallery is too small for a cohort, so the decision is on the
     * distance alone and every score is -distance (threshold likewise) */
    int distance_rule;
} fv_openset_decision;

/* Decides one probe.  distances: ascending distances from the probe to
 * the fused templates of its n nearest subjects (n >= 1; the score uses
 * the nearest and the next five, so give at least 6 where the gallery has
 * them; more are ignored); gallery: the
 * number of subjects enrolled (>= n).  fpir in FV_FPIR_MIN..FV_FPIR_MAX.
 * FV_E_UNSUPPORTED: no calibration for model_id (NULL: FV_MODEL_ID);
 * FV_E_INVALID_ARGUMENT otherwise bad. */
FV_API fv_status fv_openset_decide(const char *model_id, const float *distances, size_t n,
                                   size_t gallery, double fpir, fv_openset_decision *out);

/* The normalised score of the subject at rank j (0-based) among the same
 * ascending distances (the other subjects form its cohort); NAN when
 * j >= n or distances is NULL. */
FV_API float fv_openset_score(const float *distances, size_t n, size_t j);

/* --------------------------------------------------------- trained models
 * A model trained by `faceverify train` (docs/model-format.md): a compact
 * CNN on aligned chips ("scratch") or a small network on top of the ResNet
 * embedding ("adapter"), with its id, embedding size and calibrated
 * threshold.  Immutable after loading; thread-safe to share. */
/* Loads a model file, with fv_engine_create's mapping of file failures:
 * FV_E_MODEL_MISSING (no such file), FV_E_IO (unreadable: permissions, a
 * directory, read error), FV_E_MODEL_CORRUPT (above 256 MiB or failed
 * validation; err says where); also FV_E_INVALID_ARGUMENT (NULL argument)
 * and FV_E_NO_MEMORY.  err names the file.  *out is owned by the caller. */
FV_API fv_status fv_model_load(const char *path, fv_model **out, char *err, size_t errlen);
FV_API void fv_model_destroy(fv_model *m);
/* The model's id (templates keep it; static for the model's lifetime). */
FV_API const char *fv_model_id(const fv_model *m);
/* "scratch" (a CNN on chips) or "adapter" (on the ResNet embedding). */
FV_API const char *fv_model_kind(const fv_model *m);
/* Embedding dimension (1..FV_EMBED_DIM) and the calibrated threshold. */
FV_API int fv_model_dim(const fv_model *m);
FV_API float fv_model_threshold(const fv_model *m);
/* Embeds n aligned chips with model m: out holds n * fv_model_dim(m)
 * floats (n * FV_EMBED_DIM for m NULL, the ResNet).  fv_config.flip
 * applies to the ResNet's embedding, also where it feeds an adapter; a
 * scratch model embeds the chip alone. */
FV_API fv_status fv_model_embed_chips(const fv_engine *eng, const fv_model *m,
                                      const unsigned char *chips, size_t n, float *out, char *err,
                                      size_t errlen);
/* Detects, aligns and embeds the face to use in img with model m (NULL:
 * the ResNet, which is what fv_embed_face does): the embedding is the
 * model's first fv_model_dim values, the rest of out->embedding is zero.
 * Statuses, face choice and timings as fv_embed_face. */
FV_API fv_status fv_model_embed_face(const fv_engine *eng, const fv_model *m, const fv_image *img,
                                     const fv_detect_options *opt, int strict, fv_face_result *out,
                                     char *err, size_t errlen);
/* Distance of two embeddings tagged with their model ids (NULL id: the
 * engine's ResNet, FV_MODEL_ID).  Different ids or dims:
 * FV_E_MODEL_MISMATCH, since the spaces are not comparable. */
FV_API fv_status fv_compare(const char *model_a, const float *a, const char *model_b,
                            const float *b, int dim, float *distance);

#ifdef __cplusplus
}
#endif
#endif

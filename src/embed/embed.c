/*
 * embed.c: dlib's face recognition ResNet (the dnn_face_recognition
 * example's anet_type) parsed from its .dat file and run on our NN ops.
 *
 * The architecture, innermost (first applied) layer first:
 *   input_rgb_image_sized<150>: (pixel - mean) / 256, mean stored in the file
 *   con<32,7,7,2,2> affine relu max_pool<3,3,2,2>
 *   alevel4: 3 x ares<32>     alevel3: ares_down<64>, 3 x ares<64>
 *   alevel2: ares_down<128>, 2 x ares<128>
 *   alevel1: ares_down<256>, 2 x ares<256>      alevel0: ares_down<256>
 *   avg_pool_everything, fc_no_bias<128>, loss_metric
 * where ares<N>(x) = relu(x + B(x)), ares_down<N>(x) = relu(B2(x) +
 * avg_pool<2,2,2,2>(x)), B = affine(con3x3(relu(affine(con3x3(x))))) with
 * stride 2 in B2's first conv.  dlib's add_prev of unequal shapes zero-fills
 * the smaller tensor: a down block adds channels (32 -> 64) and, from 8x8
 * on, the pooled shortcut is one pixel larger than the conv branch.
 *
 * The file (dlib's serialize of add_loss_layer) is nested outermost first:
 * the loss layer's version and details, then one version integer per layer
 * from the outermost (fc) down to the innermost (tag and skip layers write
 * only their version), then the input layer, then each layer's details and
 * add_layer state (flags, empty tensors) innermost first.  We generate the
 * expected layer sequence from the architecture and check every name,
 * version, hyper-parameter and tensor shape against it; anything else is
 * FV_E_MODEL_CORRUPT.  Weights must be finite.
 *
 * Each affine layer (gamma, beta per channel) is folded into the conv just
 * before it: exact in real arithmetic, and the parity tests show the float
 * rounding stays far inside the 1e-4 budget.
 *
 * Inference runs a batch of chips at once in CNHW layout (see nn.h) so the
 * small late layers still give sgemm wide matrices.  Activations live in an
 * arena (sized by a measure pass that replays the same allocations); arenas
 * are kept on a small mutex-protected free list so that concurrent calls
 * each get their own and steady-state calls allocate nothing.
 */
#include "embed/embed.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/fvi.h"
#include "nn/dlib_serial.h"
#include "nn/nn.h"

#define CHIP FV_CHIP_SIZE
#define STEM_C 32
#define FEAT_C 256
#define N_BLOCKS 14
#define N_CONVS (1 + 2 * N_BLOCKS)
_Static_assert(N_CONVS == FVI_RESNET_CONVS, "embed.h's conv count");
#define MAX_SPECS 160
/* Chips per forward pass: wide enough GEMMs for the 3x3 and 1x1 layers,
 * small enough to keep the activations (~4.6 MB a chip) modest. */
#define BATCH_MAX 8
/* Arenas kept for reuse by later calls. */
#define SPARE_ARENAS 4
/* The real file is 22.5 MB; refuse anything much larger before reading. */
#define MAX_MODEL_BYTES ((size_t)64 * 1024 * 1024)

/* ------------------------------------------------------------ architecture */

typedef enum {
    L_CON,
    L_AFFINE,
    L_RELU,
    L_MAXPOOL,
    L_AVGPOOL,
    L_ADDPREV,
    L_TAG,
    L_SKIP,
    L_AVGALL,
    L_FC
} layer_kind;

/* One layer of the architecture: for L_CON the filters, kernel and stride,
 * for L_CON and L_AFFINE the conv it belongs to, for L_AFFINE the channels. */
typedef struct {
    layer_kind kind;
    int nf, k, stride, conv;
} layer_spec;

typedef struct {
    layer_spec s[MAX_SPECS];
    int n;
    int nconv;
} spec_list;

static void push(spec_list *l, layer_kind kind, int nf, int k, int stride) {
    FVI_ASSERT(l->n < MAX_SPECS);
    layer_spec *s = &l->s[l->n++];
    s->kind = kind;
    s->nf = nf;
    s->k = k;
    s->stride = stride;
    s->conv = (kind == L_CON) ? l->nconv++ : (kind == L_AFFINE ? l->nconv - 1 : -1);
}

/* Appends block<N,affine,stride> (innermost first). */
static void push_block(spec_list *l, int nf, int stride) {
    push(l, L_CON, nf, 3, stride);
    push(l, L_AFFINE, nf, 0, 0);
    push(l, L_RELU, 0, 0, 0);
    push(l, L_CON, nf, 3, 1);
    push(l, L_AFFINE, nf, 0, 0);
}

static void push_ares(spec_list *l, int nf) {
    push(l, L_TAG, 0, 0, 0);
    push_block(l, nf, 1);
    push(l, L_ADDPREV, 0, 0, 0);
    push(l, L_RELU, 0, 0, 0);
}

static void push_ares_down(spec_list *l, int nf) {
    push(l, L_TAG, 0, 0, 0);
    push_block(l, nf, 2);
    push(l, L_TAG, 0, 0, 0);
    push(l, L_SKIP, 0, 0, 0);
    push(l, L_AVGPOOL, 0, 2, 2);
    push(l, L_ADDPREV, 0, 0, 0);
    push(l, L_RELU, 0, 0, 0);
}

/* The residual blocks in the order they run: filters, downsampling. */
static const struct {
    int nf, down;
} BLOCKS[N_BLOCKS] = {{32, 0},  {32, 0},  {32, 0},           /* alevel4 */
                      {64, 1},  {64, 0},  {64, 0},  {64, 0}, /* alevel3 */
                      {128, 1}, {128, 0}, {128, 0},          /* alevel2 */
                      {256, 1}, {256, 0}, {256, 0},          /* alevel1 */
                      {256, 1}};                             /* alevel0 */

static void build_specs(spec_list *l) {
    l->n = 0;
    l->nconv = 0;
    push(l, L_CON, STEM_C, 7, 2);
    push(l, L_AFFINE, STEM_C, 0, 0);
    push(l, L_RELU, 0, 0, 0);
    push(l, L_MAXPOOL, 0, 3, 2);
    for (int b = 0; b < N_BLOCKS; b++) {
        if (BLOCKS[b].down)
            push_ares_down(l, BLOCKS[b].nf);
        else
            push_ares(l, BLOCKS[b].nf);
    }
    push(l, L_AVGALL, 0, 0, 0);
    push(l, L_FC, FV_EMBED_DIM, 0, 0);
    FVI_ASSERT(l->nconv == N_CONVS);
}

/* ------------------------------------------------------------ network */

struct fvi_resnet {
    float mean[3];          /* avg red, green, blue of input_rgb_image_sized */
    fvi_conv conv[N_CONVS]; /* conv[0] stem; block b: conv[1+2b], conv[2+2b] */
    float *fc;              /* FEAT_C x FV_EMBED_DIM, row-major */
    float *weights;         /* one allocation behind every conv and fc */
    pthread_mutex_t mu;     /* guards spare[] */
    fvi_arena *spare[SPARE_ARENAS];
    int nspare;
};

/* ------------------------------------------------------------ parsing */

/* Parse state: the reader plus where each conv's data and affine live. */
typedef struct {
    fvi_dser d;
    fvi_resnet *net;
    int in_c[N_CONVS];
} parse_ctx;

/* Copies n little-endian floats at data_off into out, requiring them finite. */
static int read_floats_at(fvi_dser *d, size_t data_off, float *out, size_t n) {
    fvi_dser sub;
    fvi_dser_init(&sub, d->p + data_off, d->len - data_off);
    if (fvi_dser_raw_floats(&sub, out, n)) return fvi_dser_fail(d, "truncated weights");
    for (size_t i = 0; i < n; i++)
        if (!isfinite(out[i])) return fvi_dser_fail(d, "non-finite weight");
    return 0;
}

static int parse_con(parse_ctx *pc, const layer_spec *s, int in_c) {
    fvi_dser *d = &pc->d;
    char name[16];
    if (fvi_dser_string(d, name, sizeof name)) return -1;
    int v5 = strcmp(name, "con_5") == 0;
    if (!v5 && strcmp(name, "con_4") != 0) return fvi_dser_fail(d, "expected a con_ layer");
    const int pad = s->stride == 1 ? s->k / 2 : 0;
    const size_t nw = (size_t)s->nf * in_c * s->k * s->k;
    size_t count, data_off;
    int64_t dims[4];
    if (fvi_dser_tensor_header(d, dims, nw + (size_t)s->nf, &count)) return -1;
    if (dims[1] != 1 || dims[2] != 1 || dims[3] != 1)
        return fvi_dser_fail(d, "con_ params tensor has the wrong shape");
    data_off = d->off;
    d->off += count * 4;
    if (fvi_dser_expect_int(d, s->nf, "con_ num_filters does not match") ||
        fvi_dser_expect_int(d, s->k, "con_ nr does not match") ||
        fvi_dser_expect_int(d, s->k, "con_ nc does not match") ||
        fvi_dser_expect_int(d, s->stride, "con_ stride_y does not match") ||
        fvi_dser_expect_int(d, s->stride, "con_ stride_x does not match") ||
        fvi_dser_expect_int(d, pad, "con_ padding_y does not match") ||
        fvi_dser_expect_int(d, pad, "con_ padding_x does not match") ||
        fvi_dser_expect_alias(d, s->nf, in_c, s->k, s->k))
        return -1;
    /* The bias alias is (1,nf,1,1) with a bias, never set up without one. */
    int64_t bdims[5];
    for (int i = 0; i < 5; i++)
        if (fvi_dser_int(d, &bdims[i])) return -1;
    if (fvi_dser_skip_doubles(d, 4)) return -1; /* learning-rate and decay multipliers */
    int use_bias = 1;
    if (v5 && fvi_dser_bool(d, &use_bias)) return -1;
    if (use_bias) {
        if (bdims[0] != 1 || bdims[1] != 1 || bdims[2] != s->nf || bdims[3] != 1 || bdims[4] != 1)
            return fvi_dser_fail(d, "con_ bias shape does not match");
    } else if (bdims[0] != 1) {
        return fvi_dser_fail(d, "bad alias_tensor version");
    }
    if (count != nw + (use_bias ? (size_t)s->nf : 0))
        return fvi_dser_fail(d, "con_ params size does not match the architecture");
    fvi_conv *cv = &pc->net->conv[s->conv];
    if (read_floats_at(d, data_off, cv->weights, nw)) return -1;
    if (use_bias) {
        if (read_floats_at(d, data_off + nw * 4, cv->bias, (size_t)s->nf)) return -1;
    } else {
        memset(cv->bias, 0, (size_t)s->nf * sizeof(float));
    }
    return 0;
}

/* affine_ after conv s->conv: folds gamma, beta into that conv. */
static int parse_affine(parse_ctx *pc, const layer_spec *s) {
    fvi_dser *d = &pc->d;
    char name[16];
    if (fvi_dser_string(d, name, sizeof name)) return -1;
    int v2 = strcmp(name, "affine_2") == 0;
    if (!v2 && strcmp(name, "affine_") != 0) {
        if (strcmp(name, "bn_con2") == 0)
            return fvi_dser_fail(d, "batch-norm (training) layers are not supported");
        return fvi_dser_fail(d, "expected an affine_ layer");
    }
    const size_t C = (size_t)s->nf;
    size_t count, data_off;
    int64_t dims[4];
    if (fvi_dser_tensor_header(d, dims, 2 * C, &count)) return -1;
    data_off = d->off;
    d->off += count * 4;
    int64_t g[5], b[5];
    for (int i = 0; i < 5; i++)
        if (fvi_dser_int(d, &g[i])) return -1;
    for (int i = 0; i < 5; i++)
        if (fvi_dser_int(d, &b[i])) return -1;
    int64_t mode;
    if (fvi_dser_int(d, &mode)) return -1;
    if (mode != 0) return fvi_dser_fail(d, "affine_ is not in CONV_MODE");
    int disabled = 0;
    if (v2 && fvi_dser_bool(d, &disabled)) return -1;
    if (disabled) { /* an identity layer: no params, aliases never set up */
        if (count != 0) return fvi_dser_fail(d, "disabled affine_ has params");
        return 0;
    }
    const int64_t want[5] = {1, 1, (int64_t)C, 1, 1};
    for (int i = 0; i < 5; i++)
        if (g[i] != want[i] || b[i] != want[i])
            return fvi_dser_fail(d, "affine_ gamma/beta shape does not match");
    if (count != 2 * C || dims[1] != 1 || dims[2] != 1 || dims[3] != 1)
        return fvi_dser_fail(d, "affine_ params size does not match");
    float gb[2 * 512];
    FVI_ASSERT(2 * C <= sizeof gb / sizeof *gb);
    if (read_floats_at(d, data_off, gb, 2 * C)) return -1;
    fvi_conv *cv = &pc->net->conv[s->conv];
    if (fvi_conv_fold_affine(cv, gb, gb + C)) return fvi_dser_fail(d, "out of memory");
    return 0;
}

static int parse_pool(fvi_dser *d, const char *name, int k, int stride) {
    if (fvi_dser_expect_string(d, name)) return -1;
    return fvi_dser_expect_int(d, k, "pool nr does not match") ||
                   fvi_dser_expect_int(d, k, "pool nc does not match") ||
                   fvi_dser_expect_int(d, stride, "pool stride_y does not match") ||
                   fvi_dser_expect_int(d, stride, "pool stride_x does not match") ||
                   fvi_dser_expect_int(d, 0, "pool padding_y does not match") ||
                   fvi_dser_expect_int(d, 0, "pool padding_x does not match")
               ? -1
               : 0;
}

static int parse_fc(parse_ctx *pc) {
    fvi_dser *d = &pc->d;
    char name[16];
    if (fvi_dser_string(d, name, sizeof name)) return -1;
    int v3 = strcmp(name, "fc_3") == 0;
    if (!v3 && strcmp(name, "fc_2") != 0) return fvi_dser_fail(d, "expected an fc_ layer");
    if (fvi_dser_expect_int(d, FV_EMBED_DIM, "fc_ num_outputs does not match") ||
        fvi_dser_expect_int(d, FEAT_C, "fc_ num_inputs does not match"))
        return -1;
    const size_t nw = (size_t)FEAT_C * FV_EMBED_DIM;
    size_t count;
    int64_t dims[4];
    if (fvi_dser_tensor_header(d, dims, nw, &count)) return -1;
    if (count != nw || dims[0] != FEAT_C || dims[1] != FV_EMBED_DIM || dims[2] != 1 || dims[3] != 1)
        return fvi_dser_fail(d, "fc_ params shape does not match");
    size_t data_off = d->off;
    d->off += count * 4;
    if (fvi_dser_expect_alias(d, FEAT_C, FV_EMBED_DIM, 1, 1) ||
        fvi_dser_expect_alias(d, 0, 0, 0, 0) ||
        fvi_dser_expect_int(d, 1, "fc_ is not FC_NO_BIAS") || fvi_dser_skip_doubles(d, 4))
        return -1;
    int use_bias = 0;
    if (v3 && fvi_dser_bool(d, &use_bias)) return -1;
    return read_floats_at(d, data_off, pc->net->fc, nw);
}

static int parse_input(parse_ctx *pc) {
    fvi_dser *d = &pc->d;
    if (fvi_dser_expect_string(d, "input_rgb_image_sized")) return -1;
    for (int i = 0; i < 3; i++) {
        if (fvi_dser_float(d, &pc->net->mean[i])) return -1;
        if (!isfinite(pc->net->mean[i]) || fabsf(pc->net->mean[i]) > 1e6f)
            return fvi_dser_fail(d, "bad input mean");
    }
    return fvi_dser_expect_int(d, CHIP, "input rows do not match") ||
                   fvi_dser_expect_int(d, CHIP, "input columns do not match")
               ? -1
               : 0;
}

static int parse_model(parse_ctx *pc, const spec_list *l) {
    fvi_dser *d = &pc->d;
    int64_t versions[MAX_SPECS];
    /* add_loss_layer: version, loss details, then the network */
    if (fvi_dser_expect_int(d, 1, "bad add_loss_layer version")) return -1;
    char name[32];
    if (fvi_dser_string(d, name, sizeof name)) return -1;
    if (strcmp(name, "loss_metric_2") == 0) {
        float margin, thresh;
        if (fvi_dser_float(d, &margin) || fvi_dser_float(d, &thresh)) return -1;
    } else if (strcmp(name, "loss_metric_") != 0) {
        return fvi_dser_fail(d, "expected a loss_metric_ layer");
    }
    /* one version per layer, outermost first */
    for (int i = l->n - 1; i >= 0; i--) {
        const layer_spec *s = &l->s[i];
        int64_t lo = 1, hi = 2;
        if (s->kind == L_TAG || s->kind == L_SKIP)
            hi = 1;
        else if (i == 0)
            lo = 2, hi = 3; /* add_layer over the input layer */
        if (fvi_dser_int(d, &versions[i])) return -1;
        if (versions[i] < lo || versions[i] > hi)
            return fvi_dser_fail(d, "unexpected layer version");
    }
    if (parse_input(pc)) return -1;
    int ch = 3; /* channels flowing through, to size each conv */
    int block_in = 3;
    for (int i = 0; i < l->n; i++) {
        const layer_spec *s = &l->s[i];
        int r = 0;
        switch (s->kind) {
        case L_TAG:
            block_in = ch;
            continue;
        case L_SKIP:
            continue;
        case L_CON:
            if (ch != pc->in_c[s->conv]) return fvi_dser_fail(d, "internal: channel mismatch");
            r = parse_con(pc, s, ch);
            ch = s->nf;
            break;
        case L_AFFINE:
            r = parse_affine(pc, s);
            break;
        case L_RELU:
            r = fvi_dser_expect_string(d, "relu_");
            break;
        case L_MAXPOOL:
            r = parse_pool(d, "max_pool_2", s->k, s->stride);
            break;
        case L_AVGPOOL:
            r = parse_pool(d, "avg_pool_2", s->k, s->stride);
            break;
        case L_AVGALL:
            r = parse_pool(d, "avg_pool_2", 0, 1);
            break;
        case L_ADDPREV:
            r = fvi_dser_expect_string(d, "add_prev_");
            if (block_in > ch) ch = block_in;
            break;
        case L_FC:
            r = parse_fc(pc);
            break;
        }
        if (r || fvi_dser_add_layer_trailer(d, versions[i], i == 0)) return -1;
    }
    if (fvi_dser_left(d) != 0) return fvi_dser_fail(d, "trailing bytes after the network");
    return d->failed ? -1 : 0;
}

/* ------------------------------------------------------------ load */

void fvi_resnet_destroy(fvi_resnet *net) {
    if (!net) return;
    for (int i = 0; i < net->nspare; i++) {
        fvi_arena_free(net->spare[i]);
        fvi_free(net->spare[i]);
    }
    pthread_mutex_destroy(&net->mu);
    fvi_free_aligned(net->weights);
    fvi_free(net);
}

/* Rounds a float count up to whole 64-byte lines. */
static size_t round16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

fv_status fvi_resnet_load_mem(const void *data, size_t len, fvi_resnet **out, char *err,
                              size_t errlen) {
    if (!out || (!data && len))
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "resnet: NULL argument");
    *out = NULL;
    fvi_nn_init();
    spec_list *l = fvi_malloc(sizeof *l);
    if (!l) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "resnet: out of memory");
    build_specs(l);
    fvi_resnet *net = fvi_calloc(1, sizeof *net);
    if (!net) {
        fvi_free(l);
        return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "resnet: out of memory");
    }
    if (pthread_mutex_init(&net->mu, NULL) != 0) {
        fvi_free(net);
        fvi_free(l);
        return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "resnet: cannot create a mutex");
    }
    parse_ctx pc;
    memset(&pc, 0, sizeof pc);
    pc.net = net;
    /* shape every conv from the architecture and lay out one weight block */
    size_t total = 0;
    int ch = 3;
    for (int i = 0; i < l->n; i++) {
        const layer_spec *s = &l->s[i];
        if (s->kind != L_CON) continue;
        fvi_conv *cv = &net->conv[s->conv];
        pc.in_c[s->conv] = ch;
        cv->out_c = s->nf;
        cv->in_c = ch;
        cv->kh = cv->kw = s->k;
        cv->stride_y = cv->stride_x = s->stride;
        cv->pad_y = cv->pad_x = s->stride == 1 ? s->k / 2 : 0;
        total += round16((size_t)s->nf * ch * s->k * s->k) + round16((size_t)s->nf);
        ch = s->nf;
    }
    total += round16((size_t)FEAT_C * FV_EMBED_DIM);
    net->weights = fvi_malloc_aligned(total * sizeof(float));
    fv_status st = FV_OK;
    if (!net->weights) {
        st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "resnet: out of memory for weights");
        goto fail;
    }
    float *p = net->weights;
    for (int c = 0; c < N_CONVS; c++) {
        fvi_conv *cv = &net->conv[c];
        cv->weights = p;
        p += round16((size_t)cv->out_c * cv->in_c * cv->kh * cv->kw);
        cv->bias = p;
        p += round16((size_t)cv->out_c);
    }
    net->fc = p;
    fvi_dser_init(&pc.d, data, len);
    if (parse_model(&pc, l)) {
        if (strcmp(pc.d.what, "out of memory") == 0)
            st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "resnet: out of memory");
        else
            st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "resnet model: %s", pc.d.what);
        goto fail;
    }
    fvi_free(l);
    *out = net;
    return FV_OK;
fail:
    fvi_free(l);
    fvi_resnet_destroy(net);
    return st;
}

/* fvi_parse_fn over fvi_resnet_load_mem. */
static fv_status parse_resnet(const void *data, size_t len, void *out, char *err, size_t errlen) {
    return fvi_resnet_load_mem(data, len, out, err, errlen);
}

fv_status fvi_resnet_load(const char *path, fvi_resnet **out, char *err, size_t errlen) {
    if (!path || !out)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "resnet: NULL argument");
    *out = NULL;
    return fvi_load_model_file(path, MAX_MODEL_BYTES, "ResNet model", parse_resnet, out, err,
                               errlen);
}

/* ------------------------------------------------------------ inference */

/* Every buffer of one forward pass of a batch of n chips. */
typedef struct {
    fvi_tensor x;     /* input, then ping-pong activations */
    float *act[2];    /* block inputs/outputs */
    float *t, *u, *s; /* block temporaries: conv a, conv b, pooled shortcut */
    float *scratch;   /* conv im2col */
    float *feat;      /* n x FEAT_C */
} fwd_bufs;

/* Output side of a conv for input side `in`. */
static int out_dim(const fvi_conv *cv, int in) {
    return fvi_conv_out_h(cv, in);
}

/* Takes every buffer for a batch of n from the arena (a measure pass when
 * the arena is measuring).  Returns 0, or -1 when the arena is too small. */
static int plan_buffers(const fvi_resnet *net, fvi_arena *a, int n, int threads, fwd_bufs *b) {
    size_t act = 0, tmp = 0, scr = 0;
    int side = CHIP;
    const fvi_conv *stem = &net->conv[0];
    scr = fvi_conv_cnhw_scratch(stem, n, side, side, threads);
    side = out_dim(stem, side);
    act = (size_t)n * STEM_C * side * side; /* stem output, pooled into act[1] */
    side = fvi_pool_out_dim(side, 3, 2, 0);
    int ch = STEM_C;
    for (int bi = 0; bi < N_BLOCKS; bi++) {
        const fvi_conv *ca = &net->conv[1 + 2 * bi], *cb = &net->conv[2 + 2 * bi];
        size_t s1 = fvi_conv_cnhw_scratch(ca, n, side, side, threads);
        int sa = out_dim(ca, side);
        size_t s2 = fvi_conv_cnhw_scratch(cb, n, sa, sa, threads);
        int sb = out_dim(cb, sa);
        if (s1 > scr) scr = s1;
        if (s2 > scr) scr = s2;
        size_t tsz = (size_t)n * ca->out_c * sa * sa;
        if (tsz > tmp) tmp = tsz;
        int so = sb;
        if (BLOCKS[bi].down) {
            int sp = fvi_pool_out_dim(side, 2, 2, 0);
            size_t psz = (size_t)n * ch * sp * sp;
            if (psz > tmp) tmp = psz;
            if (sp > so) so = sp;
        }
        size_t osz = (size_t)n * cb->out_c * so * so;
        if (osz > act) act = osz;
        ch = cb->out_c;
        side = so;
    }
    if (fvi_arena_tensor(a, &b->x, n, 3, CHIP, CHIP)) return -1;
    b->act[0] = fvi_arena_alloc(a, act);
    b->act[1] = fvi_arena_alloc(a, act);
    b->t = fvi_arena_alloc(a, tmp);
    b->u = fvi_arena_alloc(a, tmp);
    b->s = fvi_arena_alloc(a, tmp);
    b->scratch = fvi_arena_alloc(a, scr ? scr : 1);
    b->feat = fvi_arena_alloc(a, (size_t)n * FEAT_C);
    if (a->measuring) return 0;
    return (b->act[0] && b->act[1] && b->t && b->u && b->s && b->scratch && b->feat) ? 0 : -1;
}

static fvi_tensor shaped(float *d, int n, int c, int h, int w) {
    fvi_tensor t = {n, c, h, w, d};
    return t;
}

/* Runs conv ci; with a profile (bench_stages), charges its time, work and
 * shape to slot ci.  Without one the only cost is this test. */
static void run_conv(fvi_embed_profile *prof, int ci, const fvi_conv *cv, const fvi_tensor *in,
                     fvi_tensor *out, int relu, float *scratch, fvi_workers *pool) {
    if (!prof) {
        fvi_conv_forward_cnhw(cv, in, out, relu, scratch, pool);
        return;
    }
    double t0 = fvi_now_ms();
    fvi_conv_forward_cnhw(cv, in, out, relu, scratch, pool);
    prof->conv_ms[ci] += fvi_now_ms() - t0;
    prof->conv_flop[ci] += 2.0 * out->n * out->h * out->w * cv->out_c * cv->in_c * cv->kh * cv->kw;
    const int shape[6] = {cv->in_c, cv->out_c, cv->kh, cv->stride_y, out->h, out->n};
    memcpy(prof->conv_shape[ci], shape, sizeof shape);
}

/* Runs n chips through the network into out (n x 128); prof: see
 * fvi_resnet_embed_profiled. */
static void forward(const fvi_resnet *net, const unsigned char *chips, int n, fwd_bufs *b,
                    fvi_workers *pool, fvi_embed_profile *prof, float *out) {
    const double prof_t0 = prof ? fvi_now_ms() : 0;
    /* input_rgb_image_sized: (pixel - mean) / 256 into CNHW planes */
    const size_t plane = (size_t)CHIP * CHIP;
    for (int s = 0; s < n; s++) {
        const unsigned char *px = chips + (size_t)s * plane * 3;
        for (int c = 0; c < 3; c++) {
            float *dst = b->x.d + ((size_t)c * n + s) * plane;
            const float m = net->mean[c];
            for (size_t i = 0; i < plane; i++) dst[i] = ((float)px[3 * i + c] - m) / 256.0f;
        }
    }
    const fvi_conv *stem = &net->conv[0];
    int side = out_dim(stem, CHIP);
    fvi_tensor st = shaped(b->act[0], n, STEM_C, side, side);
    run_conv(prof, 0, stem, &b->x, &st, 1, b->scratch, pool); /* con, affine, relu */
    side = fvi_pool_out_dim(side, 3, 2, 0);
    fvi_tensor x = shaped(b->act[1], n, STEM_C, side, side);
    fvi_max_pool(&st, &x, 3, 3, 2, 2, 0, 0);
    int cur = 1;
    for (int bi = 0; bi < N_BLOCKS; bi++) {
        const fvi_conv *ca = &net->conv[1 + 2 * bi], *cb = &net->conv[2 + 2 * bi];
        int sa = out_dim(ca, x.h);
        fvi_tensor t = shaped(b->t, n, ca->out_c, sa, sa);
        run_conv(prof, 1 + 2 * bi, ca, &x, &t, 1, b->scratch, pool);
        int sb = out_dim(cb, sa);
        fvi_tensor u = shaped(b->u, n, cb->out_c, sb, sb);
        run_conv(prof, 2 + 2 * bi, cb, &t, &u, 0, b->scratch, pool);
        fvi_tensor sc = x;
        if (BLOCKS[bi].down) {
            int sp = fvi_pool_out_dim(x.h, 2, 2, 0);
            sc = shaped(b->s, n, x.c, sp, sp);
            fvi_avg_pool(&x, &sc, 2, 2, 2, 2, 0, 0);
        }
        int so = sb > sc.h ? sb : sc.h;
        int co = u.c > sc.c ? u.c : sc.c;
        fvi_tensor y = shaped(b->act[cur ^ 1], n, co, so, so);
        fvi_add_cnhw(&u, &sc, &y, 1);
        cur ^= 1;
        x = y;
    }
    fvi_avg_pool_everything_cnhw(&x, b->feat);
    fvi_tensor feat = shaped(b->feat, n, FEAT_C, 1, 1);
    fvi_tensor o = shaped(out, n, FV_EMBED_DIM, 1, 1);
    fvi_fc_no_bias(&feat, net->fc, FV_EMBED_DIM, &o);
    if (prof) {
        double conv_ms = 0;
        for (int i = 0; i < N_CONVS; i++) conv_ms += prof->conv_ms[i];
        prof->forward_ms += fvi_now_ms() - prof_t0;
        prof->other_ms = prof->forward_ms - conv_ms;
        prof->passes++;
    }
}

/* Takes an arena from the free list (or a new one). */
static fvi_arena *arena_get(fvi_resnet *net) {
    fvi_arena *a = NULL;
    pthread_mutex_lock(&net->mu);
    if (net->nspare > 0) a = net->spare[--net->nspare];
    pthread_mutex_unlock(&net->mu);
    if (!a) a = fvi_calloc(1, sizeof *a);
    return a;
}

/* Returns an arena to the free list, or frees it when the list is full. */
static void arena_put(fvi_resnet *net, fvi_arena *a) {
    if (!a) return;
    pthread_mutex_lock(&net->mu);
    if (net->nspare < SPARE_ARENAS) {
        net->spare[net->nspare++] = a;
        a = NULL;
    }
    pthread_mutex_unlock(&net->mu);
    if (a) {
        fvi_arena_free(a);
        fvi_free(a);
    }
}

fv_status fvi_resnet_embed(const fvi_resnet *net, const unsigned char *chips, size_t n,
                           fvi_workers *pool, float *out, char *err, size_t errlen) {
    return fvi_resnet_embed_profiled(net, chips, n, pool, NULL, out, err, errlen);
}

fv_status fvi_resnet_embed_profiled(const fvi_resnet *cnet, const unsigned char *chips, size_t n,
                                    fvi_workers *pool, fvi_embed_profile *prof, float *out,
                                    char *err, size_t errlen) {
    if (!cnet || (n && (!chips || !out)))
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "embed: NULL argument");
    if (n == 0) return FV_OK;
    /* The network's weights are never written; only the free list of
     * arenas, under its mutex, changes. */
    fvi_resnet *net = (fvi_resnet *)cnet;
    const int threads = fvi_workers_size(pool);
    const int batch = n < BATCH_MAX ? (int)n : BATCH_MAX;
    fvi_arena measure;
    fwd_bufs bufs;
    fvi_arena_measure(&measure);
    plan_buffers(net, &measure, batch, threads, &bufs);
    fvi_arena *a = arena_get(net);
    if (!a) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "embed: out of memory");
    if (a->cap < measure.peak) {
        fvi_arena_free(a);
        if (fvi_arena_reserve(a, measure.peak)) {
            fvi_free(a);
            return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "embed: out of memory for %zu floats",
                              measure.peak);
        }
    }
    for (size_t done = 0; done < n;) {
        int nb = (n - done) < (size_t)batch ? (int)(n - done) : batch;
        fvi_arena_reset(a);
        if (plan_buffers(net, a, nb, threads, &bufs)) {
            arena_put(net, a);
            return fvi_seterr(err, errlen, FV_E_INTERNAL, "embed: arena smaller than planned");
        }
        forward(net, chips + done * (size_t)CHIP * CHIP * 3, nb, &bufs, pool, prof,
                out + done * FV_EMBED_DIM);
        done += (size_t)nb;
    }
    arena_put(net, a);
    return FV_OK;
}

/* The native cached WaveNet step: whole chunks of autoregressive samples, for all notes of a batch.
 *
 * Built by the package build (setup.py) into timbre/generation/_fastgen*.so and loaded with
 * ctypes by timbre/generation/native.py, which mirrors the structures below field by field and
 * checks their sizes against timbre_fastgen_sizes() when it loads the library. Plain C99 with
 * optional OpenMP; no Python or torch headers.
 *
 * Matrices are packed in panels of TIMBRE_PANEL output columns, [panels][inputs][TIMBRE_PANEL],
 * so every matrix-vector product streams its weights sequentially and keeps
 * TIMBRE_PANEL x BATCH_BLOCK accumulators in registers. Output widths are padded to whole panels
 * (the padding weights are zero): "padded 2R" below is twice the residual width rounded up to a panel.
 * Packed matrices hold float32, bfloat16 (the upper half of a float32, in pairs of inputs: see
 * panels_multiply_bfloat16) or int8 with a float32 scale per output column (panels_multiply_int8):
 * a half or a quarter of the bytes to stream per sample, which bounds batch-1 decoding at NSynth
 * size. Everything else (inputs, biases, accumulation) is float32 in every format, except that
 * int8 products of single notes quantize their inputs to 14 bits (see panels_multiply_int8).
 *
 * The hot loops are compiled once per CPU level and picked when the library loads (GCC's
 * target_clones), so one wheel runs on any x86-64 and uses AVX-512 or AVX2+FMA where present.
 */
#include "cpu_dispatch.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define TIMBRE_PANEL 64
#define BATCH_BLOCK 4
/* Bumped whenever a structure or the signature of timbre_fastgen_run changes. */
#define TIMBRE_FASTGEN_ABI 6

enum { TIMBRE_FLOAT32 = 0, TIMBRE_BFLOAT16 = 1, TIMBRE_INT8 = 2 }; /* weight_format of timbre_decoder */

/* Status codes of timbre_fastgen_run (native.py turns them into exceptions). */
enum {
    TIMBRE_OK = 0,
    TIMBRE_NO_MEMORY = 1,     /* scratch memory could not be allocated */
    TIMBRE_BAD_GEOMETRY = 2,  /* a size, the batch, a dilation or the thread count is out of range */
    TIMBRE_MISSING_BUFFER = 3 /* a weight or state pointer is NULL */
};

/* One gated layer, packed. */
typedef struct {
    int64_t dilation;
    /* dilated conv: kernel*residual inputs (tap-major: tap j reads time t - (kernel-1-j)*dilation)
     * -> filter half then gate half side by side (R wide each, padded 2R in all: at residual 32 one
     * panel, not two half-empty ones); the gate half pre-halved (see gate_rows) */
    const void *dilated;
    /* the pitch clock's 1x1 (timbre.models.wavenet.pitch_source): 2H inputs -> padded 2R laid out
     * like dilated; NULL without a clock */
    const void *source;
    /* the halved skip and residual 1x1s side by side: residual -> padded skip + padded R */
    const void *skip_residual;
    /* their bias, padded skip + padded R (the skip part is zero: skip biases are summed in skip_bias) */
    const float *skip_residual_bias;
} timbre_layer;

/* The decoder, packed; its sizes decide every padded width. */
typedef struct {
    int64_t residual, skip, kernel, layers, classes;
    int64_t weight_format;         /* of every packed matrix: TIMBRE_FLOAT32, TIMBRE_BFLOAT16 or TIMBRE_INT8 */
    const float *start_weight;     /* [kernel][residual], tap j multiplies the input at t - (kernel-1-j) */
    const float *start_bias;       /* [residual] */
    const void *skip_start;        /* packed: residual -> padded skip */
    const float *skip_bias;        /* [padded skip]: skip_start's bias plus every layer's skip bias */
    const void *hidden;            /* packed: skip -> padded skip */
    const void *logits;            /* packed: skip -> padded classes */
    const float *logits_bias;      /* [padded classes] */
    const timbre_layer *layer;     /* [layers] */
    int64_t source_harmonics; /* the pitch clock's harmonics H (each layer's source), 0 for none */
} timbre_decoder;

/* The state of one batch of notes, all zero at time 0 (the causal convolutions' zero padding). */
typedef struct {
    int64_t batch;
    float *input_ring;         /* [kernel][batch]: past network inputs */
    float *const *layer_ring;  /* [layers] rings of [(kernel-1)*dilation + 1][batch][residual] */
    float *inputs;             /* [batch]: the network input of the next step */
    /* the current conditioning frame: each layer's conditioning plus dilated bias
     * [layers][batch][padded 2R], and the output conditioning plus hidden bias [batch][padded skip] */
    const float *layer_bias;
    const float *output_bias;
    const double *source_cycles; /* [batch]: the pitch clock's cycles per sample (read only with a clock) */
} timbre_state;

static int padded(int64_t size) { return (int)((size + TIMBRE_PANEL - 1) / TIMBRE_PANEL * TIMBRE_PANEL); }

/* Y[b][p*PANEL + j] += sum over segments s, inputs i of X_s[b][i] * W[s*seg_len + i][p*PANEL + j]
 * for panels p in [p0, p1), W being the packed matrix. A segment is one tap of a dilated
 * convolution (kernel segments of seg_len inputs, each read from its own ring-buffer slot); plain
 * matrices have one segment. One function per weight format, each picked per CPU level. */
CPU_DISPATCH
static void panels_multiply_float32(const void *restrict packed, int segments, int seg_len, int p0, int p1,
                                    const float *const *inputs, int ldx, int batch, float *restrict out, int ldy)
{
    /* float32 panels: [panels][inputs][TIMBRE_PANEL] */
    const float *restrict weights = packed;
    const int n_in = segments * seg_len;
    for (int p = p0; p < p1; ++p) {
        const size_t panel = (size_t)p * n_in * TIMBRE_PANEL; /* index of the panel's first weight */
        int b = 0;
        for (; b + BATCH_BLOCK <= batch; b += BATCH_BLOCK) {
            float acc[BATCH_BLOCK][TIMBRE_PANEL];
            for (int r = 0; r < BATCH_BLOCK; ++r)
                memcpy(acc[r], out + (size_t)(b + r) * ldy + p * TIMBRE_PANEL, sizeof(acc[r]));
            for (int s = 0; s < segments; ++s) {
                const float *restrict x = inputs[s] + (size_t)b * ldx;
                size_t w = panel + (size_t)s * seg_len * TIMBRE_PANEL;
                for (int i = 0; i < seg_len; ++i, w += TIMBRE_PANEL) {
                    const float *restrict row = weights + w;
                    for (int r = 0; r < BATCH_BLOCK; ++r) {
                        const float xi = x[r * ldx + i];
                        for (int j = 0; j < TIMBRE_PANEL; ++j) acc[r][j] += xi * row[j];
                    }
                }
            }
            for (int r = 0; r < BATCH_BLOCK; ++r)
                memcpy(out + (size_t)(b + r) * ldy + p * TIMBRE_PANEL, acc[r], sizeof(acc[r]));
        }
        for (; b < batch; ++b) {
            /* Two accumulator sets (even and odd inputs) halve the FMA dependency chain. */
            float even[TIMBRE_PANEL], odd[TIMBRE_PANEL];
            memcpy(even, out + (size_t)b * ldy + p * TIMBRE_PANEL, sizeof(even));
            memset(odd, 0, sizeof(odd));
            for (int s = 0; s < segments; ++s) {
                const float *restrict x = inputs[s] + (size_t)b * ldx;
                size_t w = panel + (size_t)s * seg_len * TIMBRE_PANEL;
                int i = 0;
                for (; i + 2 <= seg_len; i += 2, w += 2 * TIMBRE_PANEL) {
                    const float x0 = x[i], x1 = x[i + 1];
                    for (int j = 0; j < TIMBRE_PANEL; ++j) {
                        even[j] += x0 * weights[w + j];
                        odd[j] += x1 * weights[w + TIMBRE_PANEL + j];
                    }
                }
                for (; i < seg_len; ++i, w += TIMBRE_PANEL)
                    for (int j = 0; j < TIMBRE_PANEL; ++j) even[j] += x[i] * weights[w + j];
            }
            for (int j = 0; j < TIMBRE_PANEL; ++j) out[(size_t)b * ldy + p * TIMBRE_PANEL + j] = even[j] + odd[j];
        }
    }
}

/* A bfloat16 pair: one 32-bit word holding a column's weights of inputs 2k (low half) and 2k+1
 * (high half). A bfloat16 is the upper half of a float32, so each widens with one shift or mask. */
static inline float pair_low(uint32_t word)
{
    const uint32_t bits = word << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline float pair_high(uint32_t word)
{
    const uint32_t bits = word & 0xFFFF0000u;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

CPU_DISPATCH
static void panels_multiply_bfloat16(const void *restrict packed, int segments, int seg_len, int p0, int p1,
                                     const float *const *inputs, int ldx, int batch, float *restrict out, int ldy)
{
    /* bfloat16 pairs: [panels][segments][pairs][TIMBRE_PANEL] words, pairs = ceil(seg_len / 2); an odd
     * segment's last pair has a zero high half. One accumulator per column, two FMAs per pair. */
    const uint32_t *restrict words = packed;
    const int pairs = (seg_len + 1) / 2, whole = seg_len / 2;
    for (int p = p0; p < p1; ++p) {
        const size_t panel = (size_t)p * segments * pairs * TIMBRE_PANEL;
        int b = 0;
        for (; b + BATCH_BLOCK <= batch; b += BATCH_BLOCK) {
            float acc[BATCH_BLOCK][TIMBRE_PANEL];
            for (int r = 0; r < BATCH_BLOCK; ++r)
                memcpy(acc[r], out + (size_t)(b + r) * ldy + p * TIMBRE_PANEL, sizeof(acc[r]));
            for (int s = 0; s < segments; ++s) {
                const float *restrict x = inputs[s] + (size_t)b * ldx;
                const uint32_t *restrict w = words + panel + (size_t)s * pairs * TIMBRE_PANEL;
                for (int k = 0; k < pairs; ++k, w += TIMBRE_PANEL) {
                    /* widened once for the whole block of notes */
                    float low[TIMBRE_PANEL], high[TIMBRE_PANEL];
                    for (int j = 0; j < TIMBRE_PANEL; ++j) {
                        low[j] = pair_low(w[j]);
                        high[j] = pair_high(w[j]);
                    }
                    for (int r = 0; r < BATCH_BLOCK; ++r) {
                        const float x0 = x[r * ldx + 2 * k], x1 = k < whole ? x[r * ldx + 2 * k + 1] : 0.0f;
                        for (int j = 0; j < TIMBRE_PANEL; ++j) {
                            acc[r][j] += x0 * low[j];
                            acc[r][j] += x1 * high[j];
                        }
                    }
                }
            }
            for (int r = 0; r < BATCH_BLOCK; ++r)
                memcpy(out + (size_t)(b + r) * ldy + p * TIMBRE_PANEL, acc[r], sizeof(acc[r]));
        }
        for (; b < batch; ++b) {
            float acc[TIMBRE_PANEL];
            memcpy(acc, out + (size_t)b * ldy + p * TIMBRE_PANEL, sizeof(acc));
            for (int s = 0; s < segments; ++s) {
                const float *restrict x = inputs[s] + (size_t)b * ldx;
                const uint32_t *restrict w = words + panel + (size_t)s * pairs * TIMBRE_PANEL;
                for (int k = 0; k < pairs; ++k, w += TIMBRE_PANEL) {
                    const float x0 = x[2 * k], x1 = k < whole ? x[2 * k + 1] : 0.0f;
                    for (int j = 0; j < TIMBRE_PANEL; ++j) {
                        acc[j] += x0 * pair_low(w[j]);
                        acc[j] += x1 * pair_high(w[j]);
                    }
                }
            }
            memcpy(out + (size_t)b * ldy + p * TIMBRE_PANEL, acc, sizeof(acc));
        }
    }
}

/* int8 panels: [panels][TIMBRE_PANEL float32 column scales, then segments][pairs][TIMBRE_PANEL][2] int8:
 * inputs 2k and 2k+1 of a segment side by side for each column (an odd segment's last pair ends
 * with a zero), as bfloat16 pairs are. Each column's sum runs over the integer weights and is
 * scaled once at the end.
 *
 * One note (batch 1, where decoding is bound by streaming the weights) also has its inputs
 * quantized, per segment, to 14-bit integers (|q| <= 8191, scale max|x| / 8191: a relative error
 * of 6e-5 of the largest input, far below the weights' own): each pair of products then is one
 * integer multiply-add (AVX2's vpmaddwd) into exact int32 sums, flushed to float32 every
 * INT8_CHUNK_PAIRS pairs before they could overflow (2 * 127 * 8191 * 1024 < 2^31). Blocks of
 * notes widen each weight pair to float32 once for the whole block instead. */
enum { INT8_ACTIVATION_LEVELS = 8191, INT8_CHUNK_PAIRS = 1024, INT8_MAX_QUANTIZED_INPUTS = 8192 };

/* One note's inputs of every segment as int16 [segments][2 * pairs] (odd segments end with a
 * zero) and their scales [segments]. */
static void quantize_note_inputs(const float *const *inputs, size_t offset, int segments, int seg_len, int pairs,
                                 int16_t *restrict quantized, float *restrict scales)
{
    for (int s = 0; s < segments; ++s) {
        const float *restrict x = inputs[s] + offset;
        int16_t *restrict q = quantized + (size_t)s * 2 * pairs;
        float largest = 0.0f;
        for (int i = 0; i < seg_len; ++i) largest = fmaxf(largest, fabsf(x[i]));
        const float inverse = largest > 0.0f ? (float)INT8_ACTIVATION_LEVELS / largest : 0.0f;
        scales[s] = largest / (float)INT8_ACTIVATION_LEVELS;
        for (int i = 0; i < seg_len; ++i) {
            const float level = fminf(fmaxf(nearbyintf(x[i] * inverse), -INT8_ACTIVATION_LEVELS), INT8_ACTIVATION_LEVELS);
            q[i] = (int16_t)level;
        }
        if (seg_len % 2) q[seg_len] = 0;
    }
}

/* One note's panel from its quantized inputs; adds the scaled sums to y [TIMBRE_PANEL]. */
static void int8_panel_one_note(const int8_t *restrict weights, int segments, int pairs,
                                const int16_t *restrict quantized, const float *restrict input_scales,
                                const float *restrict scale, float *restrict y)
{
    float sums[TIMBRE_PANEL] = {0.0f};
    for (int s = 0; s < segments; ++s) {
        const int16_t *restrict q = quantized + (size_t)s * 2 * pairs;
        const int8_t *restrict w = weights + (size_t)s * pairs * 2 * TIMBRE_PANEL;
        for (int k0 = 0; k0 < pairs; k0 += INT8_CHUNK_PAIRS) {
            const int k1 = k0 + INT8_CHUNK_PAIRS < pairs ? k0 + INT8_CHUNK_PAIRS : pairs;
            int32_t acc[TIMBRE_PANEL] = {0};
            for (int k = k0; k < k1; ++k) {
                const int32_t x0 = q[2 * k], x1 = q[2 * k + 1];
                const int8_t *restrict pair = w + (size_t)k * 2 * TIMBRE_PANEL;
                for (int j = 0; j < TIMBRE_PANEL; ++j) acc[j] += x0 * pair[2 * j] + x1 * pair[2 * j + 1];
            }
            for (int j = 0; j < TIMBRE_PANEL; ++j) sums[j] += (float)acc[j] * input_scales[s];
        }
    }
    for (int j = 0; j < TIMBRE_PANEL; ++j) y[j] += sums[j] * scale[j];
}

#if defined(__x86_64__) && defined(__GNUC__) && TIMBRE_PANEL == 64 && !defined(TIMBRE_NO_INTRINSICS)
#define TIMBRE_AVX2_INT8
#include <immintrin.h>

/* int8_panel_one_note with AVX2 intrinsics (the same exact integer sums), used where the CPU has
 * AVX2 (checked at run time): GCC does not turn the plain loop into vpmaddwd, and target_clones
 * cannot host intrinsics, whose baseline clone would not compile. */
__attribute__((target("avx2,fma"))) static void int8_panel_one_note_avx2(const int8_t *restrict weights,
                                                                          int segments, int pairs,
                                                                          const int16_t *restrict quantized,
                                                                          const float *restrict input_scales,
                                                                          const float *restrict scale,
                                                                          float *restrict y)
{
    __m256 sums[8];
    for (int v = 0; v < 8; ++v) sums[v] = _mm256_setzero_ps();
    for (int s = 0; s < segments; ++s) {
        const int16_t *restrict q = quantized + (size_t)s * 2 * pairs;
        const int8_t *restrict w = weights + (size_t)s * pairs * 2 * TIMBRE_PANEL;
        const __m256 input_scale = _mm256_set1_ps(input_scales[s]);
        for (int k0 = 0; k0 < pairs; k0 += INT8_CHUNK_PAIRS) {
            const int k1 = k0 + INT8_CHUNK_PAIRS < pairs ? k0 + INT8_CHUNK_PAIRS : pairs;
            /* Eight named accumulators, not an array: GCC stores an accumulator array back every iteration. */
            __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            for (int k = k0; k < k1; ++k) {
                int32_t both;
                memcpy(&both, q + 2 * k, sizeof both); /* x[2k] in the low half, x[2k+1] in the high */
                const __m256i x = _mm256_set1_epi32(both);
                const int8_t *restrict pair = w + (size_t)k * 2 * TIMBRE_PANEL;
#define INT8_PAIR(acc, v)                                                                                       \
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(pair + 16 * (v)))), x))
                INT8_PAIR(a0, 0);
                INT8_PAIR(a1, 1);
                INT8_PAIR(a2, 2);
                INT8_PAIR(a3, 3);
                INT8_PAIR(a4, 4);
                INT8_PAIR(a5, 5);
                INT8_PAIR(a6, 6);
                INT8_PAIR(a7, 7);
#undef INT8_PAIR
            }
            const __m256i chunk[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
            for (int v = 0; v < 8; ++v) sums[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunk[v]), input_scale, sums[v]);
        }
    }
    for (int v = 0; v < 8; ++v)
        _mm256_storeu_ps(y + 8 * v, _mm256_fmadd_ps(sums[v], _mm256_loadu_ps(scale + 8 * v), _mm256_loadu_ps(y + 8 * v)));
}

static int cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

CPU_DISPATCH
static void panels_multiply_int8(const void *restrict packed, int segments, int seg_len, int p0, int p1,
                                 const float *const *inputs, int ldx, int batch, float *restrict out, int ldy)
{
    const unsigned char *restrict bytes = packed;
    const int pairs = (seg_len + 1) / 2, whole = seg_len / 2;
    const size_t panel_bytes = TIMBRE_PANEL * sizeof(float) + (size_t)segments * pairs * 2 * TIMBRE_PANEL;
    const int blocks = batch / BATCH_BLOCK * BATCH_BLOCK; /* notes in whole blocks; the rest one by one */
    for (int p = p0; p < p1; ++p) {
        const unsigned char *restrict panel = bytes + (size_t)p * panel_bytes;
        float scale[TIMBRE_PANEL];
        memcpy(scale, panel, sizeof(scale));
        const int8_t *restrict weights = (const int8_t *)(panel + sizeof(scale));
        for (int b = 0; b < blocks; b += BATCH_BLOCK) {
            float acc[BATCH_BLOCK][TIMBRE_PANEL] = {{0.0f}};
            for (int s = 0; s < segments; ++s) {
                const float *restrict x = inputs[s] + (size_t)b * ldx;
                const int8_t *restrict w = weights + (size_t)s * pairs * 2 * TIMBRE_PANEL;
                for (int k = 0; k < pairs; ++k, w += 2 * TIMBRE_PANEL) {
                    float low[TIMBRE_PANEL], high[TIMBRE_PANEL]; /* widened once for the whole block */
                    for (int j = 0; j < TIMBRE_PANEL; ++j) {
                        low[j] = (float)w[2 * j];
                        high[j] = (float)w[2 * j + 1];
                    }
                    for (int r = 0; r < BATCH_BLOCK; ++r) {
                        const float x0 = x[r * ldx + 2 * k], x1 = k < whole ? x[r * ldx + 2 * k + 1] : 0.0f;
                        for (int j = 0; j < TIMBRE_PANEL; ++j) {
                            acc[r][j] += x0 * low[j];
                            acc[r][j] += x1 * high[j];
                        }
                    }
                }
            }
            for (int r = 0; r < BATCH_BLOCK; ++r) {
                float *restrict y = out + (size_t)(b + r) * ldy + p * TIMBRE_PANEL;
                for (int j = 0; j < TIMBRE_PANEL; ++j) y[j] += acc[r][j] * scale[j];
            }
        }
    }
    if (blocks == batch) return;
    /* The remaining notes, each with its inputs quantized once for all panels. */
    const int n_quantized = segments * 2 * pairs;
    int16_t quantized[INT8_MAX_QUANTIZED_INPUTS];
    float input_scales[64];
    const int fits = n_quantized <= INT8_MAX_QUANTIZED_INPUTS && segments <= 64;
#ifdef TIMBRE_AVX2_INT8
    const int avx2 = cpu_has_avx2();
#endif
    for (int b = blocks; b < batch; ++b) {
        if (fits) quantize_note_inputs(inputs, (size_t)b * ldx, segments, seg_len, pairs, quantized, input_scales);
        for (int p = p0; p < p1; ++p) {
            const unsigned char *restrict panel = bytes + (size_t)p * panel_bytes;
            float scale[TIMBRE_PANEL];
            memcpy(scale, panel, sizeof(scale));
            const int8_t *restrict weights = (const int8_t *)(panel + sizeof(scale));
            float *restrict y = out + (size_t)b * ldy + p * TIMBRE_PANEL;
            if (!fits) { /* inputs too long for the stack buffer: float32 inputs, as in a block */
                float acc[TIMBRE_PANEL] = {0.0f};
                for (int s = 0; s < segments; ++s) {
                    const float *restrict x = inputs[s] + (size_t)b * ldx;
                    const int8_t *restrict w = weights + (size_t)s * pairs * 2 * TIMBRE_PANEL;
                    for (int k = 0; k < pairs; ++k, w += 2 * TIMBRE_PANEL) {
                        const float x0 = x[2 * k], x1 = k < whole ? x[2 * k + 1] : 0.0f;
                        for (int j = 0; j < TIMBRE_PANEL; ++j) acc[j] += x0 * (float)w[2 * j] + x1 * (float)w[2 * j + 1];
                    }
                }
                for (int j = 0; j < TIMBRE_PANEL; ++j) y[j] += acc[j] * scale[j];
                continue;
            }
#ifdef TIMBRE_AVX2_INT8
            if (avx2) {
                int8_panel_one_note_avx2(weights, segments, pairs, quantized, input_scales, scale, y);
                continue;
            }
#endif
            int8_panel_one_note(weights, segments, pairs, quantized, input_scales, scale, y);
        }
    }
}

typedef void (*panels_multiply_fn)(const void *restrict, int, int, int, int, const float *const *, int, int,
                                   float *restrict, int);

/* tanh as Eigen's rational approximation (a few ulp in float32): unlike libm's tanhf it
 * vectorizes, and the step evaluates 2 * residual of them per layer and note. */
static inline float rational_tanh(float x)
{
    const float bound = 7.90531110763549805f;
    x = x > bound ? bound : (x < -bound ? -bound : x);
    const float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return x * p / q;
}

/* 2 * tanh(filter) * sigmoid(gate) as tanh(f) * (1 + tanh(g')) for rows [b0, b1): the gate half
 * arrives pre-halved (g' = gate / 2, since sigmoid(x) = (1 + tanh(x/2)) / 2) and the factor 2 is
 * undone by halved skip and residual weights, both exact in floating point. */
CPU_DISPATCH
static void gate_rows(const float *restrict pre, int ld_pre, int gate_offset, int channels, int b0, int b1,
                      float *restrict gated)
{
    for (int b = b0; b < b1; ++b) {
        const float *restrict f = pre + (size_t)b * ld_pre;
        const float *restrict g = f + gate_offset;
        float *restrict o = gated + (size_t)b * channels;
        for (int c = 0; c < channels; ++c) o[c] = rational_tanh(f[c]) * (1.0f + rational_tanh(g[c]));
    }
}

static void relu_rows(const float *restrict in, int ld_in, int channels, int batch, float *restrict out)
{
    for (int b = 0; b < batch; ++b)
        for (int c = 0; c < channels; ++c) {
            const float v = in[(size_t)b * ld_in + c];
            out[(size_t)b * channels + c] = v > 0.0f ? v : 0.0f;
        }
}

static void fill_rows(float *restrict out, int ld, const float *restrict row, int batch, int width)
{
    for (int b = 0; b < batch; ++b) memcpy(out + (size_t)b * ld, row, (size_t)width * sizeof(float));
}

/* The pitch clock of rows [0, rows) at time t into clock [rows][2H]: sin then cos of harmonics
 * 1..H of phase frac(cycles * t), zero at or above Nyquist; as pitch_source computes it (float64
 * phase, rounded to float32). Harmonic k+1 comes from k by angle addition: one sin and cos per
 * note instead of H of each (the recurrence's float64 error stays far below float32's rounding). */
static void clock_rows(const double *cycles, int rows, int harmonics, int64_t t, float *restrict clock)
{
    for (int b = 0; b < rows; ++b) {
        double phase = cycles[b] * (double)t;
        phase -= floor(phase);
        const double s1 = sin(6.283185307179586 * phase), c1 = cos(6.283185307179586 * phase);
        double sk = s1, ck = c1;
        for (int k = 1; k <= harmonics; ++k) {
            const double audible = (double)k * cycles[b] < 0.5 ? 1.0 : 0.0;
            clock[(size_t)b * 2 * harmonics + k - 1] = (float)(sk * audible);
            clock[(size_t)b * 2 * harmonics + harmonics + k - 1] = (float)(ck * audible);
            const double next_sin = sk * c1 + ck * s1;
            ck = ck * c1 - sk * s1;
            sk = next_sin;
        }
    }
}

static inline int64_t ring_slot(int64_t time, int64_t length) { return ((time % length) + length) % length; }

static inline void thread_share(int items, int thread, int threads, int *first, int *last)
{
    *first = (int)((int64_t)items * thread / threads);
    *last = (int)((int64_t)items * (thread + 1) / threads);
}

/* Pick a class from logits: argmax when uniform < 0, else inverse-CDF sampling of
 * softmax(logits * inv_temperature) with the given uniform in [0, 1). */
static int64_t pick_class(const float *restrict logits, int classes, float uniform, float inv_temperature,
                          float *restrict scratch)
{
    int64_t best = 0;
    for (int c = 1; c < classes; ++c)
        if (logits[c] > logits[best]) best = c;
    if (uniform < 0.0f) return best;
    const float top = logits[best];
    float total = 0.0f;
    int64_t last_positive = best;
    for (int c = 0; c < classes; ++c) {
        scratch[c] = expf((logits[c] - top) * inv_temperature);
        total += scratch[c];
        scratch[c] = total;
        if (scratch[c] > (c ? scratch[c - 1] : 0.0f)) last_positive = c;
    }
    const float target = uniform * total;
    for (int c = 0; c < classes; ++c)
        if (scratch[c] > target) return c;
    return last_positive;
}

/* Sizes and ranges the kernel relies on; everything is indexed with int below. */
static int check(const timbre_decoder *d, const timbre_state *s, int64_t n_steps, int64_t threads)
{
    const int64_t limit = 1 << 20;
    if (!d || !s || !d->layer || !d->start_weight || !d->start_bias || !d->skip_start || !d->skip_bias ||
        !d->hidden || !d->logits || !d->logits_bias || !s->input_ring || !s->layer_ring || !s->inputs ||
        !s->layer_bias || !s->output_bias)
        return TIMBRE_MISSING_BUFFER;
    if (d->residual < 1 || d->residual > limit || d->skip < 1 || d->skip > limit || d->kernel < 1 ||
        d->kernel > 64 || d->weight_format < TIMBRE_FLOAT32 || d->weight_format > TIMBRE_INT8 || d->layers < 1 ||
        d->layers > 4096 || d->classes < 2 || d->classes > limit ||
        s->batch < 1 || s->batch > limit || n_steps < 0 || threads < 1 || threads > 1024 ||
        d->source_harmonics < 0 || d->source_harmonics > 1024)
        return TIMBRE_BAD_GEOMETRY;
    if (d->source_harmonics && !s->source_cycles) return TIMBRE_MISSING_BUFFER;
    for (int64_t l = 0; l < d->layers; ++l) {
        const timbre_layer *layer = d->layer + l;
        if (layer->dilation < 1 || layer->dilation > limit) return TIMBRE_BAD_GEOMETRY;
        if (!layer->dilated || !layer->skip_residual || !layer->skip_residual_bias || !s->layer_ring[l] ||
            (d->source_harmonics && !layer->source))
            return TIMBRE_MISSING_BUFFER;
    }
    return TIMBRE_OK;
}

/* sizeof of the structures above, for native.py to check its ctypes mirror; returns the ABI version. */
int timbre_fastgen_sizes(int64_t *layer, int64_t *decoder, int64_t *state, int64_t *panel)
{
    *layer = (int64_t)sizeof(timbre_layer);
    *decoder = (int64_t)sizeof(timbre_decoder);
    *state = (int64_t)sizeof(timbre_state);
    *panel = TIMBRE_PANEL;
    return TIMBRE_FASTGEN_ABI;
}

/* Run steps t0 .. t0+n_steps-1 within the current conditioning frame.
 *
 * If teacher [n_steps][batch] is given, step s uses teacher[s][b] as its input; otherwise the
 * input comes from the class picked at the previous step: sampled with uniforms[s][b] from
 * softmax(logits * inv_temperature), or argmax when uniforms is NULL. logits_out
 * [n_steps][batch][classes] and classes_out [n_steps][batch] are optional. state->inputs ends
 * holding the next step's input.
 *
 * Threads split the notes when there are at least as many notes as threads (no synchronisation
 * inside a step), else they split every product's panels and meet at barriers.
 * Returns TIMBRE_OK or one of the status codes above (then nothing has been written). */
int timbre_fastgen_run(const timbre_decoder *decoder, const timbre_state *state, int64_t t0, int64_t n_steps,
                       int64_t n_threads, const float *teacher, const float *uniforms, float inv_temperature,
                       float *logits_out, int64_t *classes_out)
{
    const int status = check(decoder, state, n_steps, n_threads);
    if (status != TIMBRE_OK) return status;
    const int batch = (int)state->batch, residual = (int)decoder->residual, skip = (int)decoder->skip;
    const int kernel = (int)decoder->kernel, layers = (int)decoder->layers, classes = (int)decoder->classes;
    const int pad_r = padded(residual), pad_s = padded(skip), pad_c = padded(classes);
    const int threads = (int)n_threads, split_notes = batch >= threads;
    const timbre_layer *layer_weights = decoder->layer;
    const float *start_w = decoder->start_weight, *start_b = decoder->start_bias;
    const void *skip_start = decoder->skip_start, *hidden_w = decoder->hidden, *logits_w = decoder->logits;
    const float *skip_b = decoder->skip_bias, *logits_b = decoder->logits_bias;
    const panels_multiply_fn formats[] = {panels_multiply_float32, panels_multiply_bfloat16, panels_multiply_int8};
    const panels_multiply_fn panels_multiply = formats[decoder->weight_format];
    const float *layer_bias = state->layer_bias, *out_bias = state->output_bias;
    float *inputs = state->inputs, *input_ring = state->input_ring;
    float *const *layer_ring = state->layer_ring;
    const int ld_pre = padded(2 * residual), ld_rs = pad_s + pad_r;
    const int harmonics = (int)decoder->source_harmonics;

    /* Shared scratch, one row per note: pre-activations, skip|residual outputs, skip sum, hidden, logits. */
    const size_t shared_floats = (size_t)batch * (ld_pre + ld_rs + pad_s + pad_s + pad_c);
    /* Per-thread scratch: gated activations / relu inputs, softmax CDF, pitch clock. */
    const int widest = residual > skip ? residual : skip;
    const size_t private_floats = (size_t)batch * widest + classes + (size_t)batch * 2 * harmonics;
    float *scratch = calloc(shared_floats + (size_t)threads * private_floats, sizeof(float));
    const float **taps = malloc((size_t)threads * kernel * sizeof(float *));
    if (!scratch || !taps) {
        free(scratch);
        free(taps);
        return TIMBRE_NO_MEMORY;
    }
    float *pre_all = scratch, *rs_all = pre_all + (size_t)batch * ld_pre;
    float *skip_all = rs_all + (size_t)batch * ld_rs, *hidden_all = skip_all + (size_t)batch * pad_s;
    float *logits_all = hidden_all + (size_t)batch * pad_s, *private_base = logits_all + (size_t)batch * pad_c;

#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        const int thread = omp_get_thread_num(), team = omp_get_num_threads();
#else
        const int thread = 0, team = 1;
#endif
        /* This thread's notes [row0, row0 + rows) and its share of panels (panel_thread of panel_team). */
        int row0 = 0, row_end = batch;
        const int panel_team = split_notes ? 1 : team, panel_thread = split_notes ? 0 : thread;
        if (split_notes) thread_share(batch, thread, team, &row0, &row_end);
        const int rows = row_end - row0;
        float *pre = pre_all + (size_t)row0 * ld_pre, *rs = rs_all + (size_t)row0 * ld_rs;
        float *skip_sum = skip_all + (size_t)row0 * pad_s, *hidden = hidden_all + (size_t)row0 * pad_s;
        float *logits = logits_all + (size_t)row0 * pad_c;
        float *mine = private_base + (size_t)thread * private_floats, *cdf = mine + (size_t)batch * widest;
        float *clock = cdf + classes;
        const float **my_taps = taps + (size_t)thread * kernel;
        int p0, p1, b0, b1;

#define SYNC_PANELS()                    \
    do {                                 \
        if (panel_team > 1) {            \
            _Pragma("omp barrier")       \
        }                                \
    } while (0)

        for (int64_t s = 0; s < n_steps; ++s) {
            const int64_t t = t0 + s;
            if (panel_thread == 0) {
                /* Start convolution from the ring of past inputs, then the first skip. */
                for (int b = row0; b < row_end; ++b) {
                    if (teacher) inputs[b] = teacher[s * batch + b];
                    input_ring[ring_slot(t, kernel) * batch + b] = inputs[b];
                }
                float *x0 = layer_ring[0] +
                            ring_slot(t, (int64_t)(kernel - 1) * layer_weights[0].dilation + 1) * batch * residual;
                for (int b = row0; b < row_end; ++b)
                    for (int r = 0; r < residual; ++r) {
                        float v = start_b[r];
                        for (int j = 0; j < kernel; ++j)
                            v += start_w[j * residual + r] *
                                 input_ring[ring_slot(t - (kernel - 1 - j), kernel) * batch + b];
                        x0[b * residual + r] = v;
                    }
                fill_rows(skip_sum, pad_s, skip_b, rows, pad_s);
                const float *x0_rows = x0 + (size_t)row0 * residual;
                panels_multiply(skip_start, 1, residual, 0, pad_s / TIMBRE_PANEL, &x0_rows, residual, rows, skip_sum,
                                pad_s);
            }
            SYNC_PANELS();
            if (harmonics) clock_rows(state->source_cycles + row0, rows, harmonics, t, clock);
            for (int l = 0; l < layers; ++l) {
                const timbre_layer *lw = layer_weights + l;
                const int64_t length = (int64_t)(kernel - 1) * lw->dilation + 1;
                for (int j = 0; j < kernel; ++j) {
                    const int64_t slot = ring_slot(t - (int64_t)(kernel - 1 - j) * lw->dilation, length);
                    my_taps[j] = layer_ring[l] + (slot * batch + row0) * residual;
                }
                thread_share(ld_pre / TIMBRE_PANEL, panel_thread, panel_team, &p0, &p1);
                for (int b = 0; b < rows; ++b)
                    memcpy(pre + (size_t)b * ld_pre + p0 * TIMBRE_PANEL,
                           layer_bias + ((size_t)l * batch + row0 + b) * ld_pre + p0 * TIMBRE_PANEL,
                           (size_t)(p1 - p0) * TIMBRE_PANEL * sizeof(float));
                if (harmonics) {
                    const float *clock_in = clock;
                    panels_multiply(lw->source, 1, 2 * harmonics, p0, p1, &clock_in, 2 * harmonics, rows, pre, ld_pre);
                }
                panels_multiply(lw->dilated, kernel, residual, p0, p1, my_taps, residual, rows, pre, ld_pre);
                SYNC_PANELS();
                /* Every panel thread gates all its notes' rows, so the next product needs no barrier. */
                gate_rows(pre, ld_pre, residual, residual, 0, rows, mine);
                const int last = l == layers - 1; /* the last layer's residual output is unused */
                thread_share((pad_s + (last ? 0 : pad_r)) / TIMBRE_PANEL, panel_thread, panel_team, &p0, &p1);
                fill_rows(rs + p0 * TIMBRE_PANEL, ld_rs, lw->skip_residual_bias + p0 * TIMBRE_PANEL, rows,
                          (p1 - p0) * TIMBRE_PANEL);
                const float *gated = mine;
                panels_multiply(lw->skip_residual, 1, residual, p0, p1, &gated, residual, rows, rs, ld_rs);
                const float *here = my_taps[kernel - 1];
                float *next = NULL; /* where the next layer's ring keeps its input at time t */
                if (!last) {
                    const int64_t slot = ring_slot(t, (int64_t)(kernel - 1) * layer_weights[l + 1].dilation + 1);
                    next = layer_ring[l + 1] + (slot * batch + row0) * residual;
                }
                for (int b = 0; b < rows; ++b) {
                    const float *row = rs + (size_t)b * ld_rs;
                    for (int c = p0 * TIMBRE_PANEL; c < p1 * TIMBRE_PANEL; ++c) {
                        if (c < skip)
                            skip_sum[(size_t)b * pad_s + c] += row[c];
                        else if (next && c >= pad_s && c - pad_s < residual)
                            next[(size_t)b * residual + c - pad_s] = here[(size_t)b * residual + c - pad_s] + row[c];
                    }
                }
                SYNC_PANELS();
            }
            /* Output stack: relu, 1x1 + conditioning, relu, 1x1 to logits. */
            relu_rows(skip_sum, pad_s, skip, rows, mine);
            thread_share(pad_s / TIMBRE_PANEL, panel_thread, panel_team, &p0, &p1);
            for (int b = 0; b < rows; ++b)
                memcpy(hidden + (size_t)b * pad_s + p0 * TIMBRE_PANEL,
                       out_bias + (size_t)(row0 + b) * pad_s + p0 * TIMBRE_PANEL,
                       (size_t)(p1 - p0) * TIMBRE_PANEL * sizeof(float));
            const float *relu_skip = mine;
            panels_multiply(hidden_w, 1, skip, p0, p1, &relu_skip, skip, rows, hidden, pad_s);
            SYNC_PANELS();
            relu_rows(hidden, pad_s, skip, rows, mine);
            thread_share(pad_c / TIMBRE_PANEL, panel_thread, panel_team, &p0, &p1);
            fill_rows(logits + p0 * TIMBRE_PANEL, pad_c, logits_b + p0 * TIMBRE_PANEL, rows, (p1 - p0) * TIMBRE_PANEL);
            const float *relu_hidden = mine;
            panels_multiply(logits_w, 1, skip, p0, p1, &relu_hidden, skip, rows, logits, pad_c);
            SYNC_PANELS();
            thread_share(rows, panel_thread, panel_team, &b0, &b1);
            for (int b = b0; b < b1; ++b) {
                const float *row = logits + (size_t)b * pad_c;
                const size_t note = (size_t)s * batch + row0 + b;
                if (logits_out) memcpy(logits_out + note * classes, row, classes * sizeof(float));
                if (teacher) continue;
                const float uniform = uniforms ? uniforms[note] : -1.0f;
                const int64_t picked = pick_class(row, classes, uniform, inv_temperature, cdf);
                if (classes_out) classes_out[note] = picked;
                inputs[row0 + b] = (float)(picked - classes / 2) / (float)(classes / 2);
            }
            SYNC_PANELS();
        }
#undef SYNC_PANELS
    }
    free(taps);
    free(scratch);
    return TIMBRE_OK;
}

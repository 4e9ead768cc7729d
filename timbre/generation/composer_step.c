/* The native one-token step of the composer transformer (timbre.models.composer.Composer).
 *
 * Built into the same library as fastgen.c (setup.py) and loaded with ctypes by
 * timbre/generation/composer_native.py, which mirrors the structures below and checks their
 * sizes against timbre_composer_sizes(). Plain C99; no Python or torch headers.
 *
 * One token's step is about 25 small products per layer. Dispatched one by one from Python (torch
 * eager) most of its time went to dispatch and to reading the weights through generic kernels; here
 * every matrix is read once per step, row by row, for all sequences of the batch together. It
 * computes what Composer.forward does for one new token per sequence in eval mode: pre-norm
 * blocks (LayerNorm, rotary multi-head attention over the KV ring, GELU-tanh feed-forward), the
 * final LayerNorm and the tied output head. Sums run in a different order than torch's, so logits
 * agree within float32 rounding, not bit for bit.
 *
 * The KV cache is the caller's (the torch tensors of timbre.models.composer.KVCache):
 * keys and values of each layer [batch][heads][capacity][head_dim], written at slot
 * length % capacity; attention reads slots 0 .. min(length + 1, capacity) - 1, in any order
 * (softmax does not depend on it), which is what makes the cache a ring. A cache refilled with
 * left-padded rows (Composer.generate's conditions) passes first_slot [batch]: sequence b reads
 * slots first_slot[b] .. length only (the ring does not wrap then).
 */
#include "cpu_dispatch.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Bumped whenever a structure or the signature of timbre_composer_step changes. */
#define TIMBRE_COMPOSER_ABI 2
/* Largest widths the scratch memory is sized for (checked): far above any CPU-sized composer. */
#define MAX_WIDTH 65536
#define MAX_BATCH 4096
#define MAX_CAPACITY (1 << 20)

enum { COMPOSER_OK = 0, COMPOSER_NO_MEMORY = 1, COMPOSER_BAD_GEOMETRY = 2, COMPOSER_MISSING_BUFFER = 3 };

/* One pre-norm block; matrices row-major [out][in] as torch's nn.Linear stores them. */
typedef struct {
    const float *attention_norm_weight, *attention_norm_bias; /* [dim] */
    const float *qkv;                                          /* [3 dim][dim], no bias */
    const float *out;                                          /* [dim][dim], no bias */
    const float *feed_forward_norm_weight, *feed_forward_norm_bias; /* [dim] */
    const float *feed_forward_in, *feed_forward_in_bias;       /* [hidden][dim], [hidden] */
    const float *feed_forward_out, *feed_forward_out_bias;     /* [dim][hidden], [dim] */
    float *keys, *values; /* the layer's cache: [batch][heads][capacity][head_dim] */
} timbre_composer_block;

typedef struct {
    int64_t vocab, dim, heads, hidden, layers, capacity;
    float norm_eps;                                /* every LayerNorm's */
    const float *embedding;                        /* [vocab][dim] */
    const float *final_norm_weight, *final_norm_bias; /* [dim] */
    const float *head;                             /* [vocab][dim], no bias (tied: the embedding) */
    const timbre_composer_block *block;            /* [layers] */
} timbre_composer;

/* y[b][o] = bias[o] + sum_i w[o][i] x[b][i] for every row b (rows ld_x and ld_y floats apart);
 * each weight row is read once for the whole batch. Sixteen partial sums per product keep the
 * loop vectorisable without reassociating float additions. */
CPU_DISPATCH
static void rows_times(const float *restrict w, const float *restrict bias, int64_t outputs, int64_t inputs,
                       const float *restrict x, int64_t ld_x, int64_t batch, float *restrict y, int64_t ld_y)
{
    for (int64_t o = 0; o < outputs; o++) {
        const float *row = w + o * inputs;
        for (int64_t b = 0; b < batch; b++) {
            const float *in = x + b * ld_x;
            float partial[16] = {0};
            int64_t i = 0;
            for (; i + 16 <= inputs; i += 16)
                for (int j = 0; j < 16; j++) partial[j] += row[i + j] * in[i + j];
            float sum = 0.0f;
            for (; i < inputs; i++) sum += row[i] * in[i];
            for (int j = 0; j < 16; j++) sum += partial[j];
            y[b * ld_y + o] = sum + (bias ? bias[o] : 0.0f);
        }
    }
}

/* One head's attention: softmax(q . k_s * scale) over the seen slots s, then the weighted sum of
 * their values, into y [head_dim]; score [seen] is scratch. */
CPU_DISPATCH
static void attend(const float *restrict q, const float *restrict keys, const float *restrict values, int64_t seen,
                   int64_t head_dim, float scale, float *restrict score, float *restrict y)
{
    float top = -INFINITY, total = 0.0f;
    for (int64_t s = 0; s < seen; s++) {
        const float *key = keys + s * head_dim;
        float partial[16] = {0}, dot = 0.0f;
        int64_t j = 0;
        for (; j + 16 <= head_dim; j += 16)
            for (int i = 0; i < 16; i++) partial[i] += q[j + i] * key[j + i];
        for (; j < head_dim; j++) dot += q[j] * key[j];
        for (int i = 0; i < 16; i++) dot += partial[i];
        score[s] = dot * scale;
        if (score[s] > top) top = score[s];
    }
    for (int64_t s = 0; s < seen; s++) total += score[s] = expf(score[s] - top);
    for (int64_t j = 0; j < head_dim; j++) y[j] = 0.0f;
    for (int64_t s = 0; s < seen; s++) {
        const float weight = score[s] / total, *value = values + s * head_dim;
        for (int64_t j = 0; j < head_dim; j++) y[j] += weight * value[j];
    }
}

static void layer_norm(const float *x, const float *weight, const float *bias, int64_t width, float eps, float *out)
{
    double mean = 0.0, variance = 0.0;
    for (int64_t i = 0; i < width; i++) mean += x[i];
    mean /= (double)width;
    for (int64_t i = 0; i < width; i++) variance += ((double)x[i] - mean) * ((double)x[i] - mean);
    float scale = (float)(1.0 / sqrt(variance / (double)width + (double)eps));
    for (int64_t i = 0; i < width; i++) out[i] = ((float)(x[i] - mean)) * scale * weight[i] + bias[i];
}

/* Rotate-half rotary embedding of one head's vector, as timbre.models.composer.apply_rotary. */
static void rotate(float *v, const float *cos_, const float *sin_, int64_t head_dim)
{
    int64_t half = head_dim / 2;
    for (int64_t j = 0; j < half; j++) {
        float first = v[j], second = v[j + half];
        v[j] = first * cos_[j] - second * sin_[j];
        v[j + half] = second * cos_[j + half] + first * sin_[j + half];
    }
}

static float gelu_tanh(float x)
{
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

int timbre_composer_sizes(int64_t *block, int64_t *composer)
{
    *block = (int64_t)sizeof(timbre_composer_block);
    *composer = (int64_t)sizeof(timbre_composer);
    return TIMBRE_COMPOSER_ABI;
}

/* One token per sequence: tokens [batch], at position `length` (the tokens already cached);
 * first_slot [batch] the first slot each sequence attends to, or NULL for slot 0 (see the top);
 * cos/sin [head_dim] the rotary angles of that position; logits out [batch][vocab]. */
int timbre_composer_step(const timbre_composer *m, int64_t batch, const int64_t *tokens, int64_t length,
                         const int64_t *first_slot, const float *cos_, const float *sin_, float *logits)
{
    if (!m || !tokens || !cos_ || !sin_ || !logits || !m->embedding || !m->final_norm_weight ||
        !m->final_norm_bias || !m->head || !m->block)
        return COMPOSER_MISSING_BUFFER;
    const int64_t dim = m->dim, heads = m->heads, hidden = m->hidden;
    if (batch < 1 || batch > MAX_BATCH || dim < 2 || dim > MAX_WIDTH || heads < 1 || dim % heads ||
        (dim / heads) % 2 || hidden < 1 || hidden > MAX_WIDTH || m->layers < 1 || m->capacity < 1 ||
        m->capacity > MAX_CAPACITY || m->vocab < 1 || length < 0)
        return COMPOSER_BAD_GEOMETRY;
    for (int64_t b = 0; b < batch; b++)
        if (tokens[b] < 0 || tokens[b] >= m->vocab) return COMPOSER_BAD_GEOMETRY;
    const int64_t head_dim = dim / heads, capacity = m->capacity;
    const int64_t slot = length % capacity, seen = length + 1 < capacity ? length + 1 : capacity;
    if (first_slot) {
        if (length >= capacity) return COMPOSER_BAD_GEOMETRY; /* padded rows never wrap */
        for (int64_t b = 0; b < batch; b++)
            if (first_slot[b] < 0 || first_slot[b] > length) return COMPOSER_BAD_GEOMETRY;
    }

    /* x, normed, attended [batch][dim]; projected [batch][3 dim]; wide [batch][max(hidden, seen)] */
    int64_t wide_width = hidden > seen ? hidden : seen;
    /* at most MAX_BATCH * (6 MAX_WIDTH + MAX_CAPACITY) floats: no int64 overflow; checked for size_t */
    int64_t floats = batch * (6 * dim + wide_width);
    if ((uint64_t)floats > (uint64_t)(SIZE_MAX / sizeof(float))) return COMPOSER_NO_MEMORY;
    float *scratch = malloc(sizeof(float) * (size_t)floats);
    if (!scratch) return COMPOSER_NO_MEMORY;
    float *x = scratch, *normed = x + batch * dim, *attended = normed + batch * dim;
    float *projected = attended + batch * dim, *wide = projected + batch * 3 * dim;

    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < dim; i++) x[b * dim + i] = m->embedding[tokens[b] * dim + i];
    const float scale = 1.0f / sqrtf((float)head_dim);

    for (int64_t layer = 0; layer < m->layers; layer++) {
        const timbre_composer_block *k = &m->block[layer];
        if (!k->qkv || !k->out || !k->feed_forward_in || !k->feed_forward_out || !k->keys || !k->values ||
            !k->attention_norm_weight || !k->attention_norm_bias || !k->feed_forward_norm_weight ||
            !k->feed_forward_norm_bias) {
            free(scratch);
            return COMPOSER_MISSING_BUFFER;
        }
        for (int64_t b = 0; b < batch; b++)
            layer_norm(x + b * dim, k->attention_norm_weight, k->attention_norm_bias, dim, m->norm_eps,
                       normed + b * dim);
        rows_times(k->qkv, NULL, 3 * dim, dim, normed, dim, batch, projected, 3 * dim);
        for (int64_t b = 0; b < batch; b++) {
            float *q = projected + b * 3 * dim, *key = q + dim, *value = q + 2 * dim;
            for (int64_t h = 0; h < heads; h++) {
                rotate(q + h * head_dim, cos_, sin_, head_dim);
                rotate(key + h * head_dim, cos_, sin_, head_dim);
                float *cached_keys = k->keys + ((b * heads + h) * capacity) * head_dim;
                float *cached_values = k->values + ((b * heads + h) * capacity) * head_dim;
                for (int64_t j = 0; j < head_dim; j++) {
                    cached_keys[slot * head_dim + j] = key[h * head_dim + j];
                    cached_values[slot * head_dim + j] = value[h * head_dim + j];
                }
                const int64_t first = first_slot ? first_slot[b] : 0;
                attend(q + h * head_dim, cached_keys + first * head_dim, cached_values + first * head_dim, seen - first,
                       head_dim, scale, wide + b * wide_width, attended + b * dim + h * head_dim);
            }
        }
        rows_times(k->out, NULL, dim, dim, attended, dim, batch, normed, dim);
        for (int64_t i = 0; i < batch * dim; i++) x[i] += normed[i];

        for (int64_t b = 0; b < batch; b++)
            layer_norm(x + b * dim, k->feed_forward_norm_weight, k->feed_forward_norm_bias, dim, m->norm_eps,
                       normed + b * dim);
        /* the hidden activations, in `wide` (rows wide_width >= hidden apart; the scores are spent) */
        rows_times(k->feed_forward_in, k->feed_forward_in_bias, hidden, dim, normed, dim, batch, wide, wide_width);
        for (int64_t b = 0; b < batch; b++)
            for (int64_t i = 0; i < hidden; i++) wide[b * wide_width + i] = gelu_tanh(wide[b * wide_width + i]);
        rows_times(k->feed_forward_out, k->feed_forward_out_bias, dim, hidden, wide, wide_width, batch, attended, dim);
        for (int64_t i = 0; i < batch * dim; i++) x[i] += attended[i];
    }
    for (int64_t b = 0; b < batch; b++)
        layer_norm(x + b * dim, m->final_norm_weight, m->final_norm_bias, dim, m->norm_eps, normed + b * dim);
    rows_times(m->head, NULL, m->vocab, dim, normed, dim, batch, logits, m->vocab);
    free(scratch);
    return COMPOSER_OK;
}

"""The native per-sample decoding step: a small C kernel built once with the system compiler.

At small batch sizes a cached WaveNet step is a few dozen tiny matrix-vector products, so
dispatching them one by one from Python costs far more than the arithmetic (about 5 us per torch
op against well under 1 us of work). This kernel runs whole chunks of steps in one call.

Why plain C through :mod:`ctypes` rather than a torch C++ extension: it compiles in about a
second instead of a minute (no torch headers) and needs nothing but a C compiler. The shared
library is cached under ``$TIMBRE_CACHE_DIR`` (default ``~/.cache/timbre``), keyed by the source,
the flags and the CPU, so it is built once per machine. It uses OpenMP when the compiler supports
it (sharing torch's ``libgomp``); ``TIMBRE_NATIVE=0`` disables it and any build failure makes
:mod:`timbre.generation.engine` fall back to its torch stepper.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from timbre.generation.engine import DecoderWeights

# Output columns per packed panel; must match PANEL in the C source.
PANEL = 64

SOURCE = r"""
/* One cached autoregressive WaveNet step per sample, for all notes of a batch at once.
 *
 * Matrices are packed in panels of PANEL output columns, [panels][inputs][PANEL], so every
 * matrix-vector product streams its weights sequentially and keeps PANEL x BATCH_BLOCK
 * accumulators in registers. Outputs are padded to whole panels (padding weights are zero).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define PANEL 64
#define BATCH_BLOCK 4

/* Y[b][p*PANEL + j] += sum over segments s, inputs i of X_s[b][i] * P[p][s*seg_len + i][j]
 * for panels p in [p0, p1). A segment is one tap of a dilated convolution (K segments of
 * seg_len inputs, each read from its own ring-buffer slot); plain matrices have one segment. */
static void panels_multiply(const float *restrict packed, int segments, int seg_len, int p0, int p1,
                            const float *const *inputs, int ldx, int batch, float *restrict out, int ldy)
{
    const int n_in = segments * seg_len;
    for (int p = p0; p < p1; ++p) {
        const float *restrict panel = packed + (size_t)p * n_in * PANEL;
        int b = 0;
        for (; b + BATCH_BLOCK <= batch; b += BATCH_BLOCK) {
            float acc[BATCH_BLOCK][PANEL];
            for (int r = 0; r < BATCH_BLOCK; ++r)
                memcpy(acc[r], out + (size_t)(b + r) * ldy + p * PANEL, sizeof(acc[r]));
            for (int s = 0; s < segments; ++s) {
                const float *restrict x = inputs[s] + (size_t)b * ldx;
                const float *restrict w = panel + (size_t)s * seg_len * PANEL;
                for (int i = 0; i < seg_len; ++i, w += PANEL) {
                    for (int r = 0; r < BATCH_BLOCK; ++r) {
                        const float xi = x[r * ldx + i];
                        for (int j = 0; j < PANEL; ++j) acc[r][j] += xi * w[j];
                    }
                }
            }
            for (int r = 0; r < BATCH_BLOCK; ++r)
                memcpy(out + (size_t)(b + r) * ldy + p * PANEL, acc[r], sizeof(acc[r]));
        }
        for (; b < batch; ++b) {
            /* Two accumulator sets (even and odd inputs) halve the FMA dependency chain. */
            float even[PANEL], odd[PANEL];
            memcpy(even, out + (size_t)b * ldy + p * PANEL, sizeof(even));
            memset(odd, 0, sizeof(odd));
            for (int s = 0; s < segments; ++s) {
                const float *restrict x = inputs[s] + (size_t)b * ldx;
                const float *restrict w = panel + (size_t)s * seg_len * PANEL;
                int i = 0;
                for (; i + 2 <= seg_len; i += 2, w += 2 * PANEL) {
                    const float x0 = x[i], x1 = x[i + 1];
                    for (int j = 0; j < PANEL; ++j) {
                        even[j] += x0 * w[j];
                        odd[j] += x1 * w[PANEL + j];
                    }
                }
                for (; i < seg_len; ++i, w += PANEL)
                    for (int j = 0; j < PANEL; ++j) even[j] += x[i] * w[j];
            }
            for (int j = 0; j < PANEL; ++j) out[(size_t)b * ldy + p * PANEL + j] = even[j] + odd[j];
        }
    }
}

/* tanh as Eigen's rational approximation (a few ulp in float32): unlike libm's tanhf it
 * vectorizes, and the step evaluates 2 * residual_channels of them per layer and note. */
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

/* Geometry, in this order: batch, residual, skip, kernel, layers, classes, padded residual,
 * padded skip, padded classes, threads, then one dilation per layer. */
enum { G_BATCH, G_RESIDUAL, G_SKIP, G_KERNEL, G_LAYERS, G_CLASSES, G_PAD_RESIDUAL, G_PAD_SKIP, G_PAD_CLASSES,
       G_THREADS, G_DILATIONS };

/* Weights, in this order: start (kernel x residual, tap-major), start bias, packed skip_start
 * (residual -> padded skip), the summed skip biases (padded skip), packed output hidden
 * (skip -> padded skip), packed logits (skip -> padded classes), logits bias (padded classes),
 * then per layer: packed dilated conv (kernel*residual -> 2*padded residual, filter half then
 * gate half), packed skip|residual 1x1 (residual -> padded skip + padded residual), its bias.
 *
 * State: the start ring (kernel rows x batch), then one ring per layer ((kernel-1)*dilation+1
 * rows x batch x residual), all zero at time 0: the zero padding of the causal convolutions.
 *
 * Per call (one conditioning frame): layer_bias [layers][batch][2*padded residual] holds each
 * layer's conditioning plus the dilated conv bias; out_bias [batch][padded skip] the output
 * conditioning plus the output hidden bias. Steps t0 .. t0+n_steps-1 are run. inputs[b] is the
 * network input of the next step (updated). If teacher is given, step s uses teacher[s][b] as
 * its input; else the input comes from the class picked at the previous step (uniforms[s][b],
 * or argmax when uniforms is NULL). logits_out [n_steps][batch][classes] and classes_out
 * [n_steps][batch] are optional.
 *
 * Threads split the notes when there are at least as many notes as threads (no synchronisation
 * inside a step), else they split every product's panels and meet at barriers. Returns 0, or -1
 * if scratch memory could not be allocated. */
int timbre_fastgen_run(const int64_t *geometry, const float *const *weights, float *const *state,
                       const float *layer_bias, const float *out_bias, int64_t t0, int64_t n_steps,
                       float *inputs, const float *teacher, const float *uniforms, float inv_temperature,
                       float *logits_out, int64_t *classes_out)
{
    const int batch = (int)geometry[G_BATCH], residual = (int)geometry[G_RESIDUAL], skip = (int)geometry[G_SKIP];
    const int kernel = (int)geometry[G_KERNEL], layers = (int)geometry[G_LAYERS];
    const int classes = (int)geometry[G_CLASSES], pad_r = (int)geometry[G_PAD_RESIDUAL];
    const int pad_s = (int)geometry[G_PAD_SKIP], pad_c = (int)geometry[G_PAD_CLASSES];
    const int threads = geometry[G_THREADS] > 1 ? (int)geometry[G_THREADS] : 1;
    const int split_notes = batch >= threads;
    const int64_t *dilation = geometry + G_DILATIONS;

    const float *start_w = weights[0], *start_b = weights[1], *skip_start = weights[2], *skip_b = weights[3];
    const float *hidden_w = weights[4], *logits_w = weights[5], *logits_b = weights[6];
    const int ld_pre = 2 * pad_r, ld_rs = pad_s + pad_r;

    /* Shared scratch, one row per note: pre-activations, skip|residual outputs, skip sum, hidden, logits. */
    const size_t shared_floats = (size_t)batch * (ld_pre + ld_rs + pad_s + pad_s + pad_c);
    /* Per-thread scratch: gated activations / relu inputs, softmax CDF. */
    const int widest = residual > skip ? residual : skip;
    const size_t private_floats = (size_t)batch * widest + classes;
    float *scratch = calloc(shared_floats + (size_t)threads * private_floats, sizeof(float));
    const float **taps = malloc((size_t)threads * kernel * sizeof(float *));
    if (!scratch || !taps) {
        free(scratch);
        free(taps);
        return -1;
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
                float *ring = state[0];
                for (int b = row0; b < row_end; ++b) {
                    if (teacher) inputs[b] = teacher[s * batch + b];
                    ring[ring_slot(t, kernel) * batch + b] = inputs[b];
                }
                float *x0 = state[1] + ring_slot(t, (int64_t)(kernel - 1) * dilation[0] + 1) * batch * residual;
                for (int b = row0; b < row_end; ++b)
                    for (int r = 0; r < residual; ++r) {
                        float v = start_b[r];
                        for (int j = 0; j < kernel; ++j)
                            v += start_w[j * residual + r] * ring[ring_slot(t - (kernel - 1 - j), kernel) * batch + b];
                        x0[b * residual + r] = v;
                    }
                fill_rows(skip_sum, pad_s, skip_b, rows, pad_s);
                const float *x0_rows = x0 + (size_t)row0 * residual;
                panels_multiply(skip_start, 1, residual, 0, pad_s / PANEL, &x0_rows, residual, rows, skip_sum, pad_s);
            }
            SYNC_PANELS();
            for (int l = 0; l < layers; ++l) {
                const float *dilated = weights[7 + 3 * l], *rs_w = weights[8 + 3 * l], *rs_b = weights[9 + 3 * l];
                const int64_t length = (int64_t)(kernel - 1) * dilation[l] + 1;
                for (int j = 0; j < kernel; ++j) {
                    const int64_t slot = ring_slot(t - (int64_t)(kernel - 1 - j) * dilation[l], length);
                    my_taps[j] = state[1 + l] + (slot * batch + row0) * residual;
                }
                thread_share(ld_pre / PANEL, panel_thread, panel_team, &p0, &p1);
                for (int b = 0; b < rows; ++b)
                    memcpy(pre + (size_t)b * ld_pre + p0 * PANEL,
                           layer_bias + ((size_t)l * batch + row0 + b) * ld_pre + p0 * PANEL,
                           (size_t)(p1 - p0) * PANEL * sizeof(float));
                panels_multiply(dilated, kernel, residual, p0, p1, my_taps, residual, rows, pre, ld_pre);
                SYNC_PANELS();
                /* Every panel thread gates all its notes' rows, so the next product needs no barrier. */
                gate_rows(pre, ld_pre, pad_r, residual, 0, rows, mine);
                const int last = l == layers - 1; /* the last layer's residual output is unused */
                thread_share((pad_s + (last ? 0 : pad_r)) / PANEL, panel_thread, panel_team, &p0, &p1);
                fill_rows(rs + p0 * PANEL, ld_rs, rs_b + p0 * PANEL, rows, (p1 - p0) * PANEL);
                const float *gated = mine;
                panels_multiply(rs_w, 1, residual, p0, p1, &gated, residual, rows, rs, ld_rs);
                const float *here = my_taps[kernel - 1];
                float *next = NULL; /* where the next layer's ring keeps its input at time t */
                if (!last) {
                    const int64_t slot = ring_slot(t, (int64_t)(kernel - 1) * dilation[l + 1] + 1);
                    next = state[2 + l] + (slot * batch + row0) * residual;
                }
                for (int b = 0; b < rows; ++b) {
                    const float *row = rs + (size_t)b * ld_rs;
                    for (int c = p0 * PANEL; c < p1 * PANEL; ++c) {
                        if (c < skip)
                            skip_sum[(size_t)b * pad_s + c] += row[c];
                        else if (c >= pad_s && c - pad_s < residual)
                            next[(size_t)b * residual + c - pad_s] = here[(size_t)b * residual + c - pad_s] + row[c];
                    }
                }
                SYNC_PANELS();
            }
            /* Output stack: relu, 1x1 + conditioning, relu, 1x1 to logits. */
            relu_rows(skip_sum, pad_s, skip, rows, mine);
            thread_share(pad_s / PANEL, panel_thread, panel_team, &p0, &p1);
            for (int b = 0; b < rows; ++b)
                memcpy(hidden + (size_t)b * pad_s + p0 * PANEL, out_bias + (size_t)(row0 + b) * pad_s + p0 * PANEL,
                       (size_t)(p1 - p0) * PANEL * sizeof(float));
            const float *relu_skip = mine;
            panels_multiply(hidden_w, 1, skip, p0, p1, &relu_skip, skip, rows, hidden, pad_s);
            SYNC_PANELS();
            relu_rows(hidden, pad_s, skip, rows, mine);
            thread_share(pad_c / PANEL, panel_thread, panel_team, &p0, &p1);
            fill_rows(logits + p0 * PANEL, pad_c, logits_b + p0 * PANEL, rows, (p1 - p0) * PANEL);
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
    return 0;
}
"""

# Tried in order: OpenMP lets one note use both cores; -march=native enables AVX-512/AVX2.
FLAG_SETS = (("-O3", "-march=native", "-fopenmp"), ("-O3", "-march=native"), ("-O3",))

_library: ctypes.CDLL | None = None
_error: str | None = None
_tried = False


def cache_dir() -> Path:
    """Where built kernels are kept: ``$TIMBRE_CACHE_DIR``, else ``$XDG_CACHE_HOME/timbre`` or ``~/.cache/timbre``."""
    if os.environ.get("TIMBRE_CACHE_DIR"):
        return Path(os.environ["TIMBRE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "timbre"


def _cpu_signature() -> str:
    """The CPU's feature flags: a kernel built with -march=native must not run on another CPU."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _build(compiler: str, flags: tuple[str, ...]) -> Path:
    """Compile SOURCE into the cache (atomically, so concurrent builds are safe) unless it is there."""
    key = hashlib.sha256("\0".join([SOURCE, compiler, *flags, _cpu_signature()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"fastgen-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        source, built = Path(work) / "fastgen.c", Path(work) / "fastgen.so"
        source.write_text(SOURCE)
        result = subprocess.run(
            [compiler, *flags, "-shared", "-fPIC", "-o", str(built), str(source), "-lm"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            message = (result.stderr.strip().splitlines() or ["exit status %d" % result.returncode])[-1]
            raise OSError(f"{Path(compiler).name} {' '.join(flags)} failed: {message}")
        os.replace(built, target)
    return target


def load_library() -> ctypes.CDLL | None:
    """The native kernel, built on first use; ``None`` (see :func:`build_error`) if it cannot be."""
    global _library, _error, _tried
    if _tried:
        return _library
    _tried = True
    if os.environ.get("TIMBRE_NATIVE", "1") == "0":
        _error = "disabled by TIMBRE_NATIVE=0"
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        _error = "no C compiler found (install gcc or set CC)"
        return None
    errors = []
    for flags in FLAG_SETS:
        try:
            library = ctypes.CDLL(str(_build(compiler, flags)))
        except (OSError, subprocess.SubprocessError) as error:
            errors.append(str(error))
            continue
        pointer, count = ctypes.c_void_p, ctypes.c_int64
        run = library.timbre_fastgen_run
        run.restype = ctypes.c_int
        run.argtypes = [pointer] * 5 + [count] * 2 + [pointer] * 3 + [ctypes.c_float, pointer, pointer]
        _library = library
        return library
    _error = "; ".join(errors)
    return None


def build_error() -> str | None:
    """Why :func:`load_library` returned ``None``."""
    return _error


def _padded(size: int) -> int:
    return -(-size // PANEL) * PANEL


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def default_threads(batch: int) -> int:
    """Threads for the kernel: one per note, up to ``torch.get_num_threads()``.

    Several notes: each thread takes a group of notes, which needs no synchronisation within a
    step. One note: one thread. Splitting its products across threads (``threads=2`` explicitly)
    means two barriers per layer and sample; on a busy machine a thread waiting at one may lose
    its core for a scheduler time slice: on the 2-core development machine, busy with other
    jobs, that made NSynth-size decoding 3 to 20 times slower than one thread.
    """
    return max(1, min(torch.get_num_threads(), batch))


def _in_one_buffer(tensors: Iterable[torch.Tensor], sizes: list[int]) -> list[torch.Tensor]:
    """Copies of ``tensors`` (float32, ``sizes`` elements each) in one buffer, each 64-byte aligned.

    The buffer is anonymous memory advised to use transparent huge pages where the OS allows:
    streaming NSynth's 236 MB of weights per sample through 4 KiB pages costs ~60,000 TLB misses;
    huge pages made that step about 10% faster in paired measurements here.
    """
    align = 16  # floats
    slots = [-(-size // align) * align for size in sizes]
    huge_page = 2 << 20
    length = -(-max(4 * sum(slots), 1) // huge_page) * huge_page
    region = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            region.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # advice only
            pass
    buffer = torch.frombuffer(region, dtype=torch.float32)  # keeps the mapping alive
    copies, offset = [], 0
    for tensor, size, slot in zip(tensors, sizes, slots, strict=True):
        assert tensor.numel() == size, f"packed weight of {tensor.numel()} floats, planned {size}"
        copies.append(buffer[offset : offset + size].view(tensor.shape).copy_(tensor))
        offset += slot
    return copies


class NativeStepper:
    """Owns the packed weights, ring buffers and per-frame biases of one batch for the C kernel.

    Args:
        library: from :func:`load_library`.
        weights: the decoder's rearranged weights (CPU, float32).
        batch: notes decoded together.
        threads: OpenMP threads (1 disables threading); ``None`` picks with :func:`default_threads`.
    """

    def __init__(self, library: ctypes.CDLL, weights: DecoderWeights, batch: int, threads: int | None) -> None:
        residual, skip, classes = weights.residual_channels, weights.skip_channels, weights.classes
        kernel, layers = weights.kernel_size, len(weights.dilations)
        self.library, self.batch, self.classes, self.residual = library, batch, classes, residual
        self.pad_residual, self.pad_skip, pad_classes = _padded(residual), _padded(skip), _padded(classes)

        def columns(tensor: torch.Tensor, width: int) -> torch.Tensor:
            return F.pad(tensor, (0, width - tensor.shape[-1]))

        def halves(tensor: torch.Tensor) -> torch.Tensor:  # [..., 2R] -> [..., 2 * padded R]
            return torch.cat([columns(part, self.pad_residual) for part in tensor.split(residual, dim=-1)], dim=-1)

        def packed(matrix: torch.Tensor) -> torch.Tensor:  # [in, out] -> [out / PANEL, in, PANEL]
            rows, width = matrix.shape
            return matrix.reshape(rows, width // PANEL, PANEL).transpose(0, 1).contiguous()

        pad_r, pad_s = self.pad_residual, self.pad_skip
        sizes = [kernel * residual, residual, residual * pad_s, pad_s, skip * pad_s, skip * pad_classes, pad_classes]
        sizes += [kernel * residual * 2 * pad_r, residual * (pad_s + pad_r), pad_s + pad_r] * layers

        def parts() -> Iterator[torch.Tensor]:  # in the kernel's order, one at a time to spare memory
            yield weights.start_weight
            yield weights.start_bias
            yield packed(columns(weights.skip_start_weight, pad_s))
            yield columns(weights.skip_bias, pad_s)
            yield packed(columns(weights.hidden_weight, pad_s))
            yield packed(columns(weights.logits_weight, pad_classes))
            yield columns(weights.logits_bias, pad_classes)
            zeros = torch.zeros(residual, residual)  # the last layer has no residual projection
            for layer in range(layers):
                has_residual = layer < layers - 1
                residual_weight = weights.residual_weight[layer] if has_residual else zeros
                residual_bias = weights.residual_bias[layer] if has_residual else zeros[0]
                yield packed(halves(weights.dilated_weight[layer]))
                skip_then_residual = [columns(weights.skip_weight[layer], pad_s), columns(residual_weight, pad_r)]
                yield packed(torch.cat(skip_then_residual, dim=1))
                yield torch.cat([torch.zeros(pad_s), columns(residual_bias, pad_r)])

        self.weights = _in_one_buffer(parts(), sizes)
        self.state = [torch.zeros(kernel, batch)] + [
            torch.zeros((kernel - 1) * dilation + 1, batch, residual) for dilation in weights.dilations
        ]
        if threads is None:
            threads = default_threads(batch)
        self.geometry = torch.tensor(
            [batch, residual, skip, kernel, layers, classes, self.pad_residual, self.pad_skip, pad_classes, threads]
            + list(weights.dilations),
            dtype=torch.int64,
        )
        self.layer_biases = torch.zeros(layers, batch, 2 * self.pad_residual)
        self.output_bias = torch.zeros(batch, self.pad_skip)
        self.inputs = torch.zeros(batch)  # network input of the next step; 0.0 at time 0
        self._weight_pointers = (ctypes.c_void_p * len(self.weights))(*[w.data_ptr() for w in self.weights])
        self._state_pointers = (ctypes.c_void_p * len(self.state))(*[s.data_ptr() for s in self.state])

    def set_frame(self, layer_biases: torch.Tensor, output_bias: torch.Tensor) -> None:
        """Biases of the current conditioning frame: ``[layers, batch, 2R]`` and ``[batch, S]``."""
        residual = self.residual
        self.layer_biases[..., :residual] = layer_biases[..., :residual]
        self.layer_biases[..., self.pad_residual : self.pad_residual + residual] = layer_biases[..., residual:]
        self.output_bias[:, : output_bias.shape[1]] = output_bias

    def run(
        self,
        start: int,
        steps: int,
        *,
        uniforms: torch.Tensor | None = None,
        inverse_temperature: float = 1.0,
        teacher: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run steps ``start .. start+steps-1`` within the current frame.

        With ``teacher [steps, batch]`` returns the logits ``[steps, batch, classes]`` of those
        inputs; otherwise samples (``uniforms [steps, batch]``, or greedy if ``None``) and returns
        the classes ``[steps, batch]``, feeding each back as the next input.
        """
        classes = logits = None
        if teacher is not None:
            teacher = teacher.to(torch.float32).contiguous()
            logits = torch.empty(steps, self.batch, self.classes)
        else:
            classes = torch.empty(steps, self.batch, dtype=torch.int64)
        if uniforms is not None:
            uniforms = uniforms.to(torch.float32).contiguous()
        status = self.library.timbre_fastgen_run(
            self.geometry.data_ptr(),
            ctypes.addressof(self._weight_pointers),
            ctypes.addressof(self._state_pointers),
            self.layer_biases.data_ptr(),
            self.output_bias.data_ptr(),
            start,
            steps,
            self.inputs.data_ptr(),
            _pointer(teacher),
            _pointer(uniforms),
            inverse_temperature if uniforms is not None else 0.0,
            _pointer(logits),
            _pointer(classes),
        )
        if status != 0:
            raise MemoryError("the native decoding kernel could not allocate its scratch memory")
        return logits if teacher is not None else classes

"""The binding of the native per-sample decoding step (``fastgen.c``, built when the package is installed).

At small batch sizes a cached WaveNet step is a few dozen tiny matrix-vector products, so
dispatching them one by one from Python costs far more than the arithmetic (about 5 us per torch
op against well under 1 us of work). The C kernel runs whole chunks of steps in one call.

It is plain C (no Python or torch headers), compiled by the package build (``setup.py``) into
``_fastgen*.so`` beside this file, and loaded here with :mod:`ctypes`. Nothing is compiled at run
time. If the package was installed without it (no C compiler at install time),
:func:`load_library` returns ``None`` and :mod:`timbre.generation.engine` uses its torch stepper.

The ctypes structures below mirror the C ones field by field; :func:`load_library` checks their
sizes and the ABI version against the library's own before using it.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import mmap
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from timbre.generation.folded import quantize_int8

if TYPE_CHECKING:
    from timbre.generation.folded import FoldedWeights

# Must match TIMBRE_FASTGEN_ABI in fastgen.c (bumped with any change of its structures or signature).
ABI_VERSION = 6

# Status codes of timbre_fastgen_run, as in fastgen.c.
_STATUS_MESSAGES = {
    1: "the native decoding kernel could not allocate its scratch memory",
    2: "the native decoding kernel was given sizes out of range",
    3: "the native decoding kernel was given a missing buffer",
}

# weight_format of timbre_decoder: the dtype of the packed matrices.
WEIGHT_FORMATS = {torch.float32: 0, torch.bfloat16: 1, torch.int8: 2}
# The dtype of the buffer holding the packed matrices of each format (int8 panels start with their
# float32 scales, so they are stored as bytes).
_BUFFER_DTYPES = {torch.float32: torch.float32, torch.bfloat16: torch.bfloat16, torch.int8: torch.uint8}

_pointer_type = ctypes.POINTER(ctypes.c_float)


class _Layer(ctypes.Structure):
    """``timbre_layer``."""

    _fields_ = [
        ("dilation", ctypes.c_int64),
        ("dilated", ctypes.c_void_p),
        ("source", ctypes.c_void_p),
        ("skip_residual", ctypes.c_void_p),
        ("skip_residual_bias", _pointer_type),
    ]


class _Decoder(ctypes.Structure):
    """``timbre_decoder``."""

    _fields_ = [
        ("residual", ctypes.c_int64),
        ("skip", ctypes.c_int64),
        ("kernel", ctypes.c_int64),
        ("layers", ctypes.c_int64),
        ("classes", ctypes.c_int64),
        ("weight_format", ctypes.c_int64),
        ("start_weight", _pointer_type),
        ("start_bias", _pointer_type),
        ("skip_start", ctypes.c_void_p),
        ("skip_bias", _pointer_type),
        ("hidden", ctypes.c_void_p),
        ("logits", ctypes.c_void_p),
        ("logits_bias", _pointer_type),
        ("layer", ctypes.POINTER(_Layer)),
        ("source_harmonics", ctypes.c_int64),
    ]


class _State(ctypes.Structure):
    """``timbre_state``."""

    _fields_ = [
        ("batch", ctypes.c_int64),
        ("input_ring", _pointer_type),
        ("layer_ring", ctypes.POINTER(_pointer_type)),
        ("inputs", _pointer_type),
        ("layer_bias", _pointer_type),
        ("output_bias", _pointer_type),
        ("source_cycles", ctypes.POINTER(ctypes.c_double)),
    ]


class NativeLibrary:
    """The loaded kernel: its entry point and the panel width its packed matrices use."""

    def __init__(self, library: ctypes.CDLL, panel: int) -> None:
        self.run = library.timbre_fastgen_run
        self.run.restype = ctypes.c_int
        self.run.argtypes = [
            ctypes.POINTER(_Decoder),
            ctypes.POINTER(_State),
            ctypes.c_int64,  # first step
            ctypes.c_int64,  # steps
            ctypes.c_int64,  # threads
            ctypes.c_void_p,  # teacher inputs or NULL
            ctypes.c_void_p,  # uniforms or NULL
            ctypes.c_float,  # inverse temperature
            ctypes.c_void_p,  # logits out or NULL
            ctypes.c_void_p,  # classes out or NULL
        ]
        self.panel = panel


_lock = threading.Lock()
_loaded: NativeLibrary | None = None
_reason: str | None = None
_tried = False


def library_path() -> Path | None:
    """The built kernel beside this module (``_fastgen`` plus this interpreter's extension suffix)."""
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f"_fastgen{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _open(path: Path) -> NativeLibrary:
    """Load the library at ``path`` and check that it is the one this module was written for."""
    library = ctypes.CDLL(str(path))
    sizes = library.timbre_fastgen_sizes
    sizes.restype = ctypes.c_int
    sizes.argtypes = [ctypes.POINTER(ctypes.c_int64)] * 4
    layer, decoder, state, panel = (ctypes.c_int64() for _ in range(4))
    version = sizes(ctypes.byref(layer), ctypes.byref(decoder), ctypes.byref(state), ctypes.byref(panel))
    expected = (ABI_VERSION, ctypes.sizeof(_Layer), ctypes.sizeof(_Decoder), ctypes.sizeof(_State))
    found = (version, layer.value, decoder.value, state.value)
    if found != expected:
        raise OSError(
            f"{path.name} does not match this package (ABI version and structure sizes {found}, expected "
            f"{expected}): reinstall timbre"
        )
    return NativeLibrary(library, panel.value)


def load_library() -> NativeLibrary | None:
    """The native kernel built at install; ``None`` (see :func:`unavailable_reason`) if there is none.

    Safe to call from several threads at once: all of them get the same library.
    """
    global _loaded, _reason, _tried
    with _lock:
        if not _tried:
            path = library_path()
            if path is None:
                _reason = "timbre was installed without its compiled kernel (no C compiler at install time?)"
            else:
                try:
                    _loaded = _open(path)
                except (OSError, AttributeError) as error:  # AttributeError: a symbol is missing
                    _reason = f"{path.name} could not be loaded: {error}"
            _tried = True
        return _loaded


def unavailable_reason() -> str | None:
    """Why :func:`load_library` returned ``None``."""
    return _reason


def default_threads(batch: int) -> int:
    """Threads for the kernel: one per note, up to ``torch.get_num_threads()``.

    Several notes: each thread takes a group of notes, which needs no synchronisation within a
    step. One note: one thread. Splitting its products across threads (``threads=2`` explicitly)
    means two barriers per layer and sample; on a busy machine a thread waiting at one may lose
    its core for a scheduler time slice: on the 2-core development machine, busy with other
    jobs, that made NSynth-size decoding 3 to 20 times slower than one thread.
    """
    return max(1, min(torch.get_num_threads(), batch))


def _in_one_buffer(tensors: Iterable[torch.Tensor], sizes: list[int], dtype: torch.dtype) -> list[torch.Tensor]:
    """Copies of ``tensors`` (``sizes`` elements each) as ``dtype`` in one buffer, each 64-byte aligned.

    The buffer is anonymous memory advised to use transparent huge pages where the OS allows:
    streaming NSynth's 236 MB of weights per sample through 4 KiB pages costs ~60,000 TLB misses;
    huge pages made that step about 10% faster in paired measurements here.
    """
    item = torch.empty(0, dtype=dtype).element_size()
    align = 64 // item
    slots = [-(-size // align) * align for size in sizes]
    huge_page = 2 << 20
    length = -(-max(item * sum(slots), 1) // huge_page) * huge_page
    region = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            region.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # advice only
            pass
    buffer = torch.frombuffer(region, dtype=dtype)  # keeps the mapping alive
    copies, offset = [], 0
    for tensor, size, slot in zip(tensors, sizes, slots, strict=True):
        if tensor.numel() != size:
            raise ValueError(f"packed weight of {tensor.numel()} values where the kernel's layout has {size}")
        copies.append(buffer[offset : offset + size].view(tensor.shape).copy_(tensor))
        offset += slot
    return copies


def packed_size(rows: int, width: int, segments: int, weight_dtype: torch.dtype) -> int:
    """Elements of :func:`packed_matrix`'s result for a ``[rows, width]`` matrix of ``segments`` segments."""
    in_pairs = segments * 2 * -(-rows // segments // 2)  # inputs, each segment rounded up to whole pairs
    if weight_dtype == torch.bfloat16:
        return in_pairs * width
    if weight_dtype == torch.int8:
        return width * 4 + in_pairs * width  # bytes: a float32 scale per column, an int8 per weight
    return rows * width


def packed_matrix(matrix: torch.Tensor, segments: int, panel: int, weight_dtype: torch.dtype) -> torch.Tensor:
    """``matrix [inputs, outputs]`` in the kernel's layout for ``weight_dtype``, flat.

    ``outputs`` is a multiple of ``panel``; the inputs are ``segments`` equal runs (the taps of a
    dilated convolution). Layouts, as fastgen.c's ``panels_multiply_*`` read them:

    * float32: ``[panels, inputs, panel]``;
    * bfloat16: ``[panels, segments, pairs, panel, 2]``: inputs ``2k`` and ``2k+1`` of a segment
      side by side, an odd segment's last pair completed by a zero;
    * int8 (bytes): ``[panels, panel * 4 + segments * pairs * panel * 2]``: each panel's float32
      column scales, then its int8 weights (see :func:`~timbre.generation.folded.quantize_int8`)
      in the pairs of bfloat16's layout.
    """
    rows, width = matrix.shape
    panels = width // panel

    def in_pairs(values: torch.Tensor) -> torch.Tensor:  # [rows, width] -> [panels, segments * pairs * panel * 2]
        run = rows // segments
        pairs = -(-run // 2)
        runs = F.pad(values.reshape(segments, run, width), (0, 0, 0, 2 * pairs - run))
        return runs.reshape(segments, pairs, 2, panels, panel).permute(3, 0, 1, 4, 2).reshape(panels, -1)

    if weight_dtype == torch.bfloat16:
        return in_pairs(matrix).to(torch.bfloat16).reshape(-1)
    if weight_dtype == torch.int8:
        weights, scales = quantize_int8(matrix)
        panel_scales = scales.reshape(panels, panel).contiguous().view(torch.uint8)
        return torch.cat([panel_scales, in_pairs(weights).view(torch.uint8)], dim=1).reshape(-1)
    return matrix.reshape(rows, panels, panel).transpose(0, 1).reshape(-1)


def _float_pointer(tensor: torch.Tensor) -> ctypes._Pointer[ctypes.c_float]:
    return ctypes.cast(tensor.data_ptr(), _pointer_type)


def _address(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


class NativeStepper:
    """Owns the packed weights, ring buffers and per-frame biases of one batch for the C kernel.

    Args:
        library: from :func:`load_library`.
        weights: the decoder's folded step (CPU, float32).
        batch: notes decoded together.
        threads: OpenMP threads (1 disables threading); ``None`` picks with :func:`default_threads`.
        weight_dtype: ``torch.float32``; ``torch.bfloat16`` to store the matrices (not the start
            convolution or the biases) rounded to bfloat16, or ``torch.int8`` to store them as int8
            with a float32 scale per output column: a half or a quarter of the memory traffic per
            sample (see :func:`packed_matrix`).
    """

    def __init__(
        self,
        library: NativeLibrary,
        weights: FoldedWeights,
        batch: int,
        threads: int | None,
        weight_dtype: torch.dtype = torch.float32,
    ) -> None:
        if weight_dtype not in WEIGHT_FORMATS:
            raise ValueError(f"the native kernel stores weights as float32, bfloat16 or int8, not {weight_dtype}")
        residual, skip, classes = weights.residual_channels, weights.skip_channels, weights.classes
        kernel, layers, panel = weights.kernel_size, len(weights.dilations), library.panel
        self.library, self.batch, self.classes, self.residual = library, batch, classes, residual

        def padded(size: int) -> int:
            return -(-size // panel) * panel

        # Pre-activations are filter then gate side by side, padded as one width (2R).
        pad_r, pad_pre, pad_s, pad_c = padded(residual), padded(2 * residual), padded(skip), padded(classes)
        harmonics = weights.source_harmonics

        def columns(tensor: torch.Tensor, width: int) -> torch.Tensor:
            return F.pad(tensor, (0, width - tensor.shape[-1]))

        def packed(matrix: torch.Tensor, segments: int = 1) -> torch.Tensor:
            return packed_matrix(matrix, segments, panel, weight_dtype)

        shapes = [(residual, pad_s, 1), (skip, pad_s, 1), (skip, pad_c, 1)]
        layer_shapes = [(kernel * residual, pad_pre, kernel), (residual, pad_s + pad_r, 1)]
        layer_shapes += [(2 * harmonics, pad_pre, 1)] if harmonics else []
        shapes += layer_shapes * layers
        matrix_sizes = [packed_size(*shape, weight_dtype) for shape in shapes]
        vector_sizes = [kernel * residual, residual, pad_s, pad_c] + [pad_s + pad_r] * layers

        def matrices() -> Iterator[torch.Tensor]:  # one at a time to spare memory
            yield packed(columns(weights.skip_start_weight, pad_s))
            yield packed(columns(weights.hidden_weight, pad_s))
            yield packed(columns(weights.logits_weight, pad_c))
            zeros = torch.zeros(residual, residual)  # the last layer has no residual projection
            for layer in range(layers):
                residual_weight = weights.residual_weight[layer] if layer < layers - 1 else zeros
                yield packed(columns(weights.dilated_weight[layer], pad_pre), kernel)
                skip_then_residual = [columns(weights.skip_weight[layer], pad_s), columns(residual_weight, pad_r)]
                yield packed(torch.cat(skip_then_residual, dim=1))
                if harmonics:
                    yield packed(columns(weights.source_weight[layer], pad_pre))

        def vectors() -> Iterator[torch.Tensor]:
            yield weights.start_weight
            yield weights.start_bias
            yield columns(weights.skip_bias, pad_s)
            yield columns(weights.logits_bias, pad_c)
            for layer in range(layers):
                residual_bias = weights.residual_bias[layer] if layer < layers - 1 else torch.zeros(residual)
                yield torch.cat([torch.zeros(pad_s), columns(residual_bias, pad_r)])

        self._matrices = _in_one_buffer(matrices(), matrix_sizes, _BUFFER_DTYPES[weight_dtype])
        self._vectors = _in_one_buffer(vectors(), vector_sizes, torch.float32)
        skip_start, hidden, logits = (matrix.data_ptr() for matrix in self._matrices[:3])
        start_weight, start_bias, skip_bias, logits_bias = (_float_pointer(vector) for vector in self._vectors[:4])
        per_layer = len(layer_shapes)

        def layer(index: int, dilation: int) -> _Layer:
            dilated, skip_residual, *source = self._matrices[3 + per_layer * index : 3 + per_layer * (index + 1)]
            return _Layer(
                dilation,
                dilated.data_ptr(),
                source[0].data_ptr() if source else None,
                skip_residual.data_ptr(),
                _float_pointer(self._vectors[4 + index]),
            )

        self._layers = (_Layer * layers)(*(layer(index, dilation) for index, dilation in enumerate(weights.dilations)))
        self.source_cycles = torch.zeros(batch, dtype=torch.float64)  # per note; the engine sets them
        self._decoder = _Decoder(
            residual,
            skip,
            kernel,
            layers,
            classes,
            WEIGHT_FORMATS[weight_dtype],
            start_weight,
            start_bias,
            skip_start,
            skip_bias,
            hidden,
            logits,
            logits_bias,
            ctypes.cast(self._layers, ctypes.POINTER(_Layer)),
            harmonics,
        )

        self._input_ring = torch.zeros(kernel, batch)
        self._layer_rings = [
            torch.zeros((kernel - 1) * dilation + 1, batch, residual) for dilation in weights.dilations
        ]
        self._ring_pointers = (_pointer_type * layers)(*(_float_pointer(ring) for ring in self._layer_rings))
        self.layer_biases = torch.zeros(layers, batch, pad_pre)
        self.output_bias = torch.zeros(batch, pad_s)
        self.inputs = torch.zeros(batch)  # network input of the next step; 0.0 at time 0
        self._state = _State(
            batch,
            _float_pointer(self._input_ring),
            ctypes.cast(self._ring_pointers, ctypes.POINTER(_pointer_type)),
            _float_pointer(self.inputs),
            _float_pointer(self.layer_biases),
            _float_pointer(self.output_bias),
            ctypes.cast(self.source_cycles.data_ptr(), ctypes.POINTER(ctypes.c_double)),
        )
        self.threads = default_threads(batch) if threads is None else threads

    def set_frame(self, layer_biases: torch.Tensor, output_bias: torch.Tensor) -> None:
        """Biases of the current conditioning frame: ``[layers, batch, 2R]`` and ``[batch, S]``."""
        self.layer_biases[..., : layer_biases.shape[-1]] = layer_biases
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

        Raises MemoryError or ValueError with the kernel's reason if it refuses to run.
        """
        for name, given in (("teacher", teacher), ("uniforms", uniforms)):
            if given is not None and tuple(given.shape) != (steps, self.batch):
                raise ValueError(f"{name} must be [steps={steps}, batch={self.batch}], got {tuple(given.shape)}")
        if teacher is not None:
            teacher = teacher.to(torch.float32).contiguous()
            output = torch.empty(steps, self.batch, self.classes)
        else:
            output = torch.empty(steps, self.batch, dtype=torch.int64)
        logits, classes = (output, None) if teacher is not None else (None, output)
        if uniforms is not None:
            uniforms = uniforms.to(torch.float32).contiguous()
        status = self.library.run(
            ctypes.byref(self._decoder),
            ctypes.byref(self._state),
            start,
            steps,
            self.threads,
            _address(teacher),
            _address(uniforms),
            inverse_temperature if uniforms is not None else 0.0,
            _address(logits),
            _address(classes),
        )
        if status != 0:
            message = _STATUS_MESSAGES.get(status, f"the native decoding kernel failed with status {status}")
            raise (MemoryError if status == 1 else ValueError)(message)
        return output

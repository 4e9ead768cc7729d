"""Interpolation of timbre embeddings: lerp, slerp, N-way blends, 2-D grids, morphs over time.

Every function is pure: it takes embeddings and returns a new ``torch.Tensor``. An embedding is a
tensor ``[frames, dim]`` (``dim`` is the model's ``latent_dim``, one frame per 512 samples), or a
batch ``[..., frames, dim]``; numpy arrays and :class:`timbre.Embedding` objects (their ``tensor``)
are accepted and converted. Integer inputs become the
default float dtype; float64 stays float64.

Embeddings of different lengths are first brought to a common number of frames by :func:`align`.
The default, ``"stretch"``, resamples the shorter one linearly over time so that both start and end
together: NSynth-style notes share one layout (attack, hold, release), so stretching lines the attack
up with the attack and the release with the release.

Invalid inputs (shapes that do not fit, non-finite values, bad weights or curves) raise
:class:`timbre.errors.ConfigError`, whose message the CLI prints as one line.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from timbre.errors import ConfigError, InvalidTypeError

ArrayLike = torch.Tensor | np.ndarray
Mix = float | ArrayLike

ALIGN_MODES = ("stretch", "truncate", "pad")
METHODS = ("lerp", "slerp")
GRID_WEIGHTINGS = ("bilinear", "distance")
MORPH_CURVES = ("linear", "ease", "sigmoid")

# Steepness of the "sigmoid" morph curve: the logistic over [-5, 5], i.e. 99% of the change happens
# in the middle 90% of the note.
_SIGMOID_STEEPNESS = 10.0
# Iteration limit of the spherical mean; it converges in a handful of steps for sources within a
# hemisphere, and the limit only bounds pathological (near-antipodal) inputs.
_SPHERICAL_MEAN_MAX_STEPS = 64

__all__ = [
    "align",
    "lerp",
    "slerp",
    "blend",
    "grid",
    "grid_weights",
    "morph",
    "morph_curve",
]


def align(*embeddings: ArrayLike, mode: str = "stretch") -> tuple[torch.Tensor, ...]:
    """Bring embeddings to a common number of frames.

    Args:
        *embeddings: tensors or arrays ``[..., frames, dim]``; frames may differ.
        mode: ``"stretch"`` (default) resamples every shorter embedding to the longest length by
            linear interpolation over time, first and last frames kept exactly;
            ``"truncate"`` cuts every embedding to the shortest length (drops the end of longer
            notes); ``"pad"`` extends every shorter embedding to the longest length by repeating its
            last frame (a note's last frame is its decayed tail, the nearest thing to silence the
            encoder produced; a zero vector is not silence in a learned latent space).

    Returns:
        The embeddings as tensors ``[..., frames, dim]`` with one common ``frames``, in input order.
    """
    if mode not in ALIGN_MODES:
        raise ConfigError(f"alignment mode must be one of {', '.join(ALIGN_MODES)}, got {mode!r}")
    if not embeddings:
        raise ConfigError("align needs at least one embedding")
    tensors = [_as_embedding(x, f"embedding {i}") for i, x in enumerate(embeddings)]
    lengths = [x.shape[-2] for x in tensors]
    target = min(lengths) if mode == "truncate" else max(lengths)
    if mode == "stretch":
        return tuple(_stretch(x, target) for x in tensors)
    if mode == "truncate":
        return tuple(x[..., :target, :] for x in tensors)
    return tuple(_pad_with_last_frame(x, target) for x in tensors)


def lerp(a: ArrayLike, b: ArrayLike, t: Mix, *, alignment: str = "stretch") -> torch.Tensor:
    """Linear interpolation ``(1 - t) * a + t * b``.

    Args:
        a, b: embeddings ``[..., frames, dim]`` (frames aligned by ``alignment``, see :func:`align`;
            leading dims broadcast).
        t: mix, a float or a tensor broadcastable to ``[..., frames]`` (e.g. ``[frames]`` for a mix
            per frame, or ``[steps, 1]`` for a whole sweep at once). 0 gives ``a``, 1 gives ``b``.
            Values outside [0, 1] are refused, as are negative :func:`blend` weights: they
            extrapolate where the decoder has seen no data.

    Returns:
        ``[..., frames, dim]``, leading dims broadcast over ``a``, ``b`` and ``t``.
    """
    a, b = _prepare_pair(a, b, alignment)
    t = _as_mix(t, a, b)
    return (1 - t) * a + t * b


def slerp(a: ArrayLike, b: ArrayLike, t: Mix, *, alignment: str = "stretch") -> torch.Tensor:
    """Spherical interpolation, frame by frame: direction along the great circle, magnitude linear.

    For every frame, the direction of the result turns from ``a``'s direction to ``b``'s at constant
    angular speed (angle ``t * omega``, ``omega`` the angle between them) and its norm is
    ``(1 - t) * |a| + t * |b|``. Unlike :func:`lerp`, the middle of a sweep between two embeddings of
    similar norm does not shrink towards the origin.

    Degenerate frames are handled deterministically: if one vector is zero it takes the other's
    direction (so only the magnitude changes); parallel vectors keep their common direction; exactly
    opposite vectors turn through a fixed perpendicular direction.

    Args:
        a, b: embeddings ``[..., frames, dim]`` (frames aligned by ``alignment``; leading dims broadcast).
        t: mix in [0, 1] as in :func:`lerp`.

    Returns:
        ``[..., frames, dim]``.
    """
    a, b = _prepare_pair(a, b, alignment)
    t = _as_mix(t, a, b)
    norm_a = a.norm(dim=-1, keepdim=True)
    norm_b = b.norm(dim=-1, keepdim=True)
    unit_a, unit_b = _unit(a, norm_a), _unit(b, norm_b)
    zero_a, zero_b = norm_a == 0, norm_b == 0
    unit_a, unit_b = torch.where(zero_a, unit_b, unit_a), torch.where(zero_b, unit_a, unit_b)

    cosine = (unit_a * unit_b).sum(dim=-1, keepdim=True)
    # Kahan's formula: accurate for tiny and near-straight angles, where acos(cosine) is not.
    omega = 2 * torch.atan2((unit_a - unit_b).norm(dim=-1, keepdim=True), (unit_a + unit_b).norm(dim=-1, keepdim=True))
    # Unit vector orthogonal to unit_a in the plane of the two directions. For (nearly) parallel
    # frames it is noise, but weighted by sin(t * omega) ~ 0. For (nearly) opposite frames it is
    # noise weighted by ~1, so a fixed perpendicular gives the turning plane instead (any plane is
    # as good: the path between opposite directions is not unique).
    towards_b = unit_b - cosine * unit_a
    towards_b_norm = towards_b.norm(dim=-1, keepdim=True)
    opposite = (cosine < 0) & (towards_b_norm < torch.finfo(a.dtype).eps ** 0.5)
    towards_b = torch.where(opposite, _perpendicular(unit_a), _unit(towards_b, towards_b_norm))
    direction = torch.cos(t * omega) * unit_a + torch.sin(t * omega) * towards_b
    magnitude = ((1 - t) * norm_a + t * norm_b).clamp_min(0)
    return direction * magnitude


def blend(
    embeddings: Sequence[ArrayLike],
    weights: Sequence[float] | ArrayLike,
    *,
    method: str = "lerp",
    alignment: str = "stretch",
) -> torch.Tensor:
    """Weighted mix of N embeddings.

    Weights must be one per embedding, finite and non-negative with a positive sum; they are
    normalised to sum to 1. Negative weights are refused: they extrapolate outside the region
    spanned by the sources, where the decoder has seen no data (the same rule refuses a
    :func:`lerp` or :func:`slerp` mix outside [0, 1]).

    ``method="lerp"`` is the weighted sum, as NSynth and NSynth Super did. ``method="slerp"`` is
    the N-way generalisation of :func:`slerp`, frame by frame: the direction is the weighted
    spherical mean of the source directions (the point on the unit sphere minimising the weighted
    sum of squared angles to them, found by the fixed-point iteration of Buss & Fillmore, 2001,
    started from the normalised weighted sum of directions), and the magnitude is the weighted mean
    of the source magnitudes. Unlike pairwise iteration it does not depend on the order of the
    sources, and for two sources it equals :func:`slerp`. Zero vectors have no direction and only
    pull the magnitude; exactly opposite sources of equal weight have no unique mean.

    Args:
        embeddings: N >= 1 embeddings ``[..., frames, dim]`` (frames aligned by ``alignment``).
        weights: N numbers.
        method: ``"lerp"`` or ``"slerp"``.

    Returns:
        ``[..., frames, dim]``.
    """
    if isinstance(embeddings, (torch.Tensor, np.ndarray)):
        embeddings = list(embeddings)
    if len(embeddings) == 0:
        raise ConfigError("blend needs at least one embedding")
    _check_method(method)
    stack = _prepare_stack(embeddings, alignment)
    weights = _validate_weights(weights, len(embeddings)).to(stack)
    return _mix(stack, weights, method)


def grid_weights(n: int, weighting: str = "bilinear") -> torch.Tensor:
    """Corner weights of every point of an ``n`` x ``n`` grid over the unit square.

    Corners are ordered top-left, top-right, bottom-left, bottom-right, at (x, y) = (0, 0), (1, 0),
    (0, 1), (1, 1); point ``[row, col]`` sits at x = col / (n - 1), y = row / (n - 1).

    ``"bilinear"``: ``(1-x)(1-y), x(1-y), (1-x)y, xy``.
    ``"distance"``: NSynth Super's weights (open-nsynth-super, ``audio/workdir/utils.py``,
    ``get_weights``): ``max(0, 1 - d_i)`` for the Euclidean distance ``d_i`` to corner ``i``,
    normalised to sum 1. A linear cone around each corner rather than inverse distance: corners
    farther than 1 get no weight, so an edge midpoint mixes only its two corners, and the centre
    mixes all four equally.

    Returns:
        ``[n, n, 4]``, each row summing to 1 (float64, exact at the corners).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ConfigError(f"grid size must be an integer >= 2, got {n!r}")
    if weighting not in GRID_WEIGHTINGS:
        raise ConfigError(f"grid weighting must be one of {', '.join(GRID_WEIGHTINGS)}, got {weighting!r}")
    steps = torch.linspace(0, 1, n, dtype=torch.float64)
    y, x = torch.meshgrid(steps, steps, indexing="ij")
    if weighting == "bilinear":
        return torch.stack([(1 - x) * (1 - y), x * (1 - y), (1 - x) * y, x * y], dim=-1)
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    points = torch.stack([x, y], dim=-1)[..., None, :]  # [n, n, 1, 2]
    cones = (1 - (points - corners).norm(dim=-1)).clamp_min(0)  # every point is within 1/sqrt(2) of a corner
    return cones / cones.sum(dim=-1, keepdim=True)


def grid(
    corners: Sequence[ArrayLike],
    n: int,
    weighting: str = "bilinear",
    *,
    method: str = "lerp",
    alignment: str = "stretch",
) -> torch.Tensor:
    """An ``n`` x ``n`` grid of blends of four corner embeddings, like NSynth Super's pad.

    Args:
        corners: four embeddings ``[..., frames, dim]``: top-left, top-right, bottom-left,
            bottom-right (frames aligned by ``alignment``).
        n: points per side, >= 2; ``grid[0, 0]`` is the top-left corner, ``grid[0, n-1]`` the
            top-right, ``grid[n-1, 0]`` the bottom-left.
        weighting: ``"bilinear"`` or ``"distance"`` (NSynth Super), see :func:`grid_weights`.
        method: how each point mixes the corners, as in :func:`blend`.

    Returns:
        ``[n, n, ..., frames, dim]``.
    """
    if isinstance(corners, (torch.Tensor, np.ndarray)):
        corners = list(corners)
    if len(corners) != 4:
        raise ConfigError(
            f"grid needs 4 corner embeddings (top-left, top-right, bottom-left, bottom-right), got {len(corners)}"
        )
    _check_method(method)
    weights = grid_weights(n, weighting)
    stack = _prepare_stack(corners, alignment)
    points = weights.reshape(n * n, 4).T.to(stack)  # [4, n*n]
    mixed = _mix(stack, points, method)  # [n*n, ..., frames, dim]
    return mixed.reshape(n, n, *mixed.shape[1:])


def morph_curve(curve: str | ArrayLike, frames: int) -> torch.Tensor:
    """Mix per frame for a morph: 0 is all source, 1 all target.

    Args:
        curve: ``"linear"`` (constant speed), ``"ease"`` (smoothstep ``3u^2 - 2u^3``: starts and
            ends gently), ``"sigmoid"`` (logistic, most of the change around the middle of the note,
            rescaled to run exactly from 0 to 1), or an explicit 1-D tensor/array of ``frames``
            values in [0, 1].
        frames: number of frames.

    Returns:
        ``[frames]`` float64. Named curves are non-decreasing, from 0 at the first frame to 1 at the
        last.
    """
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ConfigError(f"morph needs a positive number of frames, got {frames!r}")
    if isinstance(curve, str):
        if curve not in MORPH_CURVES:
            raise ConfigError(
                f"morph curve must be one of {', '.join(MORPH_CURVES)} or a 1-D tensor of mix values, got {curve!r}"
            )
        u = torch.linspace(0, 1, frames, dtype=torch.float64)
        if curve == "linear":
            return u
        if curve == "ease":
            return u * u * (3 - 2 * u)
        logistic = torch.sigmoid(_SIGMOID_STEEPNESS * (u - 0.5))
        ends = torch.sigmoid(_SIGMOID_STEEPNESS * torch.tensor([-0.5, 0.5], dtype=torch.float64))
        return (logistic - ends[0]) / (ends[1] - ends[0])
    values = _as_float_tensor(curve, "morph curve").to(torch.float64)
    if values.shape != (frames,):
        raise ConfigError(
            f"morph curve must have one mix value per frame, shape ({frames},), got {tuple(values.shape)}"
        )
    if not torch.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ConfigError("morph curve values must be finite and within [0, 1]")
    return values


def morph(
    a: ArrayLike,
    b: ArrayLike,
    curve: str | ArrayLike = "linear",
    *,
    method: str = "lerp",
    alignment: str = "stretch",
) -> torch.Tensor:
    """Turn ``a`` into ``b`` across the time of one note: frame ``i`` mixes with ``curve[i]``.

    Args:
        a, b: embeddings ``[..., frames, dim]`` (frames aligned by ``alignment`` first).
        curve: a named curve or explicit per-frame mix values, see :func:`morph_curve`.
        method: ``"lerp"`` or ``"slerp"`` for each frame's mix.

    Returns:
        ``[..., frames, dim]``: the first frame from ``a``, the last from ``b`` for named curves.
    """
    _check_method(method)
    a, b = _prepare_pair(a, b, alignment)
    mix = morph_curve(curve, a.shape[-2])
    return (lerp if method == "lerp" else slerp)(a, b, mix)


# --- helpers -------------------------------------------------------------------------------------


def _as_float_tensor(x: object, name: str) -> torch.Tensor:
    tensor = getattr(x, "tensor", None)
    if isinstance(tensor, torch.Tensor):  # a timbre.Embedding
        x = tensor
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise InvalidTypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        x = torch.tensor(x)  # a copy: numpy arrays may be read-only (np.load with mmap)
    elif not isinstance(x, torch.Tensor):
        raise InvalidTypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise InvalidTypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _as_embedding(x: object, name: str) -> torch.Tensor:
    x = _as_float_tensor(x, name)
    if x.ndim < 2 or x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ConfigError(f"{name} must have shape [..., frames, dim] with frames and dim > 0, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ConfigError(f"{name} contains NaN or infinite values")
    return x


def _stretch(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``[..., f, dim]`` -> ``[..., frames, dim]`` by linear interpolation over time."""
    if x.shape[-2] == frames:
        return x
    lead, dim = x.shape[:-2], x.shape[-1]
    flat = x.reshape(-1, x.shape[-2], dim).transpose(1, 2)  # [batch, dim, f]: interpolate's layout
    # align_corners keeps the first and last frames exactly: the note's onset and its end.
    out = F.interpolate(flat, size=frames, mode="linear", align_corners=True)
    return out.transpose(1, 2).reshape(*lead, frames, dim)


def _pad_with_last_frame(x: torch.Tensor, frames: int) -> torch.Tensor:
    missing = frames - x.shape[-2]
    if missing == 0:
        return x
    tail = x[..., -1:, :].expand(*x.shape[:-2], missing, x.shape[-1])
    return torch.cat([x, tail], dim=-2)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"interpolation method must be one of {', '.join(METHODS)}, got {method!r}")


def _prepare_pair(a: ArrayLike, b: ArrayLike, alignment: str) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = align(a, b, mode=alignment)
    if a.shape[-1] != b.shape[-1]:
        raise ConfigError(
            f"embeddings have different sizes: {a.shape[-1]} vs {b.shape[-1]} "
            f"(shapes {tuple(a.shape)} and {tuple(b.shape)})"
        )
    _check_broadcast(a.shape, b.shape)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def _prepare_stack(embeddings: Sequence[ArrayLike], alignment: str) -> torch.Tensor:
    """N embeddings -> one tensor ``[N, ..., frames, dim]`` (aligned, leading dims broadcast)."""
    tensors = align(*embeddings, mode=alignment)
    dims = {x.shape[-1] for x in tensors}
    if len(dims) > 1:
        raise ConfigError(
            f"embeddings have different sizes: {sorted(dims)} (shapes {[tuple(x.shape) for x in tensors]})"
        )
    _check_broadcast(*(x.shape for x in tensors))
    dtype = tensors[0].dtype
    for x in tensors[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    return torch.stack(torch.broadcast_tensors(*(x.to(dtype) for x in tensors)))


def _check_broadcast(*shapes: torch.Size) -> None:
    try:
        torch.broadcast_shapes(*shapes)
    except RuntimeError:
        raise ConfigError(f"embedding shapes do not broadcast: {[tuple(s) for s in shapes]}") from None


def _as_mix(t: Mix, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mix value(s) as ``[..., frames, 1]`` in the embeddings' dtype, checked to broadcast."""
    if isinstance(t, (int, float, np.number)) and not isinstance(t, bool):
        t = torch.tensor(float(t), dtype=a.dtype, device=a.device)
    else:
        t = _as_float_tensor(t, "mix t").to(device=a.device, dtype=a.dtype)
    if not torch.isfinite(t).all():
        raise ConfigError("mix t must be finite")
    if ((t < 0) | (t > 1)).any():
        raise ConfigError(
            f"mix t must be within [0, 1] (0 is the first embedding, 1 the second), got values from "
            f"{float(t.min()):g} to {float(t.max()):g}"
        )
    t = t.unsqueeze(-1)
    try:
        torch.broadcast_shapes(t.shape, a.shape, b.shape)
    except RuntimeError:
        raise ConfigError(
            f"mix t of shape {tuple(t.shape[:-1])} does not broadcast to the "
            f"embeddings' [..., frames] = {tuple(a.shape[:-1])}"
        ) from None
    return t


def _validate_weights(weights: Sequence[float] | ArrayLike, count: int) -> torch.Tensor:
    if isinstance(weights, (torch.Tensor, np.ndarray)):
        values = _as_float_tensor(weights, "weights").to(torch.float64)
    else:
        try:
            values = torch.tensor([float(w) for w in weights], dtype=torch.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"weights must be numbers, got {weights!r}") from None
    if values.shape != (count,):
        raise ConfigError(f"need one weight per embedding: {count} embeddings, weights of shape {tuple(values.shape)}")
    if not torch.isfinite(values).all():
        raise ConfigError(f"weights must be finite, got {values.tolist()}")
    if (values < 0).any():
        raise ConfigError(
            f"weights must be non-negative (negative weights extrapolate beyond the sources), got {values.tolist()}"
        )
    total = values.sum()
    if total <= 0:
        raise ConfigError(f"weights must not all be zero, got {values.tolist()}")
    return values / total


def _mix(stack: torch.Tensor, weights: torch.Tensor, method: str) -> torch.Tensor:
    """Blend ``stack`` ``[N, ..., frames, dim]`` with ``weights`` ``[N, *points]`` (each summing to 1).

    Returns ``[*points, ..., frames, dim]``: one blend per column of weights.
    """
    points = weights.shape[1:]
    # [N, *points, 1, ..., 1] against [N, 1, ..., 1, ..., frames, dim]
    w = weights.reshape(*weights.shape, *([1] * (stack.ndim - 1)))
    x = stack.reshape(stack.shape[0], *([1] * len(points)), *stack.shape[1:])
    if method == "lerp":
        return (w * x).sum(dim=0)
    norms = x.norm(dim=-1, keepdim=True)
    units = _unit(x, norms)
    # Zero vectors have no direction: they weigh on the magnitude only.
    direction_weights = w * (norms > 0)
    direction = _spherical_mean(units, direction_weights)
    return direction * (w * norms).sum(dim=0)


def _spherical_mean(units: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted spherical (Karcher) mean of unit vectors, per frame.

    Args:
        units: ``[N, ..., dim]`` unit vectors (or zero rows, which must have weight 0).
        weights: ``[N, ..., 1]`` non-negative, broadcastable to ``units``.

    Returns:
        ``[..., dim]`` unit vectors (zero where all weights are 0).
    """
    total = weights.sum(dim=0, keepdim=True)
    weights = weights / total.clamp_min(torch.finfo(units.dtype).tiny)
    start = (weights * units).sum(dim=0)
    start_norm = start.norm(dim=-1, keepdim=True)
    # If the weighted directions cancel out, start from the heaviest source instead.
    heaviest = torch.gather(
        units.expand(*torch.broadcast_shapes(units.shape, weights.shape)),
        0,
        weights.argmax(dim=0, keepdim=True).expand(1, *start.shape),
    ).squeeze(0)
    eps = torch.finfo(units.dtype).eps
    mean = torch.where(start_norm > eps, _unit(start, start_norm), heaviest)
    tolerance = 16 * eps
    for _ in range(_SPHERICAL_MEAN_MAX_STEPS):
        # Log map of every source at the current mean: tangent vectors of length = angle.
        cosine = (units * mean).sum(dim=-1, keepdim=True)
        tangent = units - cosine * mean
        sine = tangent.norm(dim=-1, keepdim=True)
        angle = torch.atan2(sine, cosine)
        step = (weights * tangent * (angle / sine.clamp_min(eps))).sum(dim=0)
        length = step.norm(dim=-1, keepdim=True)
        # Exp map: walk along the great circle in the direction of the mean tangent vector.
        mean = torch.cos(length) * mean + torch.sin(length) * _unit(step, length)
        mean = _unit(mean, mean.norm(dim=-1, keepdim=True))
        if length.max() <= tolerance:
            break
    return mean * (total.squeeze(0) > 0)


def _unit(x: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """``x / norm``, with zero where the norm is zero."""
    return torch.where(norm > 0, x / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(x))


def _perpendicular(unit: torch.Tensor) -> torch.Tensor:
    """A fixed unit vector orthogonal to each ``unit`` ``[..., dim]`` (dim >= 2)."""
    # The basis vector least aligned with `unit`, minus its projection: never degenerate.
    axis = unit.abs().argmin(dim=-1, keepdim=True)
    basis = torch.zeros_like(unit).scatter_(-1, axis, 1.0)
    perpendicular = basis - torch.gather(unit, -1, axis) * unit
    return _unit(perpendicular, perpendicular.norm(dim=-1, keepdim=True))

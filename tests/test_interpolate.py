"""Tests of timbre.interpolate: endpoints, geometry of slerp, weight validation, grids, morphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timbre import interpolate
from timbre.errors import ConfigError

FRAMES, DIM = 20, 16


def embedding(seed: int, frames: int = FRAMES) -> torch.Tensor:
    return torch.randn(frames, DIM, generator=torch.Generator().manual_seed(seed))


def angle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    cosine = (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1))
    return torch.acos(cosine.clamp(-1, 1))


@pytest.mark.parametrize("function", [interpolate.lerp, interpolate.slerp])
def test_endpoints_reproduce_inputs(function):
    a, b = embedding(0), embedding(1)
    torch.testing.assert_close(function(a, b, 0.0), a)
    torch.testing.assert_close(function(a, b, 1.0), b)


def test_lerp_midpoint_and_numpy_input():
    a, b = embedding(0), embedding(1)
    mid = interpolate.lerp(a.numpy(), b.numpy(), 0.5)
    assert isinstance(mid, torch.Tensor)
    torch.testing.assert_close(mid, (a + b) / 2)


def test_slerp_interpolates_magnitude_linearly_and_angle_uniformly():
    a, b = embedding(0), 3 * embedding(1)
    for t in (0.25, 0.5, 0.8):
        mixed = interpolate.slerp(a, b, t)
        torch.testing.assert_close(mixed.norm(dim=-1), (1 - t) * a.norm(dim=-1) + t * b.norm(dim=-1))
        torch.testing.assert_close(angle(a, mixed), t * angle(a, b), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(angle(mixed, b), (1 - t) * angle(a, b), atol=1e-5, rtol=1e-4)


def test_slerp_degenerate_frames_are_finite_and_sensible():
    a = embedding(0, frames=4)
    zero = torch.zeros_like(a)
    # A zero source has no direction: the other's direction is kept, only the norm changes.
    torch.testing.assert_close(interpolate.slerp(zero, a, 0.25), 0.25 * a)
    torch.testing.assert_close(interpolate.slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel
    assert torch.equal(interpolate.slerp(zero, zero, 0.5), zero)
    opposite = interpolate.slerp(a, -a, 0.5)  # antiparallel: turns through a perpendicular
    assert torch.isfinite(opposite).all()
    torch.testing.assert_close(opposite.norm(dim=-1), a.norm(dim=-1))
    torch.testing.assert_close((opposite * a).sum(-1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(interpolate.slerp(a, -a, 1.0), -a)


def test_mix_tensor_gives_a_whole_sweep_at_once():
    a, b = embedding(0), embedding(1)
    steps = torch.linspace(0, 1, 5)
    sweep = interpolate.slerp(a, b, steps[:, None])
    assert sweep.shape == (5, FRAMES, DIM)
    torch.testing.assert_close(sweep[2], interpolate.slerp(a, b, 0.5))
    with pytest.raises(ConfigError, match="broadcast"):
        interpolate.lerp(a, b, torch.zeros(FRAMES + 1))


def test_blend_one_hot_returns_that_embedding():
    sources = [embedding(i) for i in range(3)]
    for method in ("lerp", "slerp"):
        torch.testing.assert_close(interpolate.blend(sources, [0, 2.0, 0], method=method), sources[1])


def test_blend_normalises_weights_and_slerp_blend_matches_pairwise_slerp():
    a, b, c = embedding(0), embedding(1), embedding(2)
    torch.testing.assert_close(interpolate.blend([a, b, c], [2, 6, 0]), interpolate.lerp(a, b, 0.75))
    torch.testing.assert_close(
        interpolate.blend([a, b, c], [2, 6, 0], method="slerp"), interpolate.slerp(a, b, 0.75), atol=1e-5, rtol=1e-5
    )


def test_slerp_blend_ignores_source_order_and_keeps_mean_magnitude():
    sources = [embedding(i) for i in range(4)]
    weights = [0.1, 0.2, 0.3, 0.4]
    forward = interpolate.blend(sources, weights, method="slerp")
    backward = interpolate.blend(sources[::-1], weights[::-1], method="slerp")
    torch.testing.assert_close(forward, backward, atol=1e-5, rtol=1e-5)
    mean_norm = sum(w * s.norm(dim=-1) for w, s in zip(weights, sources))
    torch.testing.assert_close(forward.norm(dim=-1), mean_norm)


@pytest.mark.parametrize(
    "weights, message",
    [
        ([1.0, 2.0], "one weight per embedding"),
        ([1.0, float("nan"), 1.0], "finite"),
        ([1.0, -0.5, 1.0], "non-negative"),
        ([0.0, 0.0, 0.0], "not all be zero"),
        (["a", 1, 1], "numbers"),
    ],
)
def test_blend_rejects_bad_weights(weights, message):
    with pytest.raises(ConfigError, match=message):
        interpolate.blend([embedding(i) for i in range(3)], weights)


def test_shape_errors_are_config_errors():
    with pytest.raises(ConfigError, match="different sizes"):
        interpolate.lerp(embedding(0), torch.zeros(FRAMES, DIM + 1), 0.5)
    with pytest.raises(ConfigError, match=r"\[..., frames, dim\]"):
        interpolate.slerp(torch.zeros(DIM), torch.zeros(DIM), 0.5)
    with pytest.raises(ConfigError, match="NaN"):
        interpolate.lerp(torch.full((FRAMES, DIM), float("nan")), embedding(0), 0.5)
    with pytest.raises(ConfigError, match="method"):
        interpolate.blend([embedding(0)], [1.0], method="cubic")


@pytest.mark.parametrize("weighting", ["bilinear", "distance"])
@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_grid_corners_reproduce_corners(weighting, method):
    corners = [embedding(i) for i in range(4)]
    points = interpolate.grid(corners, 4, weighting, method=method)
    assert points.shape == (4, 4, FRAMES, DIM)
    torch.testing.assert_close(points[0, 0], corners[0])
    torch.testing.assert_close(points[0, -1], corners[1])
    torch.testing.assert_close(points[-1, 0], corners[2])
    torch.testing.assert_close(points[-1, -1], corners[3])


def test_grid_weights_follow_bilinear_and_nsynth_super_formulas():
    bilinear = interpolate.grid_weights(3, "bilinear")
    distance = interpolate.grid_weights(3, "distance")
    assert bilinear.shape == distance.shape == (3, 3, 4)
    torch.testing.assert_close(bilinear.sum(-1), torch.ones(3, 3, dtype=torch.float64))
    torch.testing.assert_close(distance.sum(-1), torch.ones(3, 3, dtype=torch.float64))
    # Top edge midpoint: both weightings mix only the two top corners, equally.
    expected_edge = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(bilinear[0, 1], expected_edge)
    torch.testing.assert_close(distance[0, 1], expected_edge)
    # NSynth Super's cones max(0, 1 - distance): at (x, y) = (0.25, 0) the far corners are out of
    # reach and the near ones weigh 0.75 : 0.25.
    quarter = interpolate.grid_weights(5, "distance")[0, 1]
    torch.testing.assert_close(quarter, torch.tensor([0.75, 0.25, 0.0, 0.0], dtype=torch.float64))
    # ... whereas at (0.25, 0.25) the bottom-right corner (distance 1.06) is out of reach.
    inner = interpolate.grid_weights(5, "distance")[1, 1]
    assert inner[3] == 0 and inner[0] > inner[1] == inner[2] > 0
    with pytest.raises(ConfigError, match="grid size"):
        interpolate.grid_weights(1)


@pytest.mark.parametrize("curve", ["linear", "ease", "sigmoid"])
def test_morph_moves_monotonically_from_a_to_b(curve):
    a, b = embedding(0), embedding(1)
    morphed = interpolate.morph(a, b, curve)
    torch.testing.assert_close(morphed[0], a[0])
    torch.testing.assert_close(morphed[-1], b[-1])
    mix = interpolate.morph_curve(curve, FRAMES)
    assert (mix.diff() >= 0).all() and mix[0] == 0 and mix[-1] == 1
    # Per frame, the morph sits at fraction mix of the way from a to b.
    fraction = ((morphed - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1)
    torch.testing.assert_close(fraction, mix.float(), atol=1e-5, rtol=1e-5)


def test_morph_with_explicit_curve_and_slerp():
    a, b = embedding(0), embedding(1)
    values = torch.rand(FRAMES, generator=torch.Generator().manual_seed(3))
    morphed = interpolate.morph(a, b, values, method="slerp")
    torch.testing.assert_close(morphed, interpolate.slerp(a, b, values))
    with pytest.raises(ConfigError, match="one mix value per frame"):
        interpolate.morph(a, b, torch.rand(FRAMES - 1))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        interpolate.morph(a, b, torch.full((FRAMES,), 1.5))
    with pytest.raises(ConfigError, match="curve"):
        interpolate.morph(a, b, "bounce")


def test_align_modes():
    ramp = torch.arange(4.0)[:, None].repeat(1, DIM)  # frame i holds the value i
    long = torch.zeros(7, DIM)
    stretched, same = interpolate.align(ramp, long)
    assert stretched.shape == (7, DIM) and torch.equal(same, long)
    torch.testing.assert_close(stretched[:, 0], torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]))
    truncated = interpolate.align(ramp, long, mode="truncate")
    assert [x.shape[0] for x in truncated] == [4, 4]
    padded, _ = interpolate.align(ramp, long, mode="pad")
    torch.testing.assert_close(padded[:, 0], torch.tensor([0.0, 1, 2, 3, 3, 3, 3]))
    # Batched embeddings are stretched along frames only.
    batch = torch.stack([ramp, 2 * ramp])
    assert interpolate.align(batch, long)[0].shape == (2, 7, DIM)
    with pytest.raises(ConfigError, match="alignment mode"):
        interpolate.align(ramp, long, mode="loop")


def test_operations_align_different_lengths():
    a, b = embedding(0, frames=10), embedding(1, frames=25)
    assert interpolate.slerp(a, b, 0.5).shape == (25, DIM)
    assert interpolate.blend([a, b], [1, 1], alignment="truncate").shape == (10, DIM)
    assert interpolate.grid([a, b, a, b], 2).shape == (2, 2, 25, DIM)
    torch.testing.assert_close(interpolate.morph(a, b)[-1], b[-1])


def test_float64_inputs_stay_float64():
    a = np.random.default_rng(0).normal(size=(FRAMES, DIM))
    b = np.random.default_rng(1).normal(size=(FRAMES, DIM))
    assert interpolate.slerp(a, b, 0.3).dtype == torch.float64
    assert interpolate.blend([a, b], [1, 3], method="slerp").dtype == torch.float64


@pytest.mark.parametrize("function", [interpolate.lerp, interpolate.slerp])
@pytest.mark.parametrize("t", [1.5, -0.1, torch.tensor([0.0, 0.5, 2.0])[:, None]])
def test_mixes_outside_zero_one_are_refused_like_negative_blend_weights(function, t):
    a, b = torch.randn(4, 16), torch.randn(4, 16)
    with pytest.raises(ConfigError, match=r"mix t must be within \[0, 1\]"):
        function(a, b, t)
    with pytest.raises(ConfigError, match="non-negative"):
        interpolate.blend([a, b], [1.5, -0.5])


def test_wrong_types_are_type_errors():
    from timbre.errors import InvalidTypeError

    with pytest.raises(InvalidTypeError):
        interpolate.lerp("a", torch.randn(4, 16), 0.5)
    with pytest.raises(TypeError):
        interpolate.slerp(torch.randn(4, 16), np.array([["x"] * 16] * 4), 0.5)

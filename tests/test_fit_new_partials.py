"""``trainer.fit_new_partials``: half-integer partials fitted to data before training starts."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from test_warm_start import small_autoencoder

from timbre.errors import ConfigError
from timbre.models import dsp
from timbre.models.registry import model_from_spec
from timbre.train.finetune import load_base
from timbre.train.fit_new_partials import fit_half_integer_partials, inverse_exp_sigmoid
from timbre.train.loop import TrainerSettings
from timbre.train.warm_start import widened_state

SAMPLE_RATE = 16000


def tone(pitch: int, octave_below: bool, n_samples: int = 8192) -> torch.Tensor:
    """``[n_samples]`` 1/k harmonics of ``pitch``; with ``octave_below``, a partial at half the pitch
    twice as loud as the fundamental (a drawbar organ's 16' stop)."""
    t = torch.arange(n_samples) / SAMPLE_RATE
    f0 = dsp.midi_to_hz(float(pitch))
    audio = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 9))
    if octave_below:
        audio = audio + 2.0 * torch.sin(math.pi * f0 * t)
    return 0.1 * audio


def octave_below_db(model: torch.nn.Module, audio: torch.Tensor, pitch: int) -> float:
    """The decoder's weight on partial 0.5 against partial 1, in dB, averaged over the frames."""
    with torch.no_grad():
        distribution = model.decoder.controls(model.encode(audio[None]), torch.tensor([pitch]))["harmonic_distribution"]
    return 20 * math.log10(float(distribution[0, :, 0].mean() / distribution[0, :, 1].mean()))


def grown_default_model() -> torch.nn.Module:
    """Version 4 of the default model grown by two half-integer partials, their output rows at zero."""
    spec, weights, path = load_base("fast-v4")
    spec = copy.deepcopy(spec)
    spec["settings"]["decoder"]["n_subharmonics"] = 2
    model = model_from_spec(spec)
    model.load_state_dict(widened_state(model, weights, path))
    return model


def test_inverse_exp_sigmoid_inverts_it():
    x = torch.linspace(-4, 4, 9, dtype=torch.float64)
    torch.testing.assert_close(inverse_exp_sigmoid(dsp.exp_sigmoid(x)), x)


def test_fitted_rows_give_the_octave_below_to_the_notes_that_have_one():
    model = grown_default_model()
    pitches = [50, 52, 55, 57, 59, 60, 62, 64]
    dataset = [{"audio": tone(p, below), "pitch": torch.tensor(p)} for p in pitches for below in (False, True)]
    organ, plain = tone(58, True), tone(58, False)
    assert octave_below_db(model, organ, 58) == pytest.approx(octave_below_db(model, plain, 58), abs=3.0)

    summary = fit_half_integer_partials(model, dataset, n_examples=len(dataset), batch_size=4)
    with pytest.raises(ConfigError, match="not the zeros a warm start leaves"):
        fit_half_integer_partials(model, dataset, n_examples=4)  # would overwrite the fitted rows
    assert summary.startswith("half-integer partials fitted on 16 crops")
    assert model.training  # left as it was
    # An unseen pitch: the tone with an octave below gets it, about 6 dB over partial 1 as in the
    # audio; the one without gets it far quieter.
    assert octave_below_db(model, organ, 58) > -6.0
    assert octave_below_db(model, organ, 58) > octave_below_db(model, plain, 58) + 20.0


def test_fitting_needs_half_integer_partials_and_a_warm_start():
    with pytest.raises(ConfigError, match="n_subharmonics > 0"):
        fit_half_integer_partials(small_autoencoder(latent_dim=4), [], n_examples=4)
    with pytest.raises(ConfigError, match="set init_from"):
        TrainerSettings.from_config({"fit_new_partials": 16})
    with pytest.raises(ConfigError, match="fit_new_partials must be >= 0"):
        TrainerSettings.from_config({"fit_new_partials": -1, "init_from": "fast-v4"})


def test_silent_frames_are_left_out_of_the_fit():
    model = grown_default_model()
    half_silent = [
        {"audio": torch.cat([tone(pitch, True, 4096), torch.zeros(4096)]), "pitch": torch.tensor(pitch)}
        for pitch in (50, 55, 60, 65)
    ]
    summary = fit_half_integer_partials(model, half_silent, n_examples=4)
    found = re.search(r"\(([\d,]+) sounding frames\)", summary)
    assert found is not None, summary
    frames = int(found.group(1).replace(",", ""))
    # 64 control frames a crop, 32 of them sounding, and up to 8 more that the 2,048-sample
    # analysis window still hears the note in; silent ones counted too would make 256.
    assert 4 * 32 <= frames <= 4 * 40

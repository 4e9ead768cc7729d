"""A decoder trained on the frozen encoder of a trained autoencoder: one latent space, two decoders.

``timbre-train experiment=wavenet_on_default data.root=DS`` trains the autoregressive WaveNet
decoder on the embeddings of the default (parallel) model's encoder, which stays exactly as the
base model learned it. A user then encodes a sound once and decodes the same embedding with
either decoder (``timbre decode z.npy --decoder wavenet``).

The ``encoder_from`` config section turns a training run into this:

- The encoder is the base model's (``encoder_from.base``: a bundled name, ``default`` included,
  or a checkpoint path), with its weights, frozen. The decoder is ``model.decoder`` from
  ``conf/model`` (any registered decoder; the experiment uses a WaveNet), its ``latent_dim`` and
  ``hop_length`` taken from the base's encoder, whatever the model config says. ``model.encoder``
  is not used; the run's ``config.yaml`` and checkpoints record the model that is trained (the
  base's encoder spec and the decoder's), so ``timbre.load(RUN_DIR)`` rebuilds it without Hydra.
- Each training note is encoded whole, as ``TimbreModel.encode`` encodes a sound at inference,
  and the frames of its crop are cut from that embedding: an encoder with context beyond the
  crop (the default's sees 0.5 s) gives edge frames on a crop that a whole note never has. The
  encoder is frozen, so each note is encoded once, at its first use, and its embedding kept in
  ``RUN_DIR/embeddings/`` for the rest of the run and its resumptions (``[frames, latent_dim]``
  float32 per note: 32 kB for a 4 s note at 64 dims, 0.5 GB for 15,000 notes).
- Crops start on frame boundaries; held-out notes are validated from their start, where decoding
  starts at inference, and (``valid_pitch``) decoded free-running from their embedding, their
  pitch tracked by PESTO: the ``pitch_accuracy`` column of ``metrics.csv`` (within 50 cents).

It resumes like any run (``timbre-train trainer.resume=RUN_DIR``). The fingerprint of the base's
encoder weights is recorded in the run (``run["encoder_from"]`` of every checkpoint) and checked
when the run resumes and when it ends.
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.utils.data import Dataset

from timbre.data import DataBundle
from timbre.data.nsynth import NoteDataset
from timbre.errors import CheckpointError, ConfigError, TimbreError, TimbreWarning
from timbre.io.audio import load_audio
from timbre.io.files import atomic_write
from timbre.models.autoencoder import Autoencoder
from timbre.models.decoder import WaveNetDecoder
from timbre.models.encoder import WaveNetEncoder
from timbre.models.parallel import HarmonicNoiseDecoder
from timbre.models.registry import DECODERS
from timbre.train.checkpoint import build_model, load_state
from timbre.train.distributed import init_distributed, shutdown
from timbre.train.loop import Trainer, TrainerSettings, TrainResult, describe_command, refuse_unknown_keys

# Seed of the sampling noise of the free-running validation decodes: the same noise every time,
# so the pitch accuracy of two validations differs by the weights only.
VALID_PITCH_SEED = 0
# Where a run keeps the embeddings of its notes, in its run directory.
EMBEDDINGS_DIR = "embeddings"


@dataclass
class EncoderFromSettings:
    """The ``encoder_from`` config section (see ``conf/experiment/wavenet_on_default.yaml``)."""

    base: str = "default"
    valid_pitch: bool = True

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> EncoderFromSettings:
        """Settings from the ``encoder_from`` config, checked.

        Raises:
            ConfigError: naming an unknown key or an invalid value.
        """
        refuse_unknown_keys("encoder_from", "a setting", cls, values)
        settings = cls(**values)
        if not isinstance(settings.base, str) or not settings.base:
            raise ConfigError(f"encoder_from.base must be a bundled model name or a checkpoint path, got {values}")
        if not isinstance(settings.valid_pitch, bool):
            raise ConfigError(f"encoder_from.valid_pitch must be true or false, got {settings.valid_pitch!r}")
        return settings


# ----------------------------------------------------------------------------- the model


def encoder_fingerprint(encoder: nn.Module) -> str:
    """SHA-256 of an encoder's weights (names, shapes, dtypes and bytes): equal iff the weights are."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def decoder_on_encoder_spec(base_spec: dict[str, Any], model_config: dict[str, Any]) -> dict[str, Any]:
    """The model spec of ``model_config``'s decoder on the base's encoder.

    Args:
        base_spec: the base autoencoder's spec (``{"family": "autoencoder", "settings": {...}}``).
        model_config: a resolved Hydra model config (``conf/model``); only its ``decoder`` is used.

    Returns:
        An autoencoder spec: the base's sample rate and encoder, the decoder of ``model_config``
        with the base encoder's ``latent_dim`` and ``hop_length``.

    Raises:
        ConfigError: ``model.decoder`` is missing or not a registered decoder.
    """
    decoder = dict(model_config.get("decoder") or {})
    target = decoder.pop("_target_", None)
    kind = next((k for k, cls in DECODERS.items() if f"{cls.__module__}.{cls.__qualname__}" == target), None)
    if kind is None:
        known = ", ".join(f"{cls.__module__}.{cls.__qualname__}" for cls in DECODERS.values())
        raise ConfigError(f"model.decoder._target_ {target!r} is not a registered decoder (known: {known})")
    base = base_spec["settings"]
    encoder = base["encoder"]
    decoder.update(latent_dim=encoder["latent_dim"], hop_length=encoder["hop_length"])
    return {
        "family": "autoencoder",
        "settings": {
            **{key: value for key, value in base.items() if key not in ("encoder", "decoder")},
            "encoder": dict(encoder),
            "decoder": {"kind": kind, **decoder},
        },
    }


class FrozenEncoderAutoencoder(Autoencoder):
    """An :class:`Autoencoder` whose decoder trains on given embeddings while the encoder stays frozen.

    Its weights are an Autoencoder's (same names): checkpoints load as a plain Autoencoder.

    Args:
        encoder, decoder, sample_rate: as in :class:`Autoencoder`; the encoder's weights never change.
        valid_pitch: in eval mode (the trainer's validation of the EMA weights), also decode each
            batch free-running and report ``pitch_accuracy``.
    """

    def __init__(
        self,
        encoder: WaveNetEncoder,
        decoder: WaveNetDecoder | HarmonicNoiseDecoder,
        sample_rate: int = 16000,
        valid_pitch: bool = False,
    ) -> None:
        super().__init__(encoder, decoder, sample_rate)
        self.encoder.requires_grad_(False)
        self.valid_pitch = valid_pitch

    def train(self, mode: bool = True) -> FrozenEncoderAutoencoder:
        """Set the decoder's mode; the encoder stays in eval mode, as it encodes at inference."""
        super().train(mode)
        self.encoder.eval()
        return self

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The decoder's loss on ``batch["audio"] [batch, samples]`` given ``batch["z"]
        [batch, latent_dim, samples // hop_length]`` (the frozen encoder's, from :class:`EncodedCrops`)
        and ``batch["pitch"] [batch]``; in eval mode with ``valid_pitch``, also ``pitch_accuracy``."""
        loss, metrics = self.decoder.reconstruction_loss(batch["audio"], batch["z"], batch["pitch"])
        if self.valid_pitch and not self.training:
            metrics["pitch_accuracy"] = self.free_running_pitch_accuracy(batch["z"], batch["pitch"])
        return loss, metrics

    @torch.no_grad()
    def free_running_pitch_accuracy(self, z: torch.Tensor, pitch: torch.Tensor) -> float:
        """Fraction of notes decoded from ``z [batch, latent_dim, frames]`` at ``pitch [batch]`` whose
        tracked pitch (PESTO, median over the sounding frames) is within 50 cents of ``pitch``."""
        from timbre.evaluation.metrics import pitch_scores  # deferred: PESTO loads only when validating

        generator = torch.Generator(device=z.device).manual_seed(VALID_PITCH_SEED)
        audio = self.decode(z, pitch, generator=generator)
        scores = pitch_scores(audio.float().cpu().numpy(), [int(p) for p in pitch], self.sample_rate)
        return float(np.mean([score.correct for score in scores]))


# ----------------------------------------------------------------------------- the data


class EncodedCrops(Dataset):
    """Crops of notes with the frames of the note's whole-note embedding that cover them.

    Each item is ``{"audio": [crop_samples], "z": [latent_dim, crop_samples // hop_length],
    "pitch": []}``. Crops start on frame boundaries (a multiple of ``hop_length`` and of the
    notes' own ``crop_hop``), at random as the notes draw them, or at the note's start.

    Args:
        notes: cropping notes (``crop_samples`` a multiple of the encoder's hop).
        encoder: a model holding the frozen encoder; notes are encoded as it encodes at inference
            (:meth:`timbre.synthesizer.TimbreModel.encode`), on the CPU.
        cache_dir: where each note's embedding is kept once computed (``.npy``), named by the
            note file's path, size and modification time: valid for this encoder only.
        from_start: every crop starts at its note's start (validation), instead of where the notes draw it.
    """

    def __init__(self, notes: NoteDataset, encoder: Autoencoder, cache_dir: Path, from_start: bool = False) -> None:
        from timbre.synthesizer import TimbreModel

        if notes.crop_samples is None:
            raise ConfigError(f"{notes.split_dir}: the decoder trains on crops: set data.crop_samples")
        hop = encoder.hop_length
        if notes.crop_samples % hop:
            raise ConfigError(f"data.crop_samples={notes.crop_samples} is not a multiple of the encoder's hop {hop}")
        self.notes = copy.copy(notes)  # its own crop_hop; the caller's dataset stays as it was
        self.notes.crop_hop = math.lcm(notes.crop_hop, hop)
        self.crop_samples = notes.crop_samples
        self.hop_length = hop
        self.cache_dir = Path(cache_dir)
        self.from_start = from_start
        self.encoder = TimbreModel(copy.deepcopy(encoder), name="frozen encoder")

    def __len__(self) -> int:
        return len(self.notes)

    def embedding(self, index: int, audio: np.ndarray) -> torch.Tensor:
        """The whole-note embedding ``[latent_dim, frames]`` of note ``index`` (waveform ``audio``)."""
        path = self.notes.audio_path(index)
        status = path.stat()
        key = hashlib.sha256(f"{path.resolve()}:{status.st_size}:{status.st_mtime_ns}".encode()).hexdigest()[:24]
        cached = self.cache_dir / f"{key}.npy"
        if cached.is_file():
            return torch.from_numpy(np.load(cached))
        with warnings.catch_warnings():
            # A silent or very short training note is encoded all the same, without a warning per note.
            warnings.simplefilter("ignore", TimbreWarning)
            tensor = self.encoder.encode(audio).tensor
        z = np.ascontiguousarray(tensor.T.numpy())
        with atomic_write(cached) as handle:
            np.save(handle, z)
        return torch.from_numpy(z)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        audio = load_audio(self.notes.audio_path(index), self.notes.sample_rate)
        start = 0 if self.from_start else self.notes.crop_start(index, audio)
        crop = np.zeros(self.crop_samples, dtype=np.float32)
        piece = audio[start : start + self.crop_samples]
        crop[: piece.shape[0]] = piece
        z = self.embedding(index, audio)
        first, frames = start // self.hop_length, self.crop_samples // self.hop_length
        z_crop = z[:, first : first + frames]
        if z_crop.shape[1] < frames:  # a note shorter than the crop: its last frame held, as synthesis pads
            z_crop = torch.cat([z_crop, z_crop[:, -1:].expand(-1, frames - z_crop.shape[1])], dim=1)
        return {
            "audio": torch.from_numpy(crop),
            "z": z_crop.contiguous(),
            "pitch": torch.tensor(int(self.notes.examples[index]["pitch"]), dtype=torch.long),
        }


def encoded_data(bundle: DataBundle, model: Autoencoder, cache_dir: Path) -> DataBundle:
    """``bundle``'s notes as :class:`EncodedCrops` of ``model``'s encoder (held-out notes from their start),
    their embeddings kept in ``cache_dir``."""
    for split, notes in (("train", bundle.train), ("valid", bundle.valid)):
        if notes is not None and not isinstance(notes, NoteDataset):
            raise ConfigError(f"encoder_from needs notes in the NSynth layout (data=nsynth); the {split} set is not")
    assert isinstance(bundle.train, NoteDataset)
    train = EncodedCrops(bundle.train, model, cache_dir)
    valid = (
        EncodedCrops(bundle.valid, model, cache_dir, from_start=True) if isinstance(bundle.valid, NoteDataset) else None
    )
    return DataBundle(train=train, valid=valid, artifacts=bundle.artifacts)


# ----------------------------------------------------------------------------- the run


def run_decoder_on_encoder(
    config: DictConfig, run_dir: Path | None, resume_state: dict[str, Any] | None
) -> TrainResult:
    """Train a decoder on a frozen encoder as ``config`` says (called by :func:`timbre.train.app.train`
    when ``encoder_from`` is set).

    Args:
        config: the composed config (the resumed run's own when resuming), with an ``encoder_from`` section.
        run_dir: output directory; defaults to Hydra's run dir.
        resume_state: the checkpoint to resume from, or None for a fresh decoder on the base's encoder.

    Raises:
        CheckpointError: the base is not an autoencoder, or a resumed run's encoder is not the one it started with.
        ConfigError: the decoder or the data do not fit.
    """
    from hydra.core.hydra_config import HydraConfig

    from timbre.train.app import _claim_config, _container, _warn_if_threads_differ, build_data, check_crops
    from timbre.train.finetune import load_base

    settings = EncoderFromSettings.from_config(_container(config.encoder_from))
    trainer_settings = TrainerSettings.from_config(_container(config.trainer))
    if trainer_settings.init_from and resume_state is None:
        raise ConfigError(
            "trainer.init_from does not combine with encoder_from: the encoder's weights come from "
            f"encoder_from.base ({settings.base}) and the decoder starts from scratch"
        )
    base_weights = None
    if resume_state is not None:  # every weight, the encoder's included, comes from the run's checkpoint
        spec = resume_state["model_config"]
        origin = dict(resume_state.get("run", {}).get("encoder_from") or {})
        source = str(resume_state["path"])
    else:
        base_spec, base_weights, base_path = load_base(settings.base)
        spec = decoder_on_encoder_spec(base_spec, _container(config.model))
        source = base_path
    with open_dict(config):
        # The model is the base's encoder and conf's decoder: config.yaml records what is trained.
        config.model = OmegaConf.create(spec)
    if run_dir is None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
    context = init_distributed(trainer_settings.resolved_device().type)
    try:
        torch.manual_seed(trainer_settings.seed)  # the decoder's initial weights
        check_crops(config.data, spec)
        built = build_model(spec, source)
        assert isinstance(built, Autoencoder)
        model = FrozenEncoderAutoencoder(built.encoder, built.decoder, built.sample_rate, settings.valid_pitch)
        if base_weights is not None:
            encoder_weights = {
                k.removeprefix("encoder."): v for k, v in base_weights.items() if k.startswith("encoder.")
            }
            load_state(model.encoder, encoder_weights, source)
            origin = {"base": settings.base, "path": source, "encoder_sha256": encoder_fingerprint(model.encoder)}
        else:
            assert resume_state is not None
            load_state(model, resume_state["model"], source)  # the encoder the data encodes with
            _check_encoder(model, origin, source)
        data = encoded_data(build_data(config.data), model, run_dir / EMBEDDINGS_DIR)
        if context.is_main:
            _claim_config(run_dir, config, resuming=resume_state is not None)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
            named = (
                origin.get("base")
                if origin.get("base") == origin.get("path")
                else f"{origin.get('base')} ({origin.get('path')})"
            )
            print(
                f"timbre-train: {type(model.decoder).__name__} on the frozen encoder of {named}: "
                f"latent_dim {model.latent_dim}, hop {model.hop_length}; "
                f"{trainable:,} weights train, {frozen:,} frozen; run dir {run_dir}",
                flush=True,
            )
        threads = torch.get_num_threads()
        run_info = {
            "command": describe_command(),
            "config": _container(config),
            "world_size": context.world_size,
            "threads": threads,
            "encoder_from": origin,
        }
        if resume_state is not None:
            _warn_if_threads_differ(resume_state, threads)
        trainer = Trainer(model, data, trainer_settings, run_dir, spec, context, resume_state, run_info)
        result = trainer.fit()
        _check_encoder(model, origin, str(result.last_checkpoint))
        if context.is_main:
            print(result.ending(), flush=True)
        return result
    finally:
        shutdown(context)


def _check_encoder(model: Autoencoder, origin: dict[str, Any], source: str) -> None:
    """Raise unless ``model``'s encoder has the weights the run started from."""
    expected = origin.get("encoder_sha256")
    if expected is None:
        raise CheckpointError(f"{source}: not a run of a decoder on a frozen encoder (no encoder_from record)")
    if encoder_fingerprint(model.encoder) != expected:
        raise TimbreError(
            f"{source}: the encoder's weights differ from those of {origin.get('base')} ({origin.get('path')}) "
            "the run started from"
        )

"""The :class:`Embedding`: a timbre as a temporal latent ``[frames, dim]`` plus where it came from.

An embedding of an NSynth-style note has three parts in time: the attack, the sustain (key held)
and the release (key let go). :meth:`Embedding.fit_to_duration` keeps the attack frames, stretches
or shortens the sustain frames to the requested hold time (linear interpolation between frames, so
there are no loop seams) and appends the release frames unchanged. That is how one 4 s note plays a
MIDI note of any length.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from timbre.constants import SAMPLE_RATE
from timbre.errors import AudioError, ConfigError, InvalidTypeError

# The first bytes of every .npy file, and of the audio files most likely to be passed instead.
NPY_MAGIC = b"\x93NUMPY"
AUDIO_MAGIC = {b"RIFF": "WAV", b"fLaC": "FLAC", b"OggS": "OGG", b"ID3": "MP3", b"\xff\xfb": "MP3"}

# NSynth notes are held for 3 of their 4 seconds; the first 0.25 s is treated as the attack.
DEFAULT_HOLD_FRACTION = 0.75
DEFAULT_ATTACK_SECONDS = 0.25


# extra key: the pitch PESTO hears in a note encoded without one (see Embedding.encoded_pitch).
ESTIMATED_PITCH = "estimated_pitch"


@dataclass
class Embedding:
    """A timbre embedding and its provenance.

    Attributes:
        tensor: ``[frames, dim]`` float32, one frame per ``hop_length`` samples.
        sample_rate: audio rate of the model that made it.
        hop_length: samples per frame.
        release_frame: first frame of the release (key up); frames before it are attack + sustain.
        attack_frames: frames kept verbatim at the start when the note is fitted to a duration.
        source: where it came from (a file path, "array", "blend", ...).
        pitch: MIDI pitch of the source note if known.
        velocity: MIDI velocity of the source note if known.
        model: name of the model that encoded it (embeddings of different models are incompatible).
    """

    tensor: torch.Tensor
    sample_rate: int = SAMPLE_RATE
    hop_length: int = 512
    # None (the default) is replaced in __post_init__ by a value chosen from the length, so every
    # reader sees an int; a dataclass field cannot say "optional argument, int attribute".
    release_frame: int = None  # type: ignore[assignment]
    attack_frames: int = None  # type: ignore[assignment]
    source: str = "array"
    pitch: int | None = None
    velocity: int | None = None
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.tensor, (torch.Tensor, np.ndarray)):
            raise InvalidTypeError(
                f"{self.source}: an embedding is a tensor [frames, dim], got {type(self.tensor).__name__}"
            )
        if not _holds_real_numbers(self.tensor):
            raise InvalidTypeError(f"{self.source}: an embedding holds real numbers, got dtype {self.tensor.dtype}")
        self.tensor = torch.as_tensor(self.tensor, dtype=torch.float32).detach().cpu()
        if self.tensor.dim() != 2 or self.tensor.shape[0] == 0:
            raise AudioError(
                f"{self.source}: an embedding must be [frames, dim] with frames > 0, got {tuple(self.tensor.shape)}"
            )
        if not torch.isfinite(self.tensor).all():
            raise AudioError(f"{self.source}: the embedding holds NaN or infinite values")
        if self.release_frame is None:
            self.release_frame = round(DEFAULT_HOLD_FRACTION * self.frames)
        if self.attack_frames is None:
            self.attack_frames = round(DEFAULT_ATTACK_SECONDS * self.sample_rate / self.hop_length)
        self.release_frame = int(min(max(self.release_frame, 1), self.frames))
        self.attack_frames = int(min(max(self.attack_frames, 0), self.release_frame - 1))

    @property
    def frames(self) -> int:
        return int(self.tensor.shape[0])

    @property
    def dim(self) -> int:
        return int(self.tensor.shape[1])

    @property
    def seconds(self) -> float:
        return self.frames * self.hop_length / self.sample_rate

    @property
    def encoded_pitch(self) -> int | None:
        """The pitch the source note sounded at: :attr:`pitch` if known, else the one
        :meth:`timbre.TimbreModel.encode` estimated (``extra["estimated_pitch"]``), else None."""
        if self.pitch is not None:
            return int(self.pitch)
        estimated = self.extra.get(ESTIMATED_PITCH)
        return None if estimated is None else int(estimated)

    @property
    def release_seconds(self) -> float:
        return (self.frames - self.release_frame) * self.hop_length / self.sample_rate

    def with_tensor(self, tensor: torch.Tensor, source: str | None = None) -> Embedding:
        """A copy with a new tensor of the same layout (e.g. an interpolation result)."""
        return replace(self, tensor=tensor, source=source or self.source, extra=dict(self.extra))

    def fit_to_duration(self, hold_seconds: float) -> Embedding:
        """Attack kept, sustain stretched (or cut) to ``hold_seconds`` in all, release appended.

        Returns an embedding of ``ceil(hold_seconds * rate / hop) + release frames`` frames whose
        ``release_frame`` marks where the key is let go.
        """
        if isinstance(hold_seconds, bool) or not isinstance(hold_seconds, (int, float, np.number)):
            raise InvalidTypeError(f"hold_seconds must be a number, got {hold_seconds!r}")
        if not (hold_seconds > 0 and math.isfinite(hold_seconds)):
            raise ConfigError(f"hold_seconds must be a positive number, got {hold_seconds}")
        hold_frames = max(1, math.ceil(hold_seconds * self.sample_rate / self.hop_length))
        attack = self.tensor[: self.attack_frames]
        sustain = self.tensor[self.attack_frames : self.release_frame]
        release = self.tensor[self.release_frame :]
        if hold_frames <= self.attack_frames:
            held = attack[:hold_frames]
        else:
            wanted = hold_frames - self.attack_frames
            if wanted <= sustain.shape[0]:
                sustain = sustain[:wanted]
            else:
                sustain = F.interpolate(sustain.T.unsqueeze(0), size=wanted, mode="linear", align_corners=True)[0].T
            held = torch.cat([attack, sustain])
        tensor = torch.cat([held, release])
        return replace(
            self, tensor=tensor, release_frame=held.shape[0], attack_frames=min(self.attack_frames, held.shape[0] - 1)
        )

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Write ``[frames, dim]`` to ``.npy`` with the metadata in a ``.json`` beside it (atomically)."""
        from timbre.io.files import atomic_write

        path = Path(path)
        metadata = {k: v for k, v in asdict(self).items() if k != "tensor"}
        with atomic_write(path) as handle:
            np.save(handle, self.tensor.numpy())
        with atomic_write(path.with_suffix(".json"), mode="w") as handle:
            json.dump(metadata, handle, indent=2)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Embedding:
        """Read an embedding saved by :meth:`save` (a bare ``[frames, dim]`` ``.npy`` also works)."""
        if not isinstance(path, (str, Path)) and not hasattr(path, "__fspath__"):
            raise InvalidTypeError(f"an embedding path must be a string or path, got {path!r}")
        path = Path(path)
        if not path.is_file():
            raise AudioError(f"{path}: embedding file does not exist")
        with open(path, "rb") as handle:
            magic = handle.read(len(NPY_MAGIC))
        if magic != NPY_MAGIC:
            kind = next((name for start, name in AUDIO_MAGIC.items() if magic.startswith(start)), None)
            what = f"an audio file ({kind})" if kind else "not a NumPy .npy file"
            raise AudioError(f"{path}: is {what}, not an embedding; embeddings are .npy files written by encode")
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as error:
            raise AudioError(f"{path}: not a readable .npy embedding ({type(error).__name__}: {error})") from None
        if array.ndim != 2:
            raise AudioError(f"{path}: expected an embedding [frames, dim], found shape {array.shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise AudioError(f"{path}: an embedding holds real numbers, found dtype {array.dtype}")
        metadata: dict[str, Any] = {}
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            try:
                metadata = json.loads(sidecar.read_text())
            except json.JSONDecodeError as error:
                raise AudioError(f"{sidecar}: corrupt embedding metadata ({error})") from None
        metadata["source"] = metadata.get("source") or str(path)
        known = {f for f in cls.__dataclass_fields__ if f != "tensor"}
        return cls(
            tensor=torch.from_numpy(array.astype(np.float32)), **{k: v for k, v in metadata.items() if k in known}
        )


def _holds_real_numbers(array: torch.Tensor | np.ndarray) -> bool:
    """Integer or floating point values (not bool, complex, strings or objects)."""
    if isinstance(array, torch.Tensor):
        return array.dtype != torch.bool and not array.is_complex()
    return np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)


def shared_encoded_pitch(embeddings: Sequence[Embedding]) -> dict[str, Any]:
    """``extra`` for a mix of ``embeddings``: their common :attr:`Embedding.encoded_pitch`, if they have one.

    A mix is no source note (its ``pitch`` is None), but embeddings encoded at one pitch mix into
    an embedding of that pitch, which a decoder reading the octave below there needs.
    """
    pitches = {embedding.encoded_pitch for embedding in embeddings}
    pitch = pitches.pop() if len(pitches) == 1 else None
    return {} if pitch is None else {ESTIMATED_PITCH: pitch}

"""Symbolic generation: compose MIDI from scratch or continue a primer with a trained composer.

Sampling runs under :class:`timbre.symbolic.tokens.TokenGrammar` masks, so every sampled sequence is
well formed (Bar, TimeSig, Position, Program, Pitch, Duration in order; positions increasing
within a bar; only the programs of the training corpus) and decodes to exactly the notes it
spells. The only repair left is at the end: once a token budget is spent, time tokens are masked
until the note being written is complete, and trailing time tokens are dropped before decoding.
The same seed gives the same MIDI.

A many-style composer (trained on ``data=music21``) opens every sequence with ``BOS Style Voices``
(:class:`timbre.symbolic.tokens.ConditionTokens`): ``style`` and ``voices`` choose them (None:
``any``), and the grammar then allows only the programs of that style's voices. Rewriting chosen
bars of a MIDI file is :mod:`timbre.symbolic.infill`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import miditok
import numpy as np
import symusic
import torch

from timbre.constants import BUNDLED_COMPOSERS, COMPOSER_ALIASES, DEFAULT_COMPOSER_DIR, PRETRAINED_DIR
from timbre.errors import CheckpointError, ConfigError, MidiError
from timbre.io.files import atomic_write
from timbre.io.midi import load_score
from timbre.models.composer import Composer, check_sampling_weights, with_sampling_weights
from timbre.runtime import SEQUENTIAL_STEP_THREADS, threads
from timbre.symbolic.tokens import (
    ConditionTokens,
    GrammarState,
    TokenGrammar,
    decode_ids,
    encode_score,
    special_token_id,
    token_types,
    tokenizer_from_dict,
)

# Safety bound on tokens per requested bar; chorales use about 70, dense pop about 300.
MAX_TOKENS_PER_BAR = 1024
# Longest request: a thousand bars of chorale is already an hour of music and minutes of sampling.
MAX_BARS = 1024
MAX_TOKENS = 200_000
# Enough tokens to complete a note from any grammar state (TimeSig Position Program Pitch
# Velocity Duration, after a Bar), so that a budget never ends without a note.
TOKENS_TO_FINISH = 8


@dataclass
class LoadedComposer:
    """A composer checkpoint ready to sample from.

    Attributes:
        model: the transformer (EMA weights, eval mode).
        tokenizer: the tokenizer it was trained with.
        programs: programs of its corpus, highest voice first (e.g. soprano..bass).
        artifacts: everything the data config stored in the checkpoint.
        path: the checkpoint file.
        step: training steps behind the weights, when the checkpoint says.
        conditions: the style, voice and infilling tokens of a many-style composer (None for a
            single-corpus model such as composer-chorales).
        style_programs: programs of each style's voices, highest first (many-style composers).
        weights: the weights it samples with: ``float32`` (stepped by the native C kernel where it
            was built, else in torch) or ``int8`` (stepped in torch, a quarter of the bytes to read
            per token: faster than float32 in torch for millions of weights, slower than the native
            step); likelihoods are always measured with ``model``.
    """

    model: Composer
    tokenizer: miditok.MusicTokenizer
    programs: list[int]
    artifacts: dict[str, Any]
    path: Path
    step: int | None = None
    conditions: ConditionTokens | None = None
    style_programs: dict[str, list[int]] = field(default_factory=dict)
    weights: str = "float32"

    @cached_property
    def sampler(self) -> Composer:
        """The model that samples: ``model`` with :attr:`weights` (made on first use)."""
        return with_sampling_weights(self.model, self.weights)

    @property
    def styles(self) -> list[str]:
        """Styles it can be asked for (``any`` first), empty for a single-corpus model."""
        return ["any", *self.conditions.styles] if self.conditions is not None else []

    def voice_programs(self, style: str | None = None, voices: int | None = None) -> list[int]:
        """Programs the voices of ``style`` play, highest first, the first ``voices`` of them
        (every program of the model for the ``any`` style).

        Raises:
            ConfigError: a style this composer does not know.
        """
        if style in (None, "any"):
            return list(self.programs)  # any style: every voice of every style may play
        if style in self.style_programs:
            programs = self.style_programs[style]
        else:
            known = self.styles or ["(none: this composer has no styles)"]
            raise ConfigError(f"style {style!r} is unknown to {self.path.name}; choose one of {known}")
        return list(programs[:voices]) if voices is not None else list(programs)

    def head(self, style: str | None = None, voices: int | None = None) -> list[int]:
        """The opening tokens of a sequence: ``BOS`` (and ``Style Voices`` for a many-style model).

        Raises:
            ConfigError: a style or voice count asked of a model without styles.
        """
        bos = special_token_id(self.tokenizer, "BOS")
        if self.conditions is None:
            if style not in (None, "any") or voices is not None:
                raise ConfigError(f"{self.path}: this composer was trained without styles or voice counts")
            return [bos]
        return [bos, self.conditions.style_id(style), self.conditions.voices_id(voices)]


def load_composer(path: str | Path | None = None, weights: str = "float32") -> LoadedComposer:
    """Load a composer: a checkpoint file or run directory, a bundled composer's name
    (:data:`~timbre.constants.BUNDLED_COMPOSERS`, or ``default``, ``styles``, ``chorales``), or
    None for the default. A name means the bundled model even where a folder has that name
    (``./chorales`` is the folder).

    ``weights``: what it samples with, ``float32`` or ``int8`` (see :attr:`LoadedComposer.weights`).

    Raises:
        CheckpointError: missing or unreadable file, or a checkpoint that is not a composer.
        ConfigError: unknown ``weights``, or int8 where this PyTorch lacks it.
    """
    from timbre.train.checkpoint import load_model

    check_sampling_weights(weights)  # before the checkpoint loads
    path = bundled_composer_dir(path)
    if path is None:
        path = DEFAULT_COMPOSER_DIR
    if path.parent == PRETRAINED_DIR and not (path / "model.pt").is_file():
        raise CheckpointError(
            f"{path}: the bundled composer model is not installed; give a checkpoint of timbre-train instead"
        )
    model, checkpoint = load_model(path)
    artifacts = checkpoint.get("artifacts") or {}
    if not isinstance(model, Composer) or "tokenizer" not in artifacts:
        raise CheckpointError(f"{checkpoint['path']}: not a composer checkpoint (no Composer model and tokenizer)")
    tokenizer = tokenizer_from_dict(artifacts["tokenizer"])
    conditions = ConditionTokens.from_dict(artifacts["conditions"]) if artifacts.get("conditions") else None
    vocab_size = conditions.vocab_size if conditions is not None else len(tokenizer)
    if vocab_size != model.vocab_size or (conditions is not None and conditions.base_size != len(tokenizer)):
        raise CheckpointError(
            f"{checkpoint['path']}: tokenizer and condition tokens make {vocab_size} tokens but the model has "
            f"{model.vocab_size}"
        )
    programs = list(artifacts.get("programs") or [])
    style_programs = {str(k): list(v) for k, v in (artifacts.get("style_programs") or {}).items()}
    step = checkpoint.get("step") or (checkpoint.get("training") or {}).get("step")
    return LoadedComposer(
        model, tokenizer, programs, artifacts, Path(checkpoint["path"]), step, conditions, style_programs, weights
    )


def bundled_composer_dir(name: str | Path | None) -> Path | None:
    """The folder of the bundled composer ``name`` (a name or alias); any other path as a Path;
    None for None."""
    if name is None:
        return None
    text = str(name)
    text = COMPOSER_ALIASES.get(text, text)
    return PRETRAINED_DIR / text if text in BUNDLED_COMPOSERS else Path(name)


def fit_prime_to_voices(score: symusic.Score, programs: Sequence[int]) -> symusic.Score:
    """Give a primer's tracks the corpus programs whose register they are in.

    A primer whose programs all belong to the corpus is kept as is. Otherwise its pitched
    tracks, highest mean pitch first, take ``programs`` in order (a melody becomes the
    soprano of a chorale model); tracks beyond the number of voices join the lowest voice.
    Drum tracks are dropped unless the corpus has drums (program -1).
    """
    used = {-1 if track.is_drum else track.program for track in score.tracks if len(track.notes)}
    if not programs or used <= set(programs):
        return score
    fitted = score.copy()
    keep_drums = -1 in programs
    voices = [p for p in programs if p != -1]
    tracks = [t for t in fitted.tracks if len(t.notes) and (keep_drums or not t.is_drum)]
    pitched = sorted((t for t in tracks if not t.is_drum), key=lambda t: -float(np.mean([n.pitch for n in t.notes])))
    for rank, track in enumerate(pitched):
        track.program = voices[min(rank, len(voices) - 1)]
    fitted.tracks = [t for t in tracks if t.is_drum] + pitched
    if fitted.note_num() == 0:
        raise MidiError("the primer holds only drums, which this model cannot continue")
    return fitted


class CompositionControl:
    """Grammar masks plus the stopping rule of :func:`compose_many` (a ``GenerationControl``).

    A row is complete once it is between notes, holds at least one note, and has either
    ``bars`` more completed bars than its prompt or at least ``tokens`` new tokens. Past
    ``finish_after`` new tokens an incomplete row may no longer advance time (Bar, TimeShift,
    TimeSig tokens are masked while anything else is allowed), so it completes a note within
    :data:`TOKENS_TO_FINISH` tokens. Rows that complete early keep sampling until the whole
    batch is done; :attr:`lengths` says where each row was complete.
    """

    def __init__(
        self,
        grammar: TokenGrammar,
        prompts: Sequence[Sequence[int]],
        bars: int | None,
        tokens: int | None,
        finish_after: int,
        progress: Any = None,
    ) -> None:
        """``progress``: a tqdm bar counting new bars (or tokens, with ``tokens``), or None."""
        self.grammar = grammar
        self.progress = progress
        self.states: list[GrammarState] = [grammar.state_after(prompt) for prompt in prompts]
        self.bars = bars
        self.target_bars = [state.bars + bars if bars is not None else None for state in self.states]
        self.tokens = tokens
        self.finish_after = finish_after
        self.new_tokens = 0
        self.lengths: list[int | None] = [None] * len(self.states)
        self.time_types = torch.zeros(grammar.vocab_size, dtype=torch.bool)
        for kind in ("Bar", "TimeShift", "TimeSig"):
            self.time_types |= grammar.type_masks.get(kind, self.time_types)

    def allowed(self) -> torch.Tensor:
        masks = []
        for row, state in enumerate(self.states):
            mask = self.grammar.allowed(state)
            if self.new_tokens >= self.finish_after and self.lengths[row] is None:
                hurried = mask & ~self.time_types
                mask = hurried if hurried.any() else mask
            masks.append(mask)
        return masks[0][None] if len(masks) == 1 else torch.stack(masks)

    def update(self, tokens: torch.Tensor) -> None:
        self.new_tokens += 1
        for row, (state, token) in enumerate(zip(self.states, tokens.tolist())):
            self.grammar.advance(state, token)
            if self.lengths[row] is None and self._complete(row):
                self.lengths[row] = self.new_tokens
        if self.progress is not None:
            self.progress.update(self._done() - self.progress.n)

    def _done(self) -> int:
        """Bars (or, with ``tokens``, tokens) the slowest row has written towards its goal."""
        bars = self.bars
        if bars is None:
            return min(self.new_tokens, self.tokens or 0)
        # With bars every row has a target; a row's count stops at its goal.
        written = [
            min(state.bars, target) - target + bars
            for state, target in zip(self.states, self.target_bars)
            if target is not None
        ]
        return max(0, min(written))

    def _complete(self, row: int) -> bool:
        state = self.states[row]
        if state.inside_note or state.notes == 0:
            return False
        target = self.target_bars[row]
        if target is not None:
            return state.bars >= target
        # Without bars the goal is in tokens (compose_many checks that one of them is given).
        return self.tokens is not None and self.new_tokens >= self.tokens

    def finished(self) -> bool:
        return all(length is not None for length in self.lengths)


def prime_tokens(
    composer: LoadedComposer, prime: symusic.Score, name: str = "primer", programs: Sequence[int] | None = None
) -> list[int]:
    """Token ids of a primer score (without BOS), its programs fitted to the model's voices.

    Args:
        programs: the voices to fit to, highest first (default: every program of the model).

    Raises:
        MidiError: naming ``name``, when the primer has no notes the tokenizer can represent.
    """
    try:
        return encode_score(composer.tokenizer, fit_prime_to_voices(prime, programs or composer.programs))
    except MidiError as error:
        raise MidiError(f"{name}: {error}") from None


def complete_notes(tokenizer: miditok.MusicTokenizer, ids: Sequence[int]) -> list[int]:
    """``ids`` up to and including its last Duration: drops an unfinished note and trailing time tokens."""
    types = token_types(tokenizer)
    last = max((i for i, token in enumerate(ids) if types[token] == "Duration"), default=-1)
    return list(ids[: last + 1])


def compose_many(
    composer: LoadedComposer,
    count: int = 1,
    *,
    prime: str | Path | symusic.Score | None = None,
    bars: int | None = 16,
    tokens: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    progress: bool = False,
    style: str | None = None,
    voices: int | None = None,
    style_guidance: float = 1.0,
) -> list[symusic.Score]:
    """Sample ``count`` pieces in one batch (see :func:`compose` for the arguments)."""
    _check_sampling(count, bars, tokens, temperature, top_k, top_p)
    check_style_guidance(composer, style, style_guidance)
    tokenizer, model = composer.tokenizer, composer.sampler
    head = composer.head(style, voices)
    programs = composer.voice_programs(style, voices)
    prime_score = load_score(prime) if isinstance(prime, (str, Path)) else prime
    name = str(prime) if isinstance(prime, (str, Path)) else "primer"
    primer = prime_tokens(composer, prime_score, name, programs) if prime_score is not None else []
    prompt = [*head, *primer]
    grammar = TokenGrammar(tokenizer, programs or None, composer.conditions)
    if tokens is not None:
        finish_after = tokens
    else:
        assert bars is not None, "_check_sampling: without tokens, bars is given"
        finish_after = bars * MAX_TOKENS_PER_BAR
    from tqdm.auto import tqdm

    unit, goal = ("token", tokens) if tokens is not None else ("bar", bars)
    with tqdm(total=goal, unit=unit, desc="composing", disable=not progress, leave=False) as bar:
        control = CompositionControl(
            grammar, [prompt] * count, bars if tokens is None else None, tokens, finish_after, bar if progress else None
        )
        generator = torch.Generator().manual_seed(seed)
        batch = torch.tensor([prompt] * count, dtype=torch.long)
        # Guidance contrasts the style with "any" style (the same voices and primer).
        unconditional = (
            torch.tensor([[*composer.head("any", voices), *primer]] * count)
            if style_guidance != 1.0  # checked above: then there is a style to guide towards
            else None
        )
        # One token at a time is too small a step to split across threads: more threads only
        # spin against each other (and against any other process on the machine).
        with threads(SEQUENTIAL_STEP_THREADS):
            output = model.generate(
                batch, finish_after + TOKENS_TO_FINISH, temperature=temperature, top_k=top_k, top_p=top_p,
                generator=generator, control=control, unconditional=unconditional, guidance=style_guidance,
                # A many-style composer trained on windows that open with their conditions: keep
                # them in view past the context (a primer longer than it would hide the style).
                conditions=len(head) if composer.conditions is not None else 0,
                bar_token=tokenizer.vocab["Bar_None"],
            )  # fmt: skip
    # Tracks in the style's voice order (soprano first for the chorales), then any others.
    order = {program: rank for rank, program in enumerate(programs)}
    scores = []
    for row, length in enumerate(control.lengths):
        new = output[row, len(prompt) :].tolist()
        ids = complete_notes(tokenizer, primer + new[: length or len(new)])
        score = decode_ids(tokenizer, ids)
        score.tracks = sorted(score.tracks, key=lambda t: order.get(-1 if t.is_drum else t.program, len(order)))
        if prime_score is not None and len(prime_score.tempos):
            # Tempo is not tokenized: play the piece at the primer's opening tempo.
            score.tempos = [symusic.Tempo(0, prime_score.tempos[0].qpm)]
        scores.append(score)
    return scores


def compose(
    composer: LoadedComposer,
    *,
    prime: str | Path | symusic.Score | None = None,
    bars: int | None = 16,
    tokens: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    progress: bool = False,
    style: str | None = None,
    voices: int | None = None,
    style_guidance: float = 1.0,
) -> symusic.Score:
    """Compose a piece from scratch or continue a primer.

    Args:
        composer: from :func:`load_composer`.
        prime: a MIDI file or score whose notes open the piece (quantized to the tokenizer's
            grid); its tracks take the model's voices (:func:`fit_prime_to_voices`).
        bars: bars to add after the primer's last bar line (ignored when ``tokens`` is given).
        tokens: new tokens to sample instead (the last note is completed).
        temperature, top_k, top_p: sampling (see :func:`timbre.models.composer.sample_next`).
        seed: the same seed, model and arguments give the same piece.
        progress: show a progress bar of the bars (or tokens) written.
        style: the style to write in (a many-style composer; None or ``"any"``: unconditional).
        voices: the number of voices to write (a many-style composer; None: any).
        style_guidance: classifier-free guidance towards ``style`` (see
            :meth:`timbre.models.composer.Composer.generate`): 1 samples the style-conditioned
            model as it is; any other value steps the "any"-style sequence beside it (two
            sequences a token), above 1 keeping closer to the style, 0 sampling the "any" style
            alone in the style's voices.

    Returns:
        A score with one track per program, at the tokenizer's time division.
    """
    return compose_many(
        composer,
        1,
        prime=prime,
        bars=bars,
        tokens=tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        progress=progress,
        style=style,
        voices=voices,
        style_guidance=style_guidance,
    )[0]


def save_midi(score: symusic.Score, path: str | Path) -> Path:
    """Write ``score`` as a MIDI file atomically (a crash never leaves half a file)."""
    path = Path(path)
    if path.suffix.lower() not in (".mid", ".midi"):
        raise MidiError(f"{path}: save_midi writes MIDI files; use a .mid name")
    if not path.parent.is_dir():
        raise MidiError(f"{path}: folder {path.parent} does not exist")
    with atomic_write(path) as file:
        file.write(score.dumps_midi())
    return path


def check_style_guidance(composer: LoadedComposer, style: str | None, style_guidance: float) -> None:
    """Raise :class:`ConfigError` unless ``style_guidance`` is a finite number >= 0 that applies:
    other than 1 only for a style of a many-style composer."""
    if not (math.isfinite(style_guidance) and style_guidance >= 0):
        raise ConfigError(f"style guidance must be a finite number >= 0, got {style_guidance}")
    if style_guidance != 1.0 and composer.conditions is None:
        raise ConfigError(f"style guidance needs a many-style composer; {composer.path.name} has no styles")
    if style_guidance != 1.0 and style in (None, "any"):
        raise ConfigError("style guidance needs a style to guide towards (give one other than any)")


def _check_sampling(
    count: int, bars: int | None, tokens: int | None, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}")
    if tokens is None and (bars is None or not 1 <= bars <= MAX_BARS):
        raise ConfigError(f"bars must be from 1 to {MAX_BARS}, got {bars}")
    if tokens is not None and not 1 <= tokens <= MAX_TOKENS:
        raise ConfigError(f"tokens must be from 1 to {MAX_TOKENS}, got {tokens}")
    if not temperature >= 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")

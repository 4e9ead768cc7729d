"""Evaluation of a many-style composer: likelihood per style, a style judge, and bar infilling.

- Likelihood: bits per token of each style's held-out test pieces (the checkpoint's own split,
  rebuilt from its recipe), the transformer given ``BOS Style Voices`` against an interpolated
  Kneser-Ney n-gram fitted on that style's training pieces (order chosen on its valid pieces).
  Both score the same targets: every token of the piece, and EOS.
- Style judge: a logistic regression (scikit-learn) on symbolic features of a piece's pitch,
  texture and rhythm (:func:`piece_features`), trained on held-out real pieces. Its accuracy on
  real pieces is measured by stratified cross-validation over them; then it classifies pieces
  generated for each style, and the report gives how often it names the style that was asked for. The headline
  judge sees each piece's pitch-class histogram transposed to C: the composer trains on pieces
  transposed at random (so that it continues a primer in any key) and writes in every key, so a
  histogram as played tells the corpus's favourite keys (fiddle tunes in D and A, Essen songs in
  G) more than its styles. A second judge on the histograms as played is reported beside it.
- Infilling: on held-out pieces, bars are regenerated with the others kept; the share of kept
  bars left note-for-note unchanged (100% by construction, checked), and the bits per token of
  the real middle bars given both sides (what the model is asked to write) against the same
  bars given only the bars before them (left-to-right continuation).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch
import torch.nn.functional as F

from timbre.data.style_corpus import (
    CONDITION_PREFIX,
    StyledPiece,
    StyledSplits,
    conditioned_sequence,
    create_style_tokenizer,
    infill_sequence,
    load_style_splits,
)
from timbre.errors import CheckpointError, DatasetError
from timbre.evaluation.report import markdown_table, number, percent, write_report
from timbre.models.composer import Composer
from timbre.symbolic.compose import LoadedComposer, check_style_guidance, compose_many
from timbre.symbolic.infill import bar_grid, kept_notes, regenerate_bars
from timbre.symbolic.tokens import bar_token_starts, decode_ids, special_token_id, tokenizer_to_dict

REPORT_STEM = "composer_styles"
# Interval histogram: melodic steps within a voice from -12 to +12 semitones (wider ones clipped).
LARGEST_INTERVAL = 12
# Duration bins in quarter notes (upper edges): 32nd ... whole and longer.
DURATION_EDGES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
# Voices whose range and mean pitch are features (highest first); fewer are zero-padded.
FEATURE_VOICES = 4
# The corpus's common meters (numerator, denominator); any other is counted as one more.
METERS = ((2, 4), (3, 4), (4, 4), (2, 2), (3, 2), (4, 2), (3, 8), (6, 8), (9, 8), (12, 8))
# Onset grids: twelfths of a quarter note (eighths, triplets and sixteenths fall apart) and
# sixteenths of a bar.
BEAT_PHASES, BAR_PHASES = 12, 16
# Consecutive notes' duration ratios within a voice, as log2 rounded to -3..+3 (dotted rhythms,
# Scotch snaps and long-short patterns apart from even runs).
LARGEST_DURATION_STEP = 3
# The length of a row of rhythm_features.
RHYTHM_FEATURES = len(METERS) + 1 + BEAT_PHASES + BAR_PHASES + 2 * LARGEST_DURATION_STEP + 1


def piece_features(score: symusic.Score) -> np.ndarray:
    """Symbolic features of a piece for the style judge: float64 ``[12 + 25 + 7 + 3 + 2 * 4 + 46]``.

    Pitch-class histogram (12), melodic interval histogram within voices (25, -12..+12),
    duration histogram in quarter notes (7 bins), voice count, polyphony (mean notes sounding),
    notes per quarter note, per voice (highest first, up to four) its range and its mean pitch
    (/ 128), then the rhythm (:func:`rhythm_features`).
    """
    from timbre.evaluation.composer import polyphony

    tracks = [track for track in score.tracks if len(track.notes) and not track.is_drum]
    pitch_classes = np.zeros(12)
    intervals = np.zeros(2 * LARGEST_INTERVAL + 1)
    durations = np.zeros(len(DURATION_EDGES) + 1)
    voices = []
    tpq = max(score.ticks_per_quarter, 1)
    for track in tracks:
        pitches = np.array([note.pitch for note in track.notes])
        np.add.at(pitch_classes, pitches % 12, 1)
        steps = np.clip(np.diff(pitches), -LARGEST_INTERVAL, LARGEST_INTERVAL) + LARGEST_INTERVAL
        np.add.at(intervals, steps, 1)
        quarters = np.array([note.duration for note in track.notes]) / tpq
        np.add.at(durations, np.searchsorted(DURATION_EDGES, quarters), 1)
        voices.append((float(pitches.mean()), float(pitches.max() - pitches.min())))
    voices.sort(reverse=True)
    per_voice = np.zeros(2 * FEATURE_VOICES)
    for rank, (mean, span) in enumerate(voices[:FEATURE_VOICES]):
        per_voice[2 * rank : 2 * rank + 2] = (span / 48.0, mean / 128.0)
    notes = sum(len(track.notes) for track in tracks)
    summary = np.array([
        len(tracks) / 8.0,
        polyphony(score) / 8.0 if notes else 0.0,
        notes * tpq / max(score.end(), 1) / 8.0,
    ])  # fmt: skip
    return np.concatenate([
        pitch_classes / max(pitch_classes.sum(), 1),
        intervals / max(intervals.sum(), 1),
        durations / max(durations.sum(), 1),
        summary,
        per_voice,
        rhythm_features(score),
    ])  # fmt: skip


def rhythm_features(score: symusic.Score) -> np.ndarray:
    """The rhythm of a piece: float64 ``[RHYTHM_FEATURES]``.

    Its opening meter, one-hot over :data:`METERS` and one for any other (4/4 when it has none),
    the histogram of note onsets within the quarter note (:data:`BEAT_PHASES` bins) and within
    the bar of the meter in force (:data:`BAR_PHASES` bins), and the histogram of the duration
    ratios of consecutive notes within a voice (log2, rounded, clipped to +-
    :data:`LARGEST_DURATION_STEP`). Histograms sum to 1 (all zeros without notes).
    """
    tpq = max(score.ticks_per_quarter, 1)
    signatures = sorted((sig.time, sig.numerator, sig.denominator) for sig in score.time_signatures) or [(0, 4, 4)]
    if signatures[0][0] > 0:
        signatures.insert(0, (0, 4, 4))
    meter = np.zeros(len(METERS) + 1)
    opening = (signatures[0][1], signatures[0][2])
    meter[METERS.index(opening) if opening in METERS else len(METERS)] = 1
    # Each meter's bars are counted from where it starts.
    starts = np.array([time for time, _, _ in signatures])
    bar_ticks = np.array([max(round(4 * tpq * numerator / max(denominator, 1)), 1) for _, numerator, denominator in
                          signatures])  # fmt: skip
    beat_phase, bar_phase = np.zeros(BEAT_PHASES), np.zeros(BAR_PHASES)
    ratios = np.zeros(2 * LARGEST_DURATION_STEP + 1)
    for track in score.tracks:
        if track.is_drum or not len(track.notes):
            continue
        onsets = np.array([note.time for note in track.notes])
        np.add.at(beat_phase, (onsets % tpq) * BEAT_PHASES // tpq, 1)
        governing = np.searchsorted(starts, onsets, side="right") - 1
        within = (onsets - starts[governing]) % bar_ticks[governing]
        np.add.at(bar_phase, within * BAR_PHASES // bar_ticks[governing], 1)
        durations = np.maximum([note.duration for note in track.notes], 1).astype(np.float64)
        steps = np.clip(np.rint(np.log2(durations[1:] / durations[:-1])), -LARGEST_DURATION_STEP, LARGEST_DURATION_STEP)
        np.add.at(ratios, steps.astype(np.int64) + LARGEST_DURATION_STEP, 1)
    return np.concatenate([
        meter,
        beat_phase / max(beat_phase.sum(), 1),
        bar_phase / max(bar_phase.sum(), 1),
        ratios / max(ratios.sum(), 1),
    ])  # fmt: skip


class StyleJudge:
    """Logistic regression on :func:`piece_features` (standardized), classes balanced.

    Args:
        seed: seed of the solver and of the cross-validation folds.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.pipeline: Any = None

    def _new_pipeline(self) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced", random_state=self.seed)
        )

    def cross_validated_accuracy(self, features: np.ndarray, labels: Sequence[str], folds: int = 5) -> dict[str, Any]:
        """Accuracy on real pieces, each predicted by a judge that never saw it (stratified folds).

        Returns:
            ``{"accuracy", "per_style": {style: accuracy}, "folds", "pieces"}``.
        """
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        labels_array = np.asarray(labels)
        folds = max(2, min(folds, min(Counter(labels).values())))
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
        predicted = cross_val_predict(self._new_pipeline(), features, labels_array, cv=splitter)
        per_style = {style: float(np.mean(predicted[labels_array == style] == style)) for style in sorted(set(labels))}
        return {
            "accuracy": float(np.mean(predicted == labels_array)),
            "per_style": per_style,
            "folds": folds,
            "pieces": len(labels),
        }

    def fit(self, features: np.ndarray, labels: Sequence[str]) -> StyleJudge:
        self.pipeline = self._new_pipeline().fit(features, np.asarray(labels))
        return self

    def predict(self, features: np.ndarray) -> list[str]:
        assert self.pipeline is not None, "fit the judge first"
        return [str(label) for label in self.pipeline.predict(features)]


@torch.inference_mode()
def conditioned_bits(model: Composer, sequences: Sequence[np.ndarray], skip: int = CONDITION_PREFIX) -> float:
    """Mean -log2 P of every token from index ``skip`` on (the piece and EOS after ``BOS Style Voices``).

    Pieces longer than the model's context are scored in windows that keep the conditions in
    front and advance by half a context: each target is scored once, with at least half a
    window of history once past the first window.
    """
    context = model.max_context
    bits, count = 0.0, 0
    for sequence in sequences:
        tokens = torch.as_tensor(sequence, dtype=torch.long)
        head, body = tokens[:skip], tokens[skip:]
        room = context - skip
        stride = max(room // 2, 1)
        scored = 0  # body tokens scored so far
        start = 0
        while scored < len(body):
            window = torch.cat([head, body[start : start + room]])
            log_probabilities = F.log_softmax(model(window[None, :-1])[0].float(), dim=-1)
            targets = window[1:]
            first = skip - 1 + (scored - start)  # index in targets of body[scored]
            chosen = log_probabilities[first:].gather(1, targets[first:, None]).squeeze(1)
            bits -= float(chosen.sum()) / math.log(2)
            count += len(chosen)
            scored = start + min(room, len(body) - start)
            start += stride
    return bits / max(count, 1)


def style_splits_of(composer: LoadedComposer, cache_dir: str | Path | None = None) -> StyledSplits:
    """Re-create the per-style train/valid/test pieces the composer was trained on."""
    recipe = composer.artifacts.get("corpus") or {}
    if recipe.get("corpus") != "music21":
        raise CheckpointError(f"{composer.path}: checkpoint has no music21 corpus recipe to rebuild its test split")
    tokenizer = create_style_tokenizer()
    if tokenizer_to_dict(tokenizer) != composer.artifacts["tokenizer"]:
        raise CheckpointError(f"{composer.path}: its tokenizer differs from this version's style tokenizer")
    splits = load_style_splits(
        tokenizer, recipe["styles"], recipe["limit_per_style"], recipe["valid"], recipe["test"], recipe["seed"],
        cache_dir, progress=False,
    )  # fmt: skip
    if not splits.test:
        raise DatasetError(f"{composer.path}: its corpus recipe holds out no test pieces (test={recipe['test']})")
    return splits


def _piece_score(composer: LoadedComposer, piece: StyledPiece) -> symusic.Score:
    return decode_ids(composer.tokenizer, piece.tokens)


def likelihood_by_style(
    composer: LoadedComposer,
    splits: StyledSplits,
    max_test_pieces: int,
    ngram_orders: Sequence[int],
) -> dict[str, Any]:
    """Per style: transformer and n-gram bits per token on its test pieces."""
    from timbre.evaluation.composer import KneserNeyModel

    assert composer.conditions is not None, "a many-style composer"
    tokenizer = composer.tokenizer
    bos, eos = special_token_id(tokenizer, "BOS"), special_token_id(tokenizer, "EOS")
    results = {}
    for style in composer.conditions.styles:
        test = [p for p in splits.test if p.style == style][:max_test_pieces]
        if not test:
            continue
        plain = [np.concatenate([[bos], p.tokens, [eos]]) for p in splits.train if p.style == style]
        tune = [np.concatenate([[bos], p.tokens, [eos]]) for p in splits.valid if p.style == style] or plain
        fitted = {order: KneserNeyModel(order, len(tokenizer)).fit(plain) for order in ngram_orders}
        best = min(fitted, key=lambda order: fitted[order].bits_per_token(tune))
        ngram = fitted[best].bits_per_token([np.concatenate([[bos], p.tokens, [eos]]) for p in test])
        model_bits = conditioned_bits(composer.model, [conditioned_sequence(p, composer.conditions, bos, eos)
                                                       for p in test])  # fmt: skip
        results[style] = {
            "test_pieces": len(test),
            "test_tokens": int(sum(len(p.tokens) + 1 for p in test)),
            "model_bits_per_token": model_bits,
            "ngram_bits_per_token": ngram,
            "ngram_order": best,
            "reduction_vs_ngram": 1.0 - model_bits / ngram,
            "target_applies": len(test) >= 40,
            "target_met": model_bits <= 0.75 * ngram,
        }
    return results


# The judges: pitch-class histograms transposed to C (the headline), and as played.
JUDGE_FEATURES = ("key_normalized", "as_played")


def judge_view(features: np.ndarray, kind: str) -> np.ndarray:
    """Rows of :func:`piece_features` as judge ``kind`` sees them (see :data:`JUDGE_FEATURES`)."""
    if kind not in JUDGE_FEATURES:
        raise ValueError(f"judge features are one of {JUDGE_FEATURES}, not {kind!r}")
    if kind == "as_played":
        return features
    from timbre.evaluation.composer import transposed_to_c

    view = features.copy()
    view[:, :12] = np.stack([transposed_to_c(row[:12]) for row in features])
    return view


def fit_judge(
    composer: LoadedComposer, splits: StyledSplits, max_real_per_style: int, seed: int
) -> tuple[dict[str, StyleJudge], dict[str, dict[str, Any]]] | None:
    """The judges of :data:`JUDGE_FEATURES`, trained on up to ``max_real_per_style`` held-out
    (valid, then test) pieces a style, and each one's cross-validated accuracy on them; None
    when fewer than two styles have two pieces."""
    assert composer.conditions is not None, "a many-style composer"
    styles = list(composer.conditions.styles)
    real = [p for style in styles for p in [q for q in splits.valid + splits.test if q.style == style][
        :max_real_per_style]]  # fmt: skip
    judged = [style for style in styles if sum(p.style == style for p in real) >= 2]
    real = [p for p in real if p.style in judged]
    if len(judged) < 2:
        return None
    features = np.stack([piece_features(_piece_score(composer, p)) for p in real])
    labels = [p.style for p in real]
    judges, accuracies = {}, {}
    for kind in JUDGE_FEATURES:
        view = judge_view(features, kind)
        judge = StyleJudge(seed)
        accuracies[kind] = judge.cross_validated_accuracy(view, labels)
        judges[kind] = judge.fit(view, labels)
    return judges, accuracies


def judge_generated(
    composer: LoadedComposer,
    judges: dict[str, StyleJudge],
    styles: Sequence[str],
    samples_per_style: int,
    bars: int,
    sampling: dict[str, Any],
    seed: int,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Generate ``samples_per_style`` pieces for each style (seed ``seed + its index``), written to
    ``out_dir`` as ``<style>_NN.mid`` when given, and classify them with each of ``judges``.

    ``sampling``: keyword arguments of :func:`~timbre.symbolic.compose.compose_many`
    (``temperature``, ``top_k``, ``top_p``, ``style_guidance``).

    Returns:
        ``{kind: {"generated": {style: {"samples", "classified_as_asked", "predicted"}},
        "generated_classified_as_asked"}}`` for each judge, and ``"generation_seconds"``,
        ``"generated_tokens_per_second"``.
    """
    features: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    tokens = 0
    for index, style in enumerate(styles):
        scores = compose_many(composer, samples_per_style, bars=bars, seed=seed + index, style=style, **sampling)
        tokens += sum(len(composer.tokenizer.encode(score).ids) for score in scores if score.note_num())
        for sample, score in enumerate(scores):
            if out_dir is not None:
                (out_dir / f"{style}_{sample:02d}.mid").write_bytes(score.dumps_midi())
        features[style] = np.stack([piece_features(score) for score in scores])
    seconds = time.perf_counter() - started
    results: dict[str, Any] = {}
    for kind, judge in judges.items():
        generated = {}
        for style in styles:
            predicted = judge.predict(judge_view(features[style], kind))
            generated[style] = {
                "samples": len(predicted),
                "classified_as_asked": float(np.mean([label == style for label in predicted])),
                "predicted": dict(Counter(predicted)),
            }
        overall = float(np.mean([entry["classified_as_asked"] for entry in generated.values()]))
        results[kind] = {"generated": generated, "generated_classified_as_asked": overall}
    return {
        **results,
        "generation_seconds": seconds,
        "generated_tokens_per_second": tokens / seconds if seconds else 0.0,
    }


def judge_styles(
    composer: LoadedComposer,
    splits: StyledSplits,
    samples_per_style: int,
    bars: int,
    sampling: dict[str, Any],
    seed: int,
    max_real_per_style: int,
    out_dir: Path,
) -> dict[str, Any]:
    """Train the judges on held-out real pieces; classify pieces generated for each style
    (:func:`fit_judge`, then :func:`judge_generated`). The headline figures are the
    key-normalized judge's; ``as_played`` holds the other judge's."""
    fitted = fit_judge(composer, splits, max_real_per_style, seed)
    if fitted is None:
        return {"skipped": "fewer than two styles have two held-out pieces"}
    judges, accuracies = fitted
    styles = [style for style in composer.conditions.styles if style in accuracies["as_played"]["per_style"]]  # type: ignore[union-attr]
    judged = judge_generated(composer, judges, styles, samples_per_style, bars, sampling, seed, out_dir)
    headline = judged["key_normalized"]
    return {
        "judge": "logistic regression on pitch-class (transposed to C), interval and duration histograms, voices, "
        "polyphony, density, range and mean pitch per voice, meter, onsets within the beat and the bar, and "
        "consecutive duration ratios (scikit-learn)",
        "real_accuracy": accuracies["key_normalized"],
        **headline,
        "target": 0.7,
        "target_met": headline["generated_classified_as_asked"] >= 0.7,
        "as_played": {"real_accuracy": accuracies["as_played"], **judged["as_played"]},
        "generation_seconds": judged["generation_seconds"],
        "generated_tokens_per_second": judged["generated_tokens_per_second"],
    }


@torch.inference_mode()
def infilling_figures(
    composer: LoadedComposer, splits: StyledSplits, pieces: int, gap: int, seed: int
) -> dict[str, Any]:
    """Regenerate ``gap`` bars in the middle of held-out pieces; check kept bars, score the real middle."""
    assert composer.conditions is not None, "a many-style composer"
    conditions, tokenizer, model = composer.conditions, composer.tokenizer, composer.model
    bos = special_token_id(tokenizer, "BOS")
    bar_id = tokenizer.vocab["Bar_None"]
    candidates = [p for p in splits.test if len(bar_token_starts(p.tokens, bar_id)) >= 3 * gap]
    rng = np.random.default_rng(seed)
    chosen = [candidates[i] for i in sorted(rng.permutation(len(candidates))[:pieces])]
    kept_total = kept_same = 0
    fill_bits = left_bits = 0.0
    fill_count = 0
    for index, piece in enumerate(chosen):
        score = _piece_score(composer, piece)
        starts = [*bar_token_starts(piece.tokens, bar_id).tolist(), len(piece.tokens)]
        count = len(starts) - 1
        first = count // 2 - gap // 2  # 0-based first bar of the gap
        regenerate = list(range(first + 1, first + gap + 1))
        edited = regenerate_bars(composer, score, regenerate, seed=seed + index, style=piece.style)[0]
        grid = bar_grid(composer, list(piece.tokens), score.ticks_per_quarter)
        kept = [bar for bar in range(1, count + 1) if bar not in regenerate]
        before, after = kept_notes(score, kept, grid.starts), kept_notes(edited, kept, grid.starts)
        for track, original in enumerate(before):
            kept_total += len(original)
            kept_same += sum(1 for a, b in zip(original, after[track]) if a == b) if len(original) == len(
                after[track]) else 0  # fmt: skip
        bars = [list(piece.tokens[starts[i] : starts[i + 1]]) for i in range(count)]
        middle = [t for bar in bars[first : first + gap] for t in bar]
        head = [bos, conditions.style_id(piece.style), conditions.voices_id(piece.voices)]
        from timbre.data.style_corpus import fit_context

        room = model.max_context - len(head) - 5 - len(middle)
        if room < 0:
            continue
        side_before, side_after = fit_context(bars[:first], bars[first + gap :], room)
        with_both = infill_sequence(conditions, head, side_before, side_after, gap, middle)[:-1]
        left_context = [t for bar in bars[:first] for t in bar][-(model.max_context - len(head) - len(middle)) :]
        left_only = [*head, *left_context, *middle]
        fill_bits += _tail_bits(model, with_both, len(middle))
        left_bits += _tail_bits(model, left_only, len(middle))
        fill_count += len(middle)
    return {
        "pieces": len(chosen),
        "gap_bars": gap,
        "kept_notes": kept_total,
        "kept_unchanged": kept_same / kept_total if kept_total else 1.0,
        "middle_bits_per_token_infilling": fill_bits / fill_count if fill_count else None,
        "middle_bits_per_token_left_to_right": left_bits / fill_count if fill_count else None,
        "middle_tokens": fill_count,
    }


def _tail_bits(model: Composer, sequence: Sequence[int], tail: int) -> float:
    """Sum of -log2 P of the last ``tail`` tokens of ``sequence``."""
    tokens = torch.tensor([sequence], dtype=torch.long)
    log_probabilities = F.log_softmax(model(tokens[:, :-1])[0].float(), dim=-1)
    targets = tokens[0, 1:]
    chosen = log_probabilities[-tail:].gather(1, targets[-tail:, None]).squeeze(1)
    return -float(chosen.sum()) / math.log(2)


def evaluate_style_composer(
    composer: LoadedComposer,
    out_dir: str | Path,
    samples: int = 16,
    bars: int = 16,
    sampling: dict[str, Any] | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    max_test_pieces: int = 200,
    ngram_orders: Sequence[int] = (2, 3, 4, 6, 8),
    max_real_per_style: int = 200,
    infill_pieces: int = 20,
    infill_gap: int = 4,
) -> dict[str, Any]:
    """Evaluate a many-style composer; write ``composer_styles.json`` and ``.md`` and the generated MIDI.

    Args:
        composer: a loaded many-style composer.
        out_dir: created if needed.
        samples: pieces generated per style for the judge; bars, seed: how.
        sampling: keyword arguments of :func:`~timbre.symbolic.compose.compose_many` for them
            (``temperature``, ``top_k``, ``top_p``, ``style_guidance``; default: plain sampling).
        cache_dir: where the corpus cache lives (default as in training).
        max_test_pieces: test pieces scored per style (the n-gram is pure Python).
        ngram_orders: n-gram orders tried on each style's valid pieces.
        max_real_per_style: held-out real pieces per style the judge learns from.
        infill_pieces, infill_gap: held-out pieces whose middle ``infill_gap`` bars are regenerated.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sampling = {"temperature": 1.0, "top_k": None, "top_p": None, "style_guidance": 1.0, **(sampling or {})}
    # Checked before the slow part; every style of the composer is one to guide towards.
    check_style_guidance(composer, composer.conditions.styles[0], sampling["style_guidance"])  # type: ignore[union-attr]
    splits = style_splits_of(composer, cache_dir)
    started = time.perf_counter()
    likelihood = likelihood_by_style(composer, splits, max_test_pieces, ngram_orders)
    likelihood_seconds = time.perf_counter() - started
    judged = judge_styles(composer, splits, samples, bars, sampling, seed, max_real_per_style, out_dir)
    infilling = infilling_figures(composer, splits, infill_pieces, infill_gap, seed)
    applicable = [entry for entry in likelihood.values() if entry["target_applies"]]
    report = {
        "model": str(composer.path),
        "step": composer.step,
        "corpus": composer.artifacts.get("corpus"),
        "pieces": {
            style: {
                split: sum(p.style == style for p in getattr(splits, split)) for split in ("train", "valid", "test")
            }
            for style in composer.conditions.styles  # type: ignore[union-attr]
        },
        "likelihood": likelihood,
        "likelihood_target_met": all(entry["target_met"] for entry in applicable) if applicable else None,
        "likelihood_seconds": likelihood_seconds,
        "style_judge": judged,
        "infilling": infilling,
        "generation": {
            "samples_per_style": samples,
            "bars": bars,
            **sampling,
            "seed": seed,
            "weights": composer.weights,
        },  # fmt: skip
    }
    return write_report(out_dir, REPORT_STEM, report, markdown_report(report))


def markdown_report(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    likelihood, judged, infilling = report["likelihood"], report["style_judge"], report["infilling"]
    lines = [
        "# Many-style composer evaluation",
        "",
        f"Model: `{report['model']}` (step {report['step']}).",
        "",
        "## Held-out likelihood per style",
        "",
        markdown_table(
            ["style", "test pieces", "model bits/token", "n-gram bits/token (order)", "reduction", "target (>= 25%)"],
            [
                [style, str(e["test_pieces"]), number(e["model_bits_per_token"]),
                 f"{number(e['ngram_bits_per_token'])} ({e['ngram_order']})", percent(e["reduction_vs_ngram"]),
                 ("met" if e["target_met"] else "NOT met") if e["target_applies"] else "n/a (< 40 test pieces)"]
                for style, e in likelihood.items()
            ],
        ),
        "",
        "## Style judge",
        "",
    ]  # fmt: skip
    if "skipped" in judged:
        lines.append(f"Skipped: {judged['skipped']}.")
    else:
        real, played = judged["real_accuracy"], judged["as_played"]
        lines += [
            f"{judged['judge']}; trained on {real['pieces']} held-out real pieces. Accuracy on real pieces "
            f"({real['folds']}-fold cross-validation): **{percent(real['accuracy'])}**. Generated pieces classified "
            f"as the style asked for: **{percent(judged['generated_classified_as_asked'])}** (target >= 70%: "
            f"{'met' if judged['target_met'] else 'NOT met'}); generation "
            f"{judged['generated_tokens_per_second']:.0f} tokens/s with "
            f"{report['generation'].get('weights', 'float32')} weights ({_sampling_words(report['generation'])}).",
            "",
            f"The same judge on pitch-class histograms as played (keys not normalized): "
            f"{percent(played['real_accuracy']['accuracy'])} right on real pieces, "
            f"{percent(played['generated_classified_as_asked'])} of generated pieces classified as asked.",
            "",
            markdown_table(
                ["style", "judge accuracy on real pieces", "generated classified as asked", "generated predicted as",
                 "as played: real / generated"],
                [
                    [
                        style,
                        percent(real["per_style"].get(style, float("nan"))),
                        percent(entry["classified_as_asked"]),
                        ", ".join(f"{k} {v}" for k, v in sorted(entry["predicted"].items(), key=lambda kv: -kv[1])),
                        f"{percent(played['real_accuracy']['per_style'].get(style, float('nan')))} / "
                        f"{percent(played['generated'][style]['classified_as_asked'])}",
                    ]
                    for style, entry in judged["generated"].items()
                ],
            ),
        ]  # fmt: skip
    fill, left = infilling["middle_bits_per_token_infilling"], infilling["middle_bits_per_token_left_to_right"]
    lines += [
        "",
        "## Bar infilling",
        "",
        f"{infilling['pieces']} held-out pieces, the middle {infilling['gap_bars']} bars regenerated: kept bars "
        f"unchanged note for note: **{percent(infilling['kept_unchanged'])}** of {infilling['kept_notes']} notes. "
        f"Bits per token of the real middle bars ({infilling['middle_tokens']} tokens) given both sides: "
        f"{number(fill) if fill is not None else '-'}; given only the bars before: "
        f"{number(left) if left is not None else '-'}.",
    ]
    return "\n".join(lines) + "\n"


def _sampling_words(generation: dict[str, Any]) -> str:
    """How the judged pieces were sampled, e.g. ``16 pieces of 16 bars a style, temperature 1, style guidance 2``."""
    words = [f"{generation['samples_per_style']} pieces of {generation['bars']} bars a style"]
    words.append(f"temperature {generation.get('temperature', 1.0):g}")
    words += [f"{key.replace('_', '-')} {generation[key]:g}" for key in ("top_k", "top_p") if generation.get(key)]
    words.append(f"style guidance {generation.get('style_guidance', 1.0):g}")
    return ", ".join(words)


def summary_line(report: dict[str, Any]) -> str:
    """One line of the headline figures (what ``timbre evaluate composer`` prints)."""
    reductions = [f"{style} {100 * e['reduction_vs_ngram']:.0f}%" for style, e in report["likelihood"].items()]
    judged = report["style_judge"]
    judge = (
        f"judge (keys normalized) accuracy on real pieces {100 * judged['real_accuracy']['accuracy']:.0f}%, "
        f"generated classified as asked {100 * judged['generated_classified_as_asked']:.0f}% "
        f"(as played: {100 * judged['as_played']['real_accuracy']['accuracy']:.0f}% / "
        f"{100 * judged['as_played']['generated_classified_as_asked']:.0f}%)"
        if "skipped" not in judged
        else f"style judge skipped ({judged['skipped']})"
    )
    return (
        f"bits/token below the n-gram per style: {', '.join(reductions)}; {judge}; kept bars unchanged "
        f"{100 * report['infilling']['kept_unchanged']:.0f}%"
    )

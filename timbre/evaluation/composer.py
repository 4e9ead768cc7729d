"""Evaluation of a composer: held-out likelihood against an n-gram baseline, and music statistics.

Likelihood: bits per token on the test pieces of the model's own corpus split (rebuilt from the
recipe stored in the checkpoint), for the transformer and for an interpolated Kneser-Ney n-gram
fitted on the training pieces' tokens (order chosen on the validation pieces). Both score the
same targets: every token after BOS, up to and including EOS.

Statistics of generated pieces against the held-out pieces: pitch-class histogram distance,
pitch range per voice (program), polyphony and scale consistency.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch
import torch.nn.functional as F

from timbre.data.midi import CorpusSplits, corpus_files, tokenize_corpus
from timbre.errors import CheckpointError, DatasetError
from timbre.evaluation.report import markdown_table, number, percent, write_report
from timbre.io.files import atomic_write
from timbre.models.composer import Composer
from timbre.symbolic.compose import LoadedComposer, check_style_guidance, compose_many, load_composer
from timbre.symbolic.tokens import decode_ids

# Candidate n-gram orders; long orders pay off on chorales, whose corpus repeats whole phrases.
NGRAM_ORDERS = (2, 3, 4, 6, 8, 12, 16, 24)
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
# Krumhansl-Kessler key profiles (probe-tone ratings from the tonic up), for key estimation.
KRUMHANSL_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KRUMHANSL_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
REPORT_STEM = "composer"
NATURAL_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
# How the corpus code words a piece it leaves out, and how many of them the summary names.
SKIP_PREFIX = "skipping "
MAX_SKIPS_NAMED = 4


class KneserNeyModel:
    """Interpolated Kneser-Ney n-gram language model over token ids.

    Highest order uses raw counts, lower orders continuation counts (how many distinct tokens
    precede an n-gram); each order has one absolute discount ``n1 / (n1 + 2 n2)``; the unigram
    level is interpolated with the uniform distribution, so every token has non-zero probability.
    Contexts at the start of a sequence are padded with the sequence's first token (BOS).

    Args:
        order: n of the n-gram (1 = unigram).
        vocab_size: number of token ids.
    """

    def __init__(self, order: int, vocab_size: int) -> None:
        if order < 1:
            raise ValueError(f"n-gram order must be >= 1, got {order}")
        self.order, self.vocab_size = order, vocab_size
        # counts[n][context][token], n = context length 0..order-1
        self.counts: list[dict[tuple[int, ...], dict[int, int]]] = [defaultdict(dict) for _ in range(order)]
        self.totals: list[dict[tuple[int, ...], int]] = []
        self.discounts: list[float] = []

    def fit(self, sequences: Sequence[Sequence[int] | np.ndarray]) -> KneserNeyModel:
        """Count n-grams of ``sequences`` (each starting with BOS); returns self."""
        top = self.order - 1
        highest: dict[tuple[int, ...], dict[int, int]] = defaultdict(dict)
        for sequence in sequences:
            padded = [sequence[0]] * top + list(sequence)
            for i in range(top + 1, len(padded)):
                context, token = tuple(padded[i - top : i]), padded[i]
                highest[context][token] = highest[context].get(token, 0) + 1
        self.counts[top] = highest
        # Lower orders: continuation counts N1+(. context token), derived from the order above.
        for n in range(top - 1, -1, -1):
            lower: dict[tuple[int, ...], dict[int, int]] = defaultdict(dict)
            for context, tokens in self.counts[n + 1].items():
                shorter = context[1:]
                for token in tokens:
                    lower[shorter][token] = lower[shorter].get(token, 0) + 1
            self.counts[n] = lower
        self.totals = [{c: sum(t.values()) for c, t in level.items()} for level in self.counts]
        self.discounts = []
        for level in self.counts:
            values = [count for tokens in level.values() for count in tokens.values()]
            n1, n2 = values.count(1), values.count(2)
            self.discounts.append(n1 / (n1 + 2 * n2) if n1 + n2 else 0.5)
        return self

    def probability(self, context: tuple[int, ...], token: int) -> float:
        """P(token | the last ``order - 1`` tokens of ``context``)."""
        probability = 1.0 / self.vocab_size
        for n in range(self.order):
            history = context[len(context) - n :] if n else ()
            tokens = self.counts[n].get(history)
            if not tokens:
                continue  # unseen context: keep the lower-order estimate
            total, discount = self.totals[n][history], self.discounts[n]
            probability = (
                max(tokens.get(token, 0) - discount, 0.0) / total + discount * len(tokens) / total * probability
            )
        return probability

    def bits_per_token(self, sequences: Sequence[Sequence[int] | np.ndarray]) -> float:
        """Mean -log2 P of every token after the first (BOS) of ``sequences``."""
        top = self.order - 1
        bits, count = 0.0, 0
        for sequence in sequences:
            padded = [sequence[0]] * top + list(sequence)
            for i in range(top + 1, len(padded)):
                bits -= math.log2(self.probability(tuple(padded[i - top : i]), padded[i]))
                count += 1
        return bits / max(count, 1)


def ngram_baseline(splits: CorpusSplits, vocab_size: int, orders: Sequence[int] = NGRAM_ORDERS) -> dict[str, Any]:
    """Fit Kneser-Ney n-grams on the train pieces, pick the order best on valid, score test."""
    tune = splits.valid or splits.train
    results = {}
    for order in orders:
        model = KneserNeyModel(order, vocab_size).fit(splits.train)
        results[order] = (model.bits_per_token(tune), model)
    best = min(results, key=lambda order: results[order][0])
    return {
        "order": best,
        "valid_bits_per_token": {str(order): bits for order, (bits, _) in results.items()},
        "test_bits_per_token": results[best][1].bits_per_token(splits.test),
    }


@torch.inference_mode()
def model_bits_per_token(model: Composer, sequences: Sequence[np.ndarray], context: int | None = None) -> float:
    """Mean -log2 P of every token after BOS, with sliding windows for pieces longer than ``context``.

    Windows of ``context`` tokens advance by half a window; each target is scored once, with
    at least half a window of history once past the first window.
    """
    context = context or model.max_context
    stride = max(context // 2, 1)
    bits, count = 0.0, 0
    for sequence in sequences:
        tokens = torch.as_tensor(sequence, dtype=torch.long)
        scored_until = 1  # index of the next target to score
        start = 0
        while scored_until < len(tokens):
            window = tokens[start : start + context]
            logits = model(window[None, :-1])[0]
            log_probabilities = F.log_softmax(logits.float(), dim=-1)
            targets = window[1:]
            first = scored_until - start - 1  # targets[first] is tokens[scored_until]
            chosen = log_probabilities[first:].gather(1, targets[first:, None]).squeeze(1)
            bits -= float(chosen.sum()) / math.log(2)
            count += len(chosen)
            scored_until = start + len(window)
            start += stride
    return bits / max(count, 1)


def pitch_class_histogram(scores: Sequence[symusic.Score]) -> np.ndarray:
    """Share of notes per pitch class (C=0) over all pitched notes: ``[12]``."""
    histogram = np.zeros(12)
    for score in scores:
        for track in score.tracks:
            if not track.is_drum:
                for note in track.notes:
                    histogram[note.pitch % 12] += 1
    return histogram / max(histogram.sum(), 1)


def key_normalized_pitch_class_histogram(scores: Sequence[symusic.Score]) -> np.ndarray:
    """Mean over pieces of each piece's pitch-class histogram transposed to C: ``[12]``.

    Each piece is rotated so that its estimated key starts on C (minor pieces land on their
    relative major, A minor; :func:`transposed_to_c`), which makes pieces in different keys
    comparable.
    """
    histograms = [transposed_to_c(pitch_class_histogram([score])) for score in scores]
    return np.mean(histograms, axis=0) if histograms else np.zeros(12)


def transposed_to_c(histogram: np.ndarray) -> np.ndarray:
    """A pitch-class histogram ``[12]`` rotated so that its key's tonic is C, a minor key's
    relative major tonic for a minor piece (A minor lands on A).

    The key is the Krumhansl-Schmuckler estimate: the major or minor Krumhansl-Kessler profile,
    at the tonic, that correlates best with the histogram. Unlike counting the notes inside each
    major scale, the profiles weigh tonic and dominant, so a tune does not tie between the keys
    a fifth apart and land on either, depending on the key it was played in.
    """
    if np.ptp(histogram) == 0:  # no notes, or every pitch class alike: no key to find
        return histogram.copy()
    correlations = [
        (float(np.corrcoef(np.roll(histogram, -tonic), profile)[0, 1]), (tonic + shift) % 12)
        for tonic in range(12)
        for profile, shift in ((KRUMHANSL_MAJOR, 0), (KRUMHANSL_MINOR, 3))
    ]
    major_tonic = max(correlations, key=lambda pair: pair[0])[1]
    return np.roll(histogram, -major_tonic)


def pitch_ranges(scores: Sequence[symusic.Score]) -> dict[str, dict[str, float]]:
    """Per program: lowest, highest and mean pitch, and mean per-piece range in semitones."""
    pitches: dict[int, list[int]] = defaultdict(list)
    spans: dict[int, list[int]] = defaultdict(list)
    for score in scores:
        for track in score.tracks:
            if track.is_drum or not len(track.notes):
                continue
            values = [note.pitch for note in track.notes]
            pitches[track.program] += values
            spans[track.program].append(max(values) - min(values))
    return {
        str(program): {
            "lowest": int(min(values)),
            "highest": int(max(values)),
            "mean": float(np.mean(values)),
            "range_per_piece": float(np.mean(spans[program])),
        }
        for program, values in sorted(pitches.items())
    }


def polyphony(score: symusic.Score) -> float:
    """Mean number of notes sounding, over the ticks where at least one sounds."""
    end = score.end()
    if end <= 0:
        return 0.0
    change = np.zeros(end + 1, dtype=np.int64)
    for track in score.tracks:
        for note in track.notes:
            change[note.time] += 1
            change[min(note.time + max(note.duration, 1), end)] -= 1
    sounding = np.cumsum(change)[:end]
    active = sounding[sounding > 0]
    return float(active.mean()) if len(active) else 0.0


def scale_consistency(score: symusic.Score) -> float:
    """Largest share of the piece's pitched notes inside one major or natural-minor scale."""
    histogram = pitch_class_histogram([score])
    best = 0.0
    for tonic in range(12):
        for scale in (MAJOR_SCALE, NATURAL_MINOR_SCALE):
            best = max(best, sum(histogram[(tonic + step) % 12] for step in scale))
    return float(best)


def music_statistics(scores: Sequence[symusic.Score]) -> dict[str, Any]:
    """Statistics of a set of pieces (see the module docstring)."""
    return {
        "pieces": len(scores),
        "notes_per_quarter": float(
            np.mean([score.note_num() * score.ticks_per_quarter / max(score.end(), 1) for score in scores])
        ),
        "voices_per_piece": float(np.mean([sum(len(track.notes) > 0 for track in score.tracks) for score in scores])),
        "pitch_class_histogram": pitch_class_histogram(scores).round(4).tolist(),
        "key_normalized_pitch_class_histogram": key_normalized_pitch_class_histogram(scores).round(4).tolist(),
        "pitch_range_per_program": pitch_ranges(scores),
        "polyphony": float(np.mean([polyphony(score) for score in scores])),
        "scale_consistency": float(np.mean([scale_consistency(score) for score in scores])),
    }


def total_variation(first: Sequence[float], second: Sequence[float]) -> float:
    """Total variation distance of two histograms: 0 identical, 1 disjoint."""
    return 0.5 * float(np.abs(np.asarray(first) - np.asarray(second)).sum())


def corpus_splits_of(
    composer: LoadedComposer, cache_dir: str | Path | None = None, progress: bool = False
) -> CorpusSplits:
    """Re-create the train/valid/test token splits the composer was trained on.

    The first run converts the corpus (minutes for the chorales; ``progress`` shows a bar). Pieces
    that cannot be converted or read are left out as in training, reported in one warning line;
    other warnings raised meanwhile (music21's own) are dropped.
    """
    recipe = composer.artifacts.get("corpus")
    if not recipe:
        raise CheckpointError(f"{composer.path}: checkpoint has no corpus recipe to rebuild its test split")
    with _skipped_pieces_summarised():
        files = corpus_files(recipe["corpus"], recipe["folder"], cache_dir, recipe["limit"], progress)
        splits = tokenize_corpus(composer.tokenizer, files, recipe["valid"], recipe["test"], recipe["seed"])
    if not splits.test:
        raise DatasetError(f"{composer.path}: its corpus recipe holds out no test pieces (test={recipe['test']})")
    return splits


@contextlib.contextmanager
def _skipped_pieces_summarised() -> Iterator[None]:
    """Hold back the block's warnings; then warn once naming the pieces it skipped.

    The corpus code warns ``skipping <piece>: <reason>`` per piece; music21 adds warnings of its
    own while parsing, which say nothing a user can act on.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    skipped = [str(w.message).removeprefix(SKIP_PREFIX) for w in caught if str(w.message).startswith(SKIP_PREFIX)]
    if skipped:
        pieces = [reason.split(": ")[0] for reason in skipped]
        shown = ", ".join(pieces[:MAX_SKIPS_NAMED]) + (", ..." if len(pieces) > MAX_SKIPS_NAMED else "")
        warnings.warn(
            f"{len(skipped)} piece{'s' * (len(skipped) != 1)} of the corpus could not be converted or read and "
            f"{'are' if len(skipped) != 1 else 'is'} left out, as in training: {shown}",
            stacklevel=3,
        )


def evaluate_composer(
    model: str | Path | None,
    out_dir: str | Path,
    samples: int = 16,
    bars: int = 16,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    style_guidance: float = 1.0,
) -> dict[str, Any]:
    """Evaluate a composer checkpoint (default: the bundled one); write ``composer.json`` and ``composer.md``.

    Args:
        model: checkpoint file or run directory, None for the bundled model.
        out_dir: created if needed; also receives the generated pieces as ``sample_XX.mid``.
        samples, bars, temperature, top_k, top_p, seed: the pieces generated for the statistics.
        cache_dir: where the corpus cache lives (default as in training).
        progress: show a progress bar while the corpus is converted (the first run only).
        style_guidance: classifier-free guidance of the pieces generated for each style (a
            many-style composer; see :func:`timbre.symbolic.compose.compose`).

    Returns:
        The report written to ``composer.json``.
    """
    composer = load_composer(model)
    if composer.conditions is not None:  # a many-style composer: per-style report, style judge, infilling
        from timbre.evaluation.style_judge import evaluate_style_composer

        sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "style_guidance": style_guidance}
        return evaluate_style_composer(composer, out_dir, samples, bars, sampling, seed, cache_dir)
    check_style_guidance(composer, None, style_guidance)  # refuses any guidance: there is no style
    out_dir = Path(out_dir)
    splits = corpus_splits_of(composer, cache_dir, progress)
    started = time.perf_counter()
    baseline = ngram_baseline(splits, len(composer.tokenizer))
    model_bits = model_bits_per_token(composer.model, splits.test)
    likelihood_seconds = time.perf_counter() - started

    started = time.perf_counter()
    generated = compose_many(composer, samples, bars=bars, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    generation_seconds = time.perf_counter() - started
    reference = [decode_ids(composer.tokenizer, piece) for piece in splits.test]
    generated_stats, reference_stats = music_statistics(generated), music_statistics(reference)
    distance, key_normalized_distance = (
        total_variation(generated_stats[name], reference_stats[name])
        for name in ("pitch_class_histogram", "key_normalized_pitch_class_histogram")
    )
    baseline_bits = baseline["test_bits_per_token"]
    report = {
        "model": str(composer.path),
        "step": composer.step,
        "corpus": composer.artifacts.get("corpus"),
        "pieces": {"train": len(splits.train), "valid": len(splits.valid), "test": len(splits.test)},
        "test_tokens": int(sum(len(piece) - 1 for piece in splits.test)),
        "likelihood": {
            "model_bits_per_token": model_bits,
            "ngram_bits_per_token": baseline_bits,
            "ngram_order": baseline["order"],
            "ngram_valid_bits_per_token_by_order": baseline["valid_bits_per_token"],
            "reduction_vs_ngram": 1.0 - model_bits / baseline_bits,
            "target_reduction": 0.25,
            "target_met": model_bits <= 0.75 * baseline_bits,
            "seconds": likelihood_seconds,
        },
        "generation": {
            "samples": samples,
            "bars": bars,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "seed": seed,
            "weights": composer.weights,
            "seconds": generation_seconds,
        },
        "statistics": {
            "generated": generated_stats,
            "held_out": reference_stats,
            "pitch_class_histogram_distance": distance,
            "key_normalized_pitch_class_histogram_distance": key_normalized_distance,
        },
    }
    for index, score in enumerate(generated):  # written once everything has been computed
        with atomic_write(out_dir / f"sample_{index:02d}.mid") as file:
            file.write(score.dumps_midi())
    return write_report(out_dir, REPORT_STEM, report, markdown_report(report))


def markdown_report(report: dict[str, Any]) -> str:
    """The evaluation report as Markdown tables."""
    likelihood, statistics = report["likelihood"], report["statistics"]
    generated, held_out = statistics["generated"], statistics["held_out"]
    generation = report["generation"]
    ranges = [generated["pitch_range_per_program"], held_out["pitch_range_per_program"]]
    range_rows = []
    for program in sorted(set(ranges[0]) | set(ranges[1]), key=int):
        entries = [stats.get(program) for stats in ranges]
        range_rows.append([
            program,
            *(f"{entry['lowest']}-{entry['highest']} ({entry['mean']:.1f})" if entry else "-" for entry in entries),
            " / ".join(f"{entry['range_per_piece']:.1f}" if entry else "-" for entry in entries),
        ])  # fmt: skip
    lines = [
        "# Composer evaluation",
        "",
        (f"Model: `{report['model']}` (step {report['step']}); corpus {report['corpus']}; "
        f"pieces train/valid/test {report['pieces']['train']}/{report['pieces']['valid']}/{report['pieces']['test']}."),
        "",
        "## Held-out likelihood",
        "",
        f"On {report['test_tokens']:,} test tokens (every token after BOS, EOS included):",
        "",
        markdown_table(["model", "bits per token"], [
            ["transformer", number(likelihood["model_bits_per_token"])],
            [f"Kneser-Ney {likelihood['ngram_order']}-gram (order chosen on valid)",
             number(likelihood["ngram_bits_per_token"])],
        ]),
        "",
        (f"Reduction against the n-gram: **{percent(likelihood['reduction_vs_ngram'])}** "
        f"(target >= {percent(likelihood['target_reduction'], 0)}: "
        f"{'met' if likelihood['target_met'] else 'NOT met'})."),
        "",
        "## Generated pieces against held-out pieces",
        "",
        (f"{generation['samples']} pieces of {generation['bars']} bars, temperature {generation['temperature']}, "
        f"top-k {generation['top_k']}, top-p {generation['top_p']}, seed {generation['seed']}, "
        f"{generation.get('weights', 'float32')} weights "
        f"({generation['seconds']:.1f} s)."),
        "",
        markdown_table(["statistic", "generated", "held out"], [
            ["notes per quarter note", number(generated["notes_per_quarter"], 2),
             number(held_out["notes_per_quarter"], 2)],
            ["voices per piece", number(generated["voices_per_piece"], 2), number(held_out["voices_per_piece"], 2)],
            ["polyphony (notes sounding)", number(generated["polyphony"], 2), number(held_out["polyphony"], 2)],
            ["scale consistency", number(generated["scale_consistency"]), number(held_out["scale_consistency"])],
        ]),
        "",
        ("Pitch-class histogram distance (total variation, 0 = identical, 1 = disjoint): "
        f"{statistics['pitch_class_histogram_distance']:.3f} as played; "
        f"{statistics['key_normalized_pitch_class_histogram_distance']:.3f} with every piece transposed to C. "
        "The first also compares which keys the pieces are in; the second only how pitches are used within a key."),
        "",
        markdown_table(
            ["program", "generated lowest-highest (mean)", "held out lowest-highest (mean)",
             "range per piece gen / held out"],
            range_rows,
        ),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"

"""Style guidance against style adherence: how often generated pieces are judged the style asked for.

Usage: python benchmarks/style_guidance.py --model PATH [--scales 1,1.5,2,3] [--samples 8] [--bars 16]
    [--temperature 1] [--seed 0] [--cache-dir DIR]

The style judges of ``timbre evaluate composer`` (logistic regressions on symbolic features, trained
on the composer's own held-out pieces; the headline one sees pitch-class histograms transposed to C,
the other as played) classify pieces generated for every style at each guidance scale; scale 1 is
plain sampling, the baseline. The same seeds are used at every scale. Besides the
share classified as asked (overall and per style), the table gives the generation speed (a guided
token steps two sequences: the style's and the "any" style's) and the mean bits per token of the
sampled pieces under the plain style-conditioned model (their notes, without an end token: how far
sampling strays from what the model itself finds likely; guidance and temperature move it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import symusic
import torch

from timbre.evaluation.style_judge import conditioned_bits, fit_judge, judge_generated, style_splits_of
from timbre.symbolic.compose import LoadedComposer, load_composer


def scales(text: str) -> list[float]:
    try:
        values = [float(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected scales such as 1,1.5,2, got {text!r}") from None
    if not all(value >= 0 and value != float("inf") for value in values):
        raise argparse.ArgumentTypeError(f"scales must be finite numbers >= 0, got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="many-style composer checkpoint or run directory")
    parser.add_argument("--scales", type=scales, default=[1.0, 1.5, 2.0, 3.0], help="guidance scales (1 = none)")
    parser.add_argument("--samples", type=int, default=8, help="pieces generated per style and scale (default: 8)")
    parser.add_argument("--bars", type=int, default=16, help="bars per piece (default: 16)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the judge and the pieces (default: 0)")
    parser.add_argument("--max-real", type=int, default=200, help="held-out real pieces per style for the judge")
    parser.add_argument("--cache-dir", help="corpus cache root (default: as in training)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    composer = load_composer(args.model)
    if composer.conditions is None:
        raise SystemExit(f"{args.model}: not a many-style composer")
    splits = style_splits_of(composer, args.cache_dir)
    fitted = fit_judge(composer, splits, args.max_real, args.seed)
    if fitted is None:
        raise SystemExit(f"{args.model}: fewer than two styles have two held-out pieces")
    judges, accuracies = fitted
    accuracy, played = accuracies["key_normalized"], accuracies["as_played"]
    styles = [style for style in composer.conditions.styles if style in accuracy["per_style"]]
    print(
        f"{composer.path} (step {composer.step}); judge accuracy on {accuracy['pieces']} held-out real pieces "
        f"({accuracy['folds']}-fold): {100 * accuracy['accuracy']:.1f}% with keys normalized, "
        f"{100 * played['accuracy']:.1f}% as played; {args.samples} pieces of {args.bars} bars per style, "
        f"temperature {args.temperature:g}, seed {args.seed}"
    )
    print()
    print(
        "| guidance | classified as asked (keys normalized) | as played | tokens/s | sample bits/token | "
        f"{' | '.join(styles)} |"
    )
    print(f"|---|---|---|---|---|{'---|' * len(styles)}")
    for scale in args.scales:
        sampling = {"temperature": args.temperature, "style_guidance": scale}
        with tempfile.TemporaryDirectory() as folder:
            judged = judge_generated(
                composer, judges, styles, args.samples, args.bars, sampling, args.seed, Path(folder)
            )
            bits = sample_bits(composer, Path(folder))
        headline = judged["key_normalized"]
        per_style = " | ".join(f"{100 * headline['generated'][style]['classified_as_asked']:.0f}%" for style in styles)
        print(
            f"| {scale:g} | {100 * headline['generated_classified_as_asked']:.1f}% | "
            f"{100 * judged['as_played']['generated_classified_as_asked']:.1f}% | "
            f"{judged['generated_tokens_per_second']:.0f} | {bits:.3f} | {per_style} |"
        )
    print()
    print("real pieces, judge (keys normalized) accuracy per style: " + ", ".join(
        f"{style} {100 * accuracy['per_style'][style]:.0f}%" for style in styles))  # fmt: skip


def sample_bits(composer: LoadedComposer, folder: Path) -> float:
    """Mean bits per token of the pieces ``<style>_NN.mid`` in ``folder`` under the plain
    style-conditioned model, each after the opening it was sampled with (``BOS Style Voices_any``)."""
    sequences = []
    for path in sorted(folder.glob("*.mid")):
        style = path.stem.rsplit("_", 1)[0]
        ids = composer.tokenizer.encode(symusic.Score(str(path))).ids
        sequences.append(np.asarray([*composer.head(style), *ids], dtype=np.int64))
    return conditioned_bits(composer.model, sequences)


if __name__ == "__main__":
    main()

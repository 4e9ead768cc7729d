"""Ship a trained run inside the package: an inference-only checkpoint and its model card.

    python -m timbre.train.export runs/fast --name fast \\
        --data-command "timbre dataset build ..." --report reports/fast/report.md

writes ``timbre/pretrained/fast/model.pt`` (EMA weights and the model spec, no optimizer state)
and ``timbre/pretrained/fast/MODEL_CARD.md`` (config, exact command, data, steps, wall time and the
evaluation report's measured metrics, pasted verbatim).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from timbre.cli.common import finite_float, non_negative_float, non_negative_int
from timbre.constants import PRETRAINED_DIR, TIMBRE_SET_DIR
from timbre.errors import ConfigError, TimbreError
from timbre.io.files import atomic_write
from timbre.train.checkpoint import export_inference_checkpoint, load_checkpoint, load_model, save_checkpoint

# The card's words for each sampling default (timbre.train.checkpoint.SAMPLING_DEFAULTS).
SAMPLING_WORDS = {
    "temperature": "Sampling temperature",
    "clock_gain": "Pitch clock gain",
    "makeup_db": "Make-up gain after decoding (dB)",
}


def export_run(
    run: str | Path,
    name: str,
    description: str = "",
    data_command: str = "",
    report: str | Path | None = None,
    destination: str | Path | None = None,
    sampling: Mapping[str, float] | None = None,
    refine_steps: int = 0,
    half: bool = False,
) -> Path:
    """Export ``run``'s latest checkpoint as bundled model ``name``; returns its directory.

    ``sampling``: how the model's autoregressive decoder decodes by default (``temperature``,
    ``clock_gain``, ``makeup_db``: see :func:`~timbre.train.checkpoint.export_inference_checkpoint`),
    stated in the card; refused for a model it would not change (a parallel decoder; a clock gain
    without a pitch clock). ``refine_steps``: the refinement steps ``encode`` takes by default,
    stated in the card; parallel decoders only. ``half``: float16 weights (half the file; see
    :func:`~timbre.train.checkpoint.export_inference_checkpoint`).
    """
    destination = Path(destination) if destination else PRETRAINED_DIR / name
    checkpoint = load_checkpoint(run)
    if sampling:
        decoder = checkpoint["model_config"].get("settings", {}).get("decoder", {})
        if decoder.get("kind") != "wavenet":
            raise ConfigError(f"{run}: sampling settings apply to autoregressive (wavenet) decoders only")
        if "clock_gain" in sampling and not decoder.get("source_harmonics"):
            raise ConfigError(f"{run}: a clock gain applies to WaveNet decoders with a pitch clock only")
    if refine_steps and checkpoint["model_config"].get("settings", {}).get("decoder", {}).get("kind") == "wavenet":
        raise ConfigError(f"{run}: only a parallel decoder can refine an embedding; refine steps do not apply")
    export_inference_checkpoint(checkpoint["path"], destination / "model.pt", sampling, refine_steps, half)
    if refine_steps:
        store_timbre_set_encodings(destination / "model.pt")
    model, _ = load_model(destination / "model.pt")
    card = model_card(
        name, description, checkpoint, model, data_command, Path(report) if report else None, sampling, refine_steps,
        half,
    )  # fmt: skip
    with atomic_write(destination / "MODEL_CARD.md", mode="w") as handle:
        handle.write(card)
    return destination


def store_timbre_set_encodings(model_file: Path, timbre_set: str | Path = TIMBRE_SET_DIR) -> int:
    """Refine the encodings of a timbre set's notes once, now, and store them in ``model_file``.

    ``encode`` of such a note, told its pitch or nothing, then returns the stored embedding instead of taking
    the model's default refinement steps again (:attr:`timbre.TimbreModel.known_embeddings`): the
    live instrument, the demo and MIDI renders start from the bundled set without that wait.

    Returns:
        How many encodings were stored (two a note).
    """
    from timbre.hub import load
    from timbre.io.audio import load_audio
    from timbre.render.timbres import TimbreSet
    from timbre.synthesizer import encoding_key

    model = load(model_file)
    known: dict[str, dict[str, Any]] = {}
    for entry in tqdm(TimbreSet(timbre_set).entries, desc="refining the timbre set", unit="note"):
        audio = load_audio(entry.path, model.sample_rate)
        for pitch in (entry.pitch, None):  # told the note's pitch, as renders are, and told nothing
            embedding = model.encode(audio, pitch=pitch)
            known[encoding_key(audio, pitch, model.default_refine)] = {
                "tensor": embedding.tensor.contiguous(),
                "extra": embedding.extra,
            }
    exported = load_checkpoint(model_file)
    for added_on_load in ("format", "path"):
        exported.pop(added_on_load)
    save_checkpoint(model_file, {**exported, "known_embeddings": known})
    return len(known)


def model_card(
    name: str,
    description: str,
    checkpoint: dict,
    model: torch.nn.Module,
    data_command: str,
    report: Path | None,
    sampling: Mapping[str, float] | None = None,
    refine_steps: int = 0,
    half: bool = False,
) -> str:
    """The Markdown model card of an exported run."""
    run = checkpoint.get("run", {})
    training = checkpoint.get("training", {})
    settings = training.get("settings", {})
    parameters = sum(p.numel() for p in model.parameters())
    config = run.get("config", {})
    lines = [
        f"# {name}",
        "",
        description,
        "",
        "## Facts",
        "",
        f"- Model: {describe_spec(checkpoint['model_config'])}, {parameters:,} parameters "
        f"(EMA weights; inference-only checkpoint, {'stored in float16, loaded float32' if half else 'float32'}).",
        f"- Training steps: {training.get('step')} at batch {settings.get('batch_size')} "
        f"({run.get('world_size', 1)} process(es)); wall time {run.get('wall_seconds', 0) / 60:.1f} min on a "
        "2-core CPU shared with other jobs.",
        f"- Training command: `{run.get('command', 'unknown')}` (interrupted and resumed with "
        "`trainer.resume=RUN_DIR` when needed; resumption is exact).",
        f"- Data command: `{data_command or 'see the training config'}`",
        *(
            f"- {SAMPLING_WORDS[key]} by default: {value:g} (when `synthesize` is given none)."
            for key, value in (sampling or {}).items()
        ),
        *(
            [
                f"- Refinement steps of `encode` by default: {refine_steps} (`encode(sound, refine=0)` "
                "encodes in one pass)."
            ]
            if refine_steps
            else []
        ),
        "",
        "## Resolved training config",
        "",
        "```json",
        json.dumps({key: config.get(key) for key in ("model", "data", "trainer")}, indent=2),
        "```",
        "",
        "## Measured metrics",
        "",
    ]
    if report is not None and report.is_file():
        text = report.read_text()
        # The report's own title is replaced by this section's; its pictures stay with the report.
        body = [line for line in text.splitlines() if not line.startswith("# ") and not line.startswith("![")]
        lines += [f"From `{report}`:", "", *body]
    else:
        lines.append("No evaluation report was given.")
    return "\n".join(lines).rstrip() + "\n"


def describe_spec(spec: dict) -> str:
    """``autoencoder (wavenet encoder, harmonic_noise decoder)`` or ``composer``: a model spec in words."""
    settings = spec["settings"]
    parts = [f"{settings[part]['kind']} {part}" for part in ("encoder", "decoder") if part in settings]
    return f"{spec['family']} ({', '.join(parts)})" if parts else spec["family"]


def main() -> None:
    parser = argparse.ArgumentParser(description="Export a training run as a bundled model with a model card.")
    parser.add_argument("run", help="run directory or checkpoint")
    parser.add_argument("--name", required=True, help="bundled name, e.g. fast, wavenet-v2, composer-chorales")
    parser.add_argument("--description", default="")
    parser.add_argument("--data-command", default="")
    parser.add_argument("--report", default=None, help="report.md of an evaluation to paste into the card")
    parser.add_argument("--out", default=None, help="destination directory (default: timbre/pretrained/NAME)")
    parser.add_argument(
        "--temperature",
        type=non_negative_float,
        default=None,
        help="default sampling temperature of an autoregressive decoder (0 is greedy)",
    )
    parser.add_argument(
        "--clock-gain",
        type=non_negative_float,
        default=None,
        help="default gain of a WaveNet decoder's pitch clock (see timbre.generation.engine)",
    )
    parser.add_argument(
        "--makeup-db",
        type=finite_float,
        default=None,
        help="gain in dB applied to an autoregressive decoder's audio (e.g. the level a clock gain loses)",
    )
    parser.add_argument(
        "--refine",
        type=non_negative_int,
        default=0,
        metavar="STEPS",
        help="refinement steps encode takes by default (parallel decoders; see timbre.models.refine)",
    )
    parser.add_argument(
        "--half", action="store_true", help="store the weights in float16 (half the file; they load in float32)"
    )
    args = parser.parse_args()
    given = {"temperature": args.temperature, "clock_gain": args.clock_gain, "makeup_db": args.makeup_db}
    sampling = {key: value for key, value in given.items() if value is not None}
    try:
        destination = export_run(
            args.run, args.name, args.description, args.data_command, args.report, args.out, sampling, args.refine,
            args.half,
        )  # fmt: skip
    except TimbreError as error:
        print(f"timbre.train.export: error: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {destination}")


if __name__ == "__main__":
    main()

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

import torch

from timbre.cli.common import finite_float, non_negative_float
from timbre.constants import PRETRAINED_DIR
from timbre.errors import ConfigError, TimbreError
from timbre.io.files import atomic_write
from timbre.train.checkpoint import export_inference_checkpoint, load_checkpoint, load_model

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
) -> Path:
    """Export ``run``'s latest checkpoint as bundled model ``name``; returns its directory.

    ``sampling``: how the model's autoregressive decoder decodes by default (``temperature``,
    ``clock_gain``, ``makeup_db``: see :func:`~timbre.train.checkpoint.export_inference_checkpoint`),
    stated in the card; refused for a model it would not change (a parallel decoder; a clock gain
    without a pitch clock).
    """
    destination = Path(destination) if destination else PRETRAINED_DIR / name
    checkpoint = load_checkpoint(run)
    if sampling:
        decoder = checkpoint["model_config"].get("settings", {}).get("decoder", {})
        if decoder.get("kind") != "wavenet":
            raise ConfigError(f"{run}: sampling settings apply to autoregressive (wavenet) decoders only")
        if "clock_gain" in sampling and not decoder.get("source_harmonics"):
            raise ConfigError(f"{run}: a clock gain applies to WaveNet decoders with a pitch clock only")
    export_inference_checkpoint(checkpoint["path"], destination / "model.pt", sampling)
    model, _ = load_model(destination / "model.pt")
    card = model_card(name, description, checkpoint, model, data_command, Path(report) if report else None, sampling)
    with atomic_write(destination / "MODEL_CARD.md", mode="w") as handle:
        handle.write(card)
    return destination


def model_card(
    name: str,
    description: str,
    checkpoint: dict,
    model: torch.nn.Module,
    data_command: str,
    report: Path | None,
    sampling: Mapping[str, float] | None = None,
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
        "(EMA weights; inference-only checkpoint, float32).",
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
    args = parser.parse_args()
    given = {"temperature": args.temperature, "clock_gain": args.clock_gain, "makeup_db": args.makeup_db}
    sampling = {key: value for key, value in given.items() if value is not None}
    try:
        destination = export_run(
            args.run, args.name, args.description, args.data_command, args.report, args.out, sampling
        )
    except TimbreError as error:
        print(f"timbre.train.export: error: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {destination}")


if __name__ == "__main__":
    main()

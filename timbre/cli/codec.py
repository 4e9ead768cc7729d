"""``timbre encode`` and ``timbre decode``: audio to embedding and back."""

from __future__ import annotations

import argparse
from pathlib import Path

from timbre.cli.common import (
    add_device_argument,
    add_model_argument,
    add_synthesis_arguments,
    check_inputs_exist,
    check_output_file,
    load_model,
    midi_pitch,
    non_negative_float,
    non_negative_int,
    report_written,
    warn_if_outside_training_range,
)
from timbre.cli.render import DEFAULT_MODELS


def register(subparsers: argparse._SubParsersAction) -> None:
    encode = subparsers.add_parser(
        "encode", help="encode an audio file into a timbre embedding (.npy)", description=run_encode.__doc__
    )
    encode.add_argument("input", help="audio file (WAV/FLAC/OGG, any rate, mono or stereo)")
    encode.add_argument("--out", required=True, help="output .npy (metadata goes to a .json beside it)")
    encode.add_argument("--pitch", type=midi_pitch, default=None, help="MIDI pitch of the input note, if known")
    encode.add_argument(
        "--refine", type=non_negative_int, default=None, metavar="STEPS",
        help="move the embedding by STEPS gradient steps towards one the decoder renders closer to the input "
        "(parallel decoder; ~0.2 s per step for a 4 s note; the pitch is --pitch, else estimated; default: "
        "the model's own, stated in its card; 0 encodes in one pass)",
    )  # fmt: skip
    add_model_argument(encode)
    encode.set_defaults(handler=run_encode)

    decode = subparsers.add_parser("decode", help="synthesize a note from an embedding", description=run_decode.__doc__)
    decode.add_argument("input", help="embedding .npy written by `timbre encode`")
    decode.add_argument("--out", required=True, help="output WAV")
    add_synthesis_arguments(decode, seconds_default=None)
    decode.add_argument(
        "--weights",
        choices=("float32", "bfloat16", "int8"),
        default="float32",
        help="precision of the wavenet decoder's weights: bfloat16 and int8 decode faster at NSynth size "
        "(default: float32)",
    )
    decode.add_argument(
        "--clock-gain",
        type=non_negative_float,
        default=None,
        help="how strongly a pitch-clock WaveNet is held to its pitch, 1 as trained (default: the model's)",
    )
    decode.add_argument(
        "--decoder",
        choices=sorted(DEFAULT_MODELS),
        help="decode with the bundled model of this decoder: fast (parallel) or wavenet (autoregressive); "
        "an embedding of the default model decodes with either when they share its encoder (default: --model's)",
    )
    decode.add_argument(
        "--model",
        help="bundled model name (default, fast-v5, wavenet, wavenet-v1, ...) or a checkpoint / run directory "
        "(default: the bundled model of --decoder, else default)",
    )
    add_device_argument(decode)
    decode.set_defaults(handler=run_decode)


def run_encode(args: argparse.Namespace) -> int:
    """Encode an audio file into a temporal embedding [frames, dims] saved as .npy (+ .json metadata)."""
    check_inputs_exist([args.input])
    out = check_output_file(args.out, [args.input], (".npy",))
    check_output_file(out.with_suffix(".json"), [args.input], (".json",))
    model = load_model(args)
    embedding = model.encode(args.input, pitch=args.pitch, refine=args.refine, progress=True)
    path = embedding.save(args.out)
    print(f"encoded {args.input}: {embedding.frames} frames x {embedding.dim} dims ({embedding.seconds:.2f} s)")
    report_written([path, Path(path).with_suffix(".json")])
    return 0


def run_decode(args: argparse.Namespace) -> int:
    """Synthesize a note at --pitch from an embedding written by `timbre encode` (with --decoder: by that decoder)."""
    from timbre.embedding import Embedding
    from timbre.errors import ConfigError
    from timbre.hub import load
    from timbre.io.audio import save_wav

    check_inputs_exist([args.input])
    out = check_output_file(args.out, [args.input, Path(args.input).with_suffix(".json")], (".wav",))
    if args.plot:
        check_output_file(out.with_suffix(".png"), [args.input], (".png",))
    embedding = Embedding.load(args.input)
    model_name = args.model or DEFAULT_MODELS[args.decoder or "fast"]
    model = load(model_name, device=args.device)
    if args.decoder and model.decoder_kind != args.decoder:
        raise ConfigError(
            f"--model {model_name} has a {model.decoder_kind} decoder, but --decoder {args.decoder} was asked for"
        )
    if args.weights != "float32" and not model.is_autoregressive:  # the flag's mistake before the file's
        raise ConfigError(
            f"--weights {args.weights}: {args.weights} weights apply to autoregressive (wavenet) decoders only, "
            f"and {model.name} has a {model.decoder_kind} decoder"
        )
    if embedding.dim != model.autoencoder.latent_dim or embedding.hop_length != model.hop_length:
        raise ConfigError(
            f"{args.input}: z [frames, {embedding.dim}] at hop {embedding.hop_length} from "
            f"{embedding.model or 'an unnamed model'} does not fit the {model.decoder_kind} decoder of {model.name}, "
            f"which takes z [frames, {model.autoencoder.latent_dim}] at hop {model.hop_length}: "
            f"encode with --model {model.name}, or decode with the model that encoded it"
        )
    if embedding.model and embedding.model != model.name and not _shares_encoder(embedding.model, model):
        print(
            f"warning: {args.input} was encoded by {embedding.model}, whose encoder is not {model.name}'s: "
            f"{model.name}'s decoder was not trained on that encoder's embeddings"
        )
    warn_if_outside_training_range(model, args.pitch)
    audio = model.synthesize(
        embedding, pitch=args.pitch, seconds=args.seconds, velocity=args.velocity, temperature=args.temperature,
        seed=args.seed, progress=True, weights=args.weights, clock_gain=args.clock_gain,
    )  # fmt: skip
    written = [save_wav(out, audio, model.sample_rate)]
    if args.plot:
        from timbre.plots import plot_rainbowgram

        png = out.with_suffix(".png")
        plot_rainbowgram(
            audio, png, title=f"{Path(args.input).stem} at pitch {args.pitch}", sample_rate=model.sample_rate
        )
        written.append(png)
    report_written(written)
    return 0


def _shares_encoder(encoded_by: str, model) -> bool:
    """Whether the model named ``encoded_by`` (an embedding's ``model``) has ``model``'s encoder,
    weight for weight: then its embeddings are ``model``'s own. False when it cannot be loaded."""
    import torch

    from timbre.errors import TimbreError
    from timbre.hub import load

    try:
        encoder = load(encoded_by).autoencoder.encoder
    except TimbreError:  # a path that is gone, or a model of another installation
        return False
    mine, theirs = model.autoencoder.encoder.state_dict(), encoder.state_dict()
    return (
        type(encoder) is type(model.autoencoder.encoder)
        and mine.keys() == theirs.keys()
        and all(mine[key].shape == theirs[key].shape and torch.equal(mine[key].cpu(), theirs[key]) for key in mine)
    )

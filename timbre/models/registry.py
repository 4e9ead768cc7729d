"""The model families a checkpoint may name, and how to build a model from plain settings.

A checkpoint describes its model by a *model spec*, a dict of plain values only (so it loads with
``torch.load(weights_only=True)``, and classes can move without breaking shipped weights)::

    {"family": "autoencoder",
     "settings": {"sample_rate": 16000,
                  "encoder": {"kind": "wavenet", "channels": 64, ...},
                  "decoder": {"kind": "harmonic_noise", "n_harmonics": 64, ...}}}
    {"family": "composer", "settings": {"vocab_size": 454, "dim": 128, ...}}

Families: ``"autoencoder"`` (an encoder of a kind in :data:`ENCODERS`, a decoder of a kind in
:data:`DECODERS`) and ``"composer"``. Apart from ``kind``, settings are passed to the class as
keyword arguments unchanged: a new constructor option needs no change here. Plain values are
None, bool, int, float, str, and lists and dicts of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from timbre.errors import ConfigError
from timbre.models.autoencoder import Autoencoder
from timbre.models.composer import Composer
from timbre.models.decoder import WaveNetDecoder
from timbre.models.encoder import WaveNetEncoder
from timbre.models.parallel import HarmonicNoiseDecoder

ENCODERS: dict[str, type[nn.Module]] = {"wavenet": WaveNetEncoder}
DECODERS: dict[str, type[nn.Module]] = {"wavenet": WaveNetDecoder, "harmonic_noise": HarmonicNoiseDecoder}
FAMILIES = ("autoencoder", "composer")


def model_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """The freshly initialised model a spec describes.

    Raises:
        ConfigError: an unknown family or kind, a setting that is not a plain value, or settings
            the class does not accept.
    """
    spec = check_spec(spec)
    settings = dict(spec["settings"])
    if spec["family"] == "composer":
        return _construct(Composer, settings, "composer")
    encoder = _part(settings.pop("encoder", None), ENCODERS, "encoder")
    decoder = _part(settings.pop("decoder", None), DECODERS, "decoder")
    return _construct(Autoencoder, {"encoder": encoder, "decoder": decoder, **settings}, "autoencoder")


def check_spec(spec: Any) -> dict[str, Any]:
    """``spec`` as a dict after checking its shape, family and plain values; raises :class:`ConfigError`."""
    if not isinstance(spec, Mapping) or set(spec) != {"family", "settings"}:
        keys = sorted(spec) if isinstance(spec, Mapping) else type(spec).__name__
        raise ConfigError(f"a model spec must be a dict with keys 'family' and 'settings', got {keys}")
    if spec["family"] not in FAMILIES:
        raise ConfigError(f"unknown model family {spec['family']!r}; known: {', '.join(FAMILIES)}")
    if not isinstance(spec["settings"], Mapping):
        raise ConfigError(f"model settings must be a dict, got {type(spec['settings']).__name__}")
    check_plain(spec["settings"], "settings")
    return {"family": spec["family"], "settings": dict(spec["settings"])}


def check_plain(value: Any, where: str) -> None:
    """Raise :class:`ConfigError` naming the first entry of ``value`` that is not a plain value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"model {where}: key {key!r} is not a string")
            check_plain(item, f"{where}.{key}")
        return
    raise ConfigError(
        f"model {where} is a {type(value).__name__}; only None, bool, int, float, str, lists and dicts are allowed"
    )


def spec_from_hydra_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The spec of a resolved Hydra model config (``_target_`` plus arguments, as in ``conf/model``).

    Each ``_target_`` must be the import path of a class in this registry; the other keys become
    settings unchanged. Used by the training app, and to read checkpoints written before specs.
    """
    target = config.get("_target_")
    settings = {key: value for key, value in config.items() if key != "_target_"}
    if target == _import_path(Composer):
        return check_spec({"family": "composer", "settings": settings})
    if target == _import_path(Autoencoder):
        for part, kinds in (("encoder", ENCODERS), ("decoder", DECODERS)):
            part_config = dict(settings.get(part) or {})
            part_target = part_config.pop("_target_", None)
            kind = next((kind for kind, cls in kinds.items() if _import_path(cls) == part_target), None)
            if kind is None:
                known = ", ".join(_import_path(cls) for cls in kinds.values())
                raise ConfigError(f"model {part}: _target_ {part_target!r} is not a registered {part} (known: {known})")
            settings[part] = {"kind": kind, **part_config}
        return check_spec({"family": "autoencoder", "settings": settings})
    known = ", ".join(_import_path(cls) for cls in (Autoencoder, Composer))
    raise ConfigError(f"model _target_ {target!r} is not a registered model family (known: {known})")


def _import_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _part(settings: Any, kinds: Mapping[str, type[nn.Module]], part: str) -> nn.Module:
    if not isinstance(settings, Mapping) or "kind" not in settings:
        raise ConfigError(f"autoencoder settings need a {part!r} dict with a 'kind' ({' or '.join(kinds)})")
    arguments = dict(settings)
    kind = arguments.pop("kind")
    if kind not in kinds:
        raise ConfigError(f"unknown {part} kind {kind!r}; known: {', '.join(kinds)}")
    return _construct(kinds[kind], arguments, f"{kind} {part}")


def _construct(cls: type[nn.Module], arguments: dict[str, Any], what: str) -> nn.Module:
    try:
        return cls(**arguments)
    except TypeError as error:  # an unknown or missing keyword argument
        raise ConfigError(f"{what} settings do not fit {cls.__name__}: {error}") from None
    except ValueError as error:  # the class's own checks of its values
        raise ConfigError(f"{what} settings: {error}") from None

"""``timbre-train``: the Hydra app that builds a model and its data from ``conf/`` and trains them.

This is the only place that calls ``hydra.utils.instantiate``; library classes take plain arguments.
Checkpoints store the model as a registry spec (:mod:`timbre.models.registry`), converted from the
Hydra model config, so loading a model never needs Hydra.
Run ``timbre-train --help`` for the config groups, ``timbre-train --cfg job`` to print a config.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from timbre.data import DataBundle
from timbre.errors import ConfigError, TimbreError
from timbre.train.checkpoint import load_checkpoint, model_spec
from timbre.train.distributed import init_distributed, shutdown
from timbre.train.loop import Trainer, TrainerSettings, TrainResult, describe_command

# timbre/conf links to the top-level conf/, so the configs ship inside wheels too.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def _container(config: DictConfig | dict) -> dict[str, Any]:
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    return dict(config)


def build_data(data_config: DictConfig) -> DataBundle:
    """Instantiate the ``data`` config into a :class:`DataBundle`."""
    try:
        bundle = instantiate(data_config, _convert_="all")
    except TimbreError:
        raise
    except Exception as error:
        cause = error.__cause__ if isinstance(error.__cause__, TimbreError) else None
        if cause is not None:  # hydra wraps errors raised inside the target
            raise cause from None
        raise ConfigError(f"cannot build the data from data.{data_config.get('_target_')}: {error}") from None
    if not isinstance(bundle, DataBundle):
        raise ConfigError(f"data._target_ must return a DataBundle, got {type(bundle).__name__}")
    return bundle


def build_model_config(model_config: DictConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """The resolved model config with the data's ``model_overrides`` merged in."""
    merged = OmegaConf.merge(model_config, OmegaConf.create(overrides)) if overrides else model_config
    return _container(merged)


def instantiate_model(model_config: dict[str, Any]) -> torch.nn.Module:
    """Instantiate a resolved Hydra model config (``_target_`` plus arguments)."""
    try:
        return instantiate(model_config, _convert_="all")
    except Exception as error:
        cause = error.__cause__ or error
        raise ConfigError(f"cannot build the model from model config: {cause}") from None


def train(config: DictConfig, run_dir: Path | None = None) -> TrainResult:
    """Train from a composed config; returns what the trainer reports.

    Args:
        config: the composed ``train`` config (``model``, ``data``, ``trainer``).
        run_dir: output directory; defaults to Hydra's run dir (or the resumed run's directory).
    """
    settings = TrainerSettings(**_container(config.trainer))
    settings.validate()
    resume_state = None
    if settings.resume:
        resume_state = load_checkpoint(settings.resume)
        checkpoint_path = Path(resume_state["path"])
        run_dir = checkpoint_path.parent.parent if checkpoint_path.parent.name == "checkpoints" else checkpoint_path.parent
    if run_dir is None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
    context = init_distributed(settings.resolved_device().type)
    try:
        torch.manual_seed(settings.seed)  # same initial weights on every rank and every rerun
        data = build_data(config.data)
        model_config = build_model_config(config.model, data.model_overrides)
        spec = model_spec(model_config)  # what checkpoints store; fails early for unregistered models
        if resume_state is not None and resume_state["model_config"] != spec:
            raise ConfigError(
                f"{resume_state['path']}: the model config differs from the checkpoint's; "
                "resume with the same model= and data settings as the original run"
            )
        model = instantiate_model(model_config)
        if context.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, run_dir / "config.yaml", resolve=True)
            parameters = sum(p.numel() for p in model.parameters())
            print(f"timbre-train: {type(model).__name__} with {parameters:,} parameters, run dir {run_dir}", flush=True)
        run_info = {
            "command": describe_command(),
            "config": _container(config),
            "world_size": context.world_size,
        }
        trainer = Trainer(model, data, settings, run_dir, spec, context, resume_state, run_info)
        result = trainer.fit()
        if context.is_main and context.distributed:
            print(f"timbre-train: {context.world_size} DDP replicas identical after step {result.step}", flush=True)
        if context.is_main:
            how = f"stopped by {result.stopped_by}" if result.stopped_by else "finished"
            print(
                f"timbre-train: {how} at step {result.step}; checkpoint {result.last_checkpoint}"
                + (f"; resume with trainer.resume={run_dir}" if result.stopped_by else ""),
                flush=True,
            )
        return result
    finally:
        shutdown(context)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(config: DictConfig) -> None:
    try:
        result = train(config)
    except TimbreError as error:
        print(f"timbre-train: error: {error}", file=sys.stderr)
        sys.exit(1)
    if result.stopped_by:
        sys.exit(130 if result.stopped_by == "SIGINT" else 143)


def main() -> None:
    """Console entry point of ``timbre-train``."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    _hydra_main()


if __name__ == "__main__":
    main()

"""``timbre-train``: the Hydra app that builds a model and its data from ``conf/`` and trains them.

This is the only place that calls ``hydra.utils.instantiate``; library classes take plain arguments.
Checkpoints store the model as a registry spec (:mod:`timbre.models.registry`), converted from the
Hydra model config, so loading a model never needs Hydra.
Run ``timbre-train --help`` for the config groups, ``timbre-train --cfg job`` to print a config.

Run directories: every run gets its own (``runs/<date>/<time>``, with a ``-2``, ``-3`` ... suffix
when another run started in the same second); a directory that already holds a run is never
reused except by resuming it, and a launch that fails before its first checkpoint leaves no
directory behind. ``timbre-train trainer.resume=RUN_DIR`` continues a run from the config stored
in ``RUN_DIR/config.yaml``; see :func:`resume_config` for what may change on resume.
"""

from __future__ import annotations

# Before torch is imported: idle OpenMP threads must sleep, not spin (see timbre.runtime).
from timbre.runtime import configure_openmp

configure_openmp()

import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, cast  # noqa: E402

import hydra  # noqa: E402
import torch  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from timbre.data import DataBundle  # noqa: E402
from timbre.errors import ConfigError, TimbreError  # noqa: E402
from timbre.io.files import atomic_write  # noqa: E402
from timbre.train.checkpoint import load_checkpoint, model_spec  # noqa: E402
from timbre.train.distributed import init_distributed, shutdown  # noqa: E402
from timbre.train.loop import Trainer, TrainerSettings, TrainResult, describe_command  # noqa: E402

# timbre/conf links to the top-level conf/, so the configs ship inside wheels too.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
# Where runs go unless hydra.run.dir says otherwise (the same pattern as conf/train.yaml).
RUNS_DIR = Path("runs")
# Files that mark a directory as holding a run.
RUN_MARKERS = ("config.yaml", "checkpoints", "metrics.csv")
# Settings a resumed run may change: they do not change which batches or weights it computes.
RESUMABLE_CHANGES = (
    "trainer.max_steps",
    "trainer.log_every",
    "trainer.valid_every",
    "trainer.valid_batches",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
    "trainer.num_workers",
    "trainer.cpu_bf16",
    "trainer.progress",
    "trainer.device",
    "trainer.resume",
    "data.root",
)
CONFIG_GROUPS = ("model", "data", "trainer")


def _container(config: DictConfig | dict) -> dict[str, Any]:
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    return dict(config)


def build_data(data_config: DictConfig) -> DataBundle:
    """Instantiate the ``data`` config into a :class:`DataBundle`."""
    if "root" in data_config and data_config.get("root") in (None, ""):
        raise ConfigError(
            "data.root is not set: give the dataset folder, e.g. data.root=DIR "
            "(notes in the NSynth layout, as written by timbre dataset build or timbre dataset from-folder)"
        )
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
    # Merging into a DictConfig gives a DictConfig (the stub's return type also allows a ListConfig).
    merged = cast(DictConfig, OmegaConf.merge(model_config, OmegaConf.create(overrides))) if overrides else model_config
    return _container(merged)


def instantiate_model(model_config: dict[str, Any]) -> torch.nn.Module:
    """Instantiate a resolved Hydra model config (``_target_`` plus arguments)."""
    try:
        return instantiate(model_config, _convert_="all")
    except Exception as error:
        cause = error.__cause__ or error
        raise ConfigError(f"cannot build the model from model config: {cause}") from None


def check_crops(data_config: DictConfig, model_config: dict[str, Any]) -> None:
    """Refuse crops the encoder cannot pool: every crop must be whole frames of its hop."""
    hop = _find_key(model_config, "hop_length")
    if not isinstance(hop, int) or hop <= 0:
        return
    for key in ("crop_samples", "valid_crop_samples"):
        crop = data_config.get(key)
        if isinstance(crop, int) and crop % hop:
            raise ConfigError(
                f"data.{key}={crop} is not a multiple of the model's hop length {hop} "
                f"(e.g. {max(hop, crop // hop * hop)} or {(crop // hop + 1) * hop})"
            )


def _find_key(tree: Any, key: str) -> Any:
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


# ----------------------------------------------------------------------------- resume


def run_dir_of(resume: str | os.PathLike) -> Path:
    """The run directory of a ``trainer.resume`` value (a run directory or a checkpoint file in it)."""
    path = Path(resume).expanduser()
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def resume_config(config: DictConfig, stored: DictConfig, overrides: Sequence[str] | None, source: str) -> DictConfig:
    """The config of a resumed run: the run's own config, plus the changes it may take.

    Args:
        config: the config composed from this command line.
        stored: the run's ``config.yaml`` (what it was started with).
        overrides: this command line's overrides (``key=value``, ``group=option``), or None when
            ``config`` was composed elsewhere (then every difference counts as asked for).
        source: the run directory, for messages.

    Settings in :data:`RESUMABLE_CHANGES` (more steps, logging, ``data.root``) take the new
    value when the command line sets them; any other setting the command line changes (the
    model, batch size, crops, learning rate, seed ...) would make the resumed run compute other
    batches or weights than the original, so it is refused with a message naming it.

    Raises:
        ConfigError: naming every setting that may not change.
    """
    new, old = _container(config), _container(stored)
    if overrides is None:
        touched = [""]
        explicit = set(RESUMABLE_CHANGES)
    else:
        touched, explicit = [], set()
        for override in overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            if key.startswith("hydra.") or key == "hydra":
                continue
            if "." in key or key not in (*CONFIG_GROUPS, "experiment"):
                touched.append(key)
                explicit.add(key)
            else:  # a config group: everything it can set (an experiment sets them all)
                touched.extend(CONFIG_GROUPS if key == "experiment" else [key])
    refused = []
    effective = OmegaConf.create(old)
    for path in sorted({leaf for prefix in touched for leaf in _leaves(new, prefix) + _leaves(old, prefix)}):
        new_value, old_value = _get(new, path), _get(old, path)
        if new_value == old_value:
            continue
        if path in RESUMABLE_CHANGES:
            if path in explicit:
                OmegaConf.update(effective, path, new_value, force_add=True)
        else:
            refused.append(f"{path} ({old_value!r} -> {new_value!r})")
    if refused:
        shown = ", ".join(refused[:4]) + (f" and {len(refused) - 4} more" if len(refused) > 4 else "")
        raise ConfigError(
            f"{source}: the config differs from the checkpoint's run in {shown}; a resumed run keeps its "
            f"settings (only {', '.join(RESUMABLE_CHANGES)} may change): start a new run instead"
        )
    return effective


_MISSING = object()


def _leaves(tree: Any, prefix: str) -> list[str]:
    """Dotted paths of the leaves under ``prefix`` ('' for all), or ``[prefix]`` if it is a leaf."""
    node = _get(tree, prefix) if prefix else tree
    if node is _MISSING or not isinstance(node, dict) or not node:
        return [prefix]
    paths = []
    for key in node:
        paths.extend(_leaves(tree, f"{prefix}.{key}" if prefix else str(key)))
    return paths


def _get(tree: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _command_line_overrides() -> list[str] | None:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def _claim_config(run_dir: Path, config: DictConfig, resuming: bool) -> None:
    """Write ``run_dir/config.yaml``; a fresh run first claims it, so two runs never share a directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    if not resuming:
        taken = [marker for marker in RUN_MARKERS if (run_dir / marker).exists()]
        try:
            if taken:
                raise FileExistsError
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise ConfigError(
                f"{run_dir}: this directory already holds a run ({', '.join(taken) or 'config.yaml'}); "
                f"resume it with trainer.resume={run_dir} or choose another hydra.run.dir"
            ) from None
    with atomic_write(path, "w") as file:
        file.write(OmegaConf.to_yaml(config, resolve=True))


def train(config: DictConfig, run_dir: Path | None = None) -> TrainResult:
    """Train from a composed config; returns what the trainer reports.

    Args:
        config: the composed ``train`` config (``model``, ``data``, ``trainer``). With
            ``trainer.resume`` set, the resumed run's stored config is the base (see :func:`resume_config`).
        run_dir: output directory; defaults to Hydra's run dir (or the resumed run's directory).
    """
    settings = TrainerSettings.from_config(_container(config.trainer))
    resume_state = None
    if settings.resume:
        resume_state = load_checkpoint(settings.resume)
        checkpoint_path = Path(resume_state["path"])
        run_dir = (
            checkpoint_path.parent.parent if checkpoint_path.parent.name == "checkpoints" else checkpoint_path.parent
        )
        stored_path = run_dir / "config.yaml"
        stored = resume_state.get("run", {}).get("config")
        if stored_path.is_file():
            stored = OmegaConf.load(stored_path)
        if stored is not None:
            config = resume_config(config, OmegaConf.create(stored), _command_line_overrides(), str(run_dir))
            settings = TrainerSettings.from_config(_container(config.trainer))
    if config.get("finetune") is not None:
        from timbre.train.finetune import run_finetune  # the model comes from a base checkpoint

        return run_finetune(config, run_dir, resume_state)
    if config.get("encoder_from") is not None:
        from timbre.train.decoder_on_encoder import run_decoder_on_encoder  # the encoder is a trained model's

        return run_decoder_on_encoder(config, run_dir, resume_state)
    if run_dir is None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
    context = init_distributed(settings.resolved_device().type)
    try:
        torch.manual_seed(settings.seed)  # same initial weights on every rank and every rerun
        model_config = build_model_config(config.model, {})
        check_crops(config.data, model_config)
        data = build_data(config.data)
        model_config = build_model_config(config.model, data.model_overrides)
        spec = model_spec(model_config)  # what checkpoints store; fails early for unregistered models
        if resume_state is not None and resume_state["model_config"] != spec:
            raise ConfigError(
                f"{resume_state['path']}: the model config differs from the checkpoint's; "
                "resume with the same model= and data settings as the original run"
            )
        model = instantiate_model(model_config)
        warm_source = None
        if settings.init_from and resume_state is None:  # a resumed run's weights come from its checkpoint
            from timbre.train.warm_start import warm_start

            warm_source = warm_start(model, settings.init_from)
            if settings.fit_new_partials:
                from timbre.train.fit_new_partials import fit_half_integer_partials

                fitted = fit_half_integer_partials(model, data.train, settings.fit_new_partials, seed=settings.seed)
                if context.is_main:
                    print(f"timbre-train: {fitted}", flush=True)
        if context.is_main:
            _claim_config(run_dir, config, resuming=resume_state is not None)
            parameters = sum(p.numel() for p in model.parameters())
            print(f"timbre-train: {type(model).__name__} with {parameters:,} parameters, run dir {run_dir}", flush=True)
            if warm_source:
                print(f"timbre-train: weights from {warm_source} (optimizer and schedule start afresh)", flush=True)
        threads = torch.get_num_threads()
        run_info = {
            "command": describe_command(),
            "config": _container(config),
            "world_size": context.world_size,
            "threads": threads,
        }
        if resume_state is not None:
            _warn_if_threads_differ(resume_state, threads)
        trainer = Trainer(model, data, settings, run_dir, spec, context, resume_state, run_info)
        if resume_state is not None:
            _warn_if_autocast_differs(resume_state, trainer.autocasts)
        result = trainer.fit()
        if context.is_main and context.distributed:
            print(f"timbre-train: {context.world_size} DDP replicas identical after step {result.step}", flush=True)
        if context.is_main:
            print(result.ending(), flush=True)
        return result
    finally:
        shutdown(context)


def _warn_if_threads_differ(resume_state: dict[str, Any], threads: int) -> None:
    before = resume_state.get("run", {}).get("threads")
    if before is not None and before != threads:
        print(
            f"timbre-train: warning: the run was trained with {before} CPU threads and resumes with {threads}; "
            f"float sums then round differently, so losses drift from an uninterrupted run "
            f"(set OMP_NUM_THREADS={before} to resume exactly)",
            file=sys.stderr,
            flush=True,
        )


def _warn_if_autocast_differs(resume_state: dict[str, Any], autocasts: bool) -> None:
    before = resume_state.get("run", {}).get("bf16_autocast")
    if before is not None and before != autocasts:  # checkpoints before 2026-12-03 did not record it
        was, now = ("bf16 autocast", "float32") if before else ("float32", "bf16 autocast")
        print(
            f"timbre-train: warning: the run was trained in {was} and resumes in {now} (trainer.cpu_bf16, "
            f"trainer.precision, this CPU's bf16 units); losses drift from an uninterrupted run",
            file=sys.stderr,
            flush=True,
        )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(config: DictConfig) -> None:
    try:
        result = train(config)
    except TimbreError as error:
        print(f"timbre-train: error: {error}", file=sys.stderr)
        sys.exit(1)
    if result.stopped_by:
        sys.exit(130 if result.stopped_by == "SIGINT" else 143)


# ----------------------------------------------------------------------------- entry point


def _override(arguments: Sequence[str], key: str) -> str | None:
    """The value of the last ``key=value`` among the command-line ``arguments``."""
    values = [a.split("=", 1)[1] for a in arguments if a.split("=", 1)[0].lstrip("+") == key and "=" in a]
    return values[-1] if values else None


def _runs_a_job(arguments: Sequence[str]) -> bool:
    """False for Hydra's informational flags (--help, --cfg, ...) and multiruns."""
    informational = {
        "--help",
        "-h",
        "--hydra-help",
        "--version",
        "--cfg",
        "-c",
        "--info",
        "-i",
        "--shell-completion",
        "-sc",
    }
    return not any(a.split("=", 1)[0] in informational or a in ("-m", "--multirun") for a in arguments)


def claim_run_dir(runs: Path = RUNS_DIR) -> Path:
    """Create and return ``runs/<date>/<time>`` (``<time>-2`` ... if taken): unique even within a second."""
    now = time.localtime()
    base = runs / time.strftime("%Y-%m-%d", now) / time.strftime("%H-%M-%S", now)
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        candidate = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            candidate.mkdir()  # atomic: exactly one process creates it
            return candidate
        except FileExistsError:
            continue
    raise ConfigError(f"{base}: could not find a free run directory name")


def check_overrides(arguments: Sequence[str]) -> None:
    """Compose the config of ``arguments`` once before Hydra runs, to report a bad override
    (unknown key or option, malformed value) as one line instead of Hydra's multi-line text.

    Raises:
        ConfigError: the overrides do not compose.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in arguments if not a.startswith("-") and not a.lstrip("+~").startswith("hydra.")]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose("train", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_one_line(str(error))) from None


def _one_line(message: str) -> str:
    """Hydra's multi-line error text as one line (first line, plus the options or hint it lists)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = lines[0] if lines else "invalid override"
    options = [line.strip() for line in message.splitlines() if line.startswith("\t") and "provider=" not in line]
    if options:
        text += f" (options: {', '.join(options)})"
    hint = next((line for line in lines if line.startswith("To append to your config use")), None)
    if hint:
        text = f"{text.rstrip('.')}: no such key ({hint[0].lower()}{hint[1:]})"
    return text


def _holds_a_run(directory: Path) -> bool:
    return any((directory / marker).exists() for marker in RUN_MARKERS)


def _remove_if_unused(directory: Path) -> None:
    """Remove a run directory this launch created if it got no checkpoint and no metrics."""
    if not directory.is_dir() or (directory / "checkpoints").exists() or (directory / "metrics.csv").exists():
        return
    shutil.rmtree(directory, ignore_errors=True)
    for folder in (directory.parent, directory.parent.parent):  # runs/<date>, runs: if now empty
        try:
            folder.rmdir()
        except OSError:
            break


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point of ``timbre-train``."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    arguments = list(sys.argv[1:] if argv is None else argv)
    created: Path | None = None
    # Under torchrun every rank runs this; only rank 0 may judge or claim the run directory.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    first_rank = os.environ.get("RANK", "0") == "0"
    if _runs_a_job(arguments):
        resume = _override(arguments, "trainer.resume")
        explicit_dir = _override(arguments, "hydra.run.dir")
        if resume and not explicit_dir and Path(resume).expanduser().exists():
            # Hydra writes into the resumed run (its log appended), not into a new empty folder.
            arguments += [f"hydra.run.dir={run_dir_of(resume)}", "hydra.output_subdir=null"]
        elif explicit_dir:
            directory = Path(explicit_dir).expanduser()
            resuming_it = resume and run_dir_of(resume).resolve() == directory.resolve()
            if first_rank and _holds_a_run(directory) and not resuming_it:
                print(
                    f"timbre-train: error: {directory}: this directory already holds a run; resume it with "
                    f"trainer.resume={directory} or choose another hydra.run.dir",
                    file=sys.stderr,
                )
                sys.exit(1)
            if not directory.exists() and first_rank:
                created = directory
        elif not distributed:
            created = claim_run_dir()
            arguments.append(f"hydra.run.dir={created}")
    sys.argv = [sys.argv[0], *arguments]
    try:
        if _runs_a_job(arguments):
            try:
                check_overrides(arguments)
            except ConfigError as error:
                print(f"timbre-train: error: {error}", file=sys.stderr)
                sys.exit(1)
        _hydra_main()
    except BrokenPipeError:  # timbre-train --help | head
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    finally:
        if created is not None:
            _remove_if_unused(created)


if __name__ == "__main__":
    main()

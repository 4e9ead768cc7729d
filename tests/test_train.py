"""The training app: loss falls, resume is exact, signals checkpoint, DDP keeps replicas equal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from timbre.errors import ConfigError
from timbre.train.app import CONFIG_DIR, train
from timbre.train.checkpoint import CHECKPOINT_FORMAT, HYDRA_CONFIG_FORMAT, load_checkpoint, load_model

TRAIN_SCRIPT = [sys.executable, "-m", "timbre.train.app"]


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def tiny_overrides(root: Path, steps: int, **extra: object) -> list[str]:
    settings = {
        "model": "tiny",
        "data.root": str(root),
        "data.crop_samples": 1024,
        "data.valid_crop_samples": 1024,
        "trainer.max_steps": steps,
        "trainer.batch_size": 2,
        "trainer.lr": 3e-3,
        "trainer.log_every": 1,
        "trainer.valid_every": 10,
        "trainer.valid_batches": 1,
        "trainer.checkpoint_every": 10,
        "trainer.progress": False,
        **extra,
    }
    return [f"{key}={value}" for key, value in settings.items()]


def test_loss_falls_and_checkpoint_loads(note_dataset, tmp_path):
    result = train(compose_config(tiny_overrides(note_dataset, 40)), run_dir=tmp_path / "run")
    losses = [loss for _, loss in result.train_losses]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.93 * sum(losses[:8]) / 8, losses
    assert result.valid_losses and all(torch.isfinite(torch.tensor(v)) for _, v in result.valid_losses)
    assert (tmp_path / "run" / "metrics.csv").is_file()
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    assert (tmp_path / "run" / "config.yaml").is_file()
    model, checkpoint = load_model(result.last_checkpoint)
    assert checkpoint["training"]["step"] == 40
    assert checkpoint["model_config"]["family"] == "autoencoder"
    assert checkpoint["model_config"]["settings"]["decoder"]["kind"] == "wavenet"
    # The whole training state (optimizer, schedule, EMA) is plain data: no pickled objects.
    assert torch.load(result.last_checkpoint, weights_only=True)["training"]["step"] == 40
    # EMA weights are loaded for inference, and differ from the raw weights.
    ema_weight = next(iter(checkpoint["ema"].values()))
    assert torch.equal(next(iter(model.state_dict().values())), ema_weight)


def test_resume_continues_exactly(note_dataset, tmp_path):
    uninterrupted = train(compose_config(tiny_overrides(note_dataset, 10)), run_dir=tmp_path / "full")
    first_half = train(compose_config(tiny_overrides(note_dataset, 5)), run_dir=tmp_path / "half")
    resumed = train(compose_config(tiny_overrides(note_dataset, 10, **{"trainer.resume": str(tmp_path / "half")})))
    assert first_half.step == 5 and resumed.step == 10
    assert resumed.run_dir == tmp_path / "half"
    expected = dict(uninterrupted.train_losses)
    for step, loss in resumed.train_losses:
        assert loss == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step
    full_weights = load_checkpoint(uninterrupted.last_checkpoint)["ema"]
    resumed_weights = load_checkpoint(resumed.last_checkpoint)["ema"]
    for name, tensor in full_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-5, atol=1e-6)


def test_resume_accepts_a_run_checkpointed_in_the_hydra_config_format(note_dataset, tmp_path):
    config = compose_config(tiny_overrides(note_dataset, 2))
    train(config, run_dir=tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    stored = torch.load(last, weights_only=True)
    # What runs started before model specs wrote: the Hydra model config with _target_ paths.
    stored.update(format=HYDRA_CONFIG_FORMAT, model_config=OmegaConf.to_container(config.model, resolve=True))
    torch.save(stored, last)
    resumed = train(compose_config(tiny_overrides(note_dataset, 4, **{"trainer.resume": str(tmp_path / "run")})))
    assert resumed.step == 4
    rewritten = torch.load(last, weights_only=True)
    assert rewritten["format"] == CHECKPOINT_FORMAT and rewritten["model_config"]["family"] == "autoencoder"


def test_resume_refuses_a_different_model(note_dataset, tmp_path):
    train(compose_config(tiny_overrides(note_dataset, 2)), run_dir=tmp_path / "run")
    changed = tiny_overrides(note_dataset, 4, **{"trainer.resume": str(tmp_path / "run")})
    changed.append("model.decoder.residual_channels=8")
    with pytest.raises(ConfigError, match="differs from the checkpoint"):
        train(compose_config(changed))


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.batch_size=0", "trainer.batch_size must be positive"),
        ("trainer.precision=fp8", "trainer.precision must be bf16 or fp32"),
        ("trainer.lr_decay_steps=[10]", "must have the same length"),
    ],
)
def test_bad_trainer_values_are_named(note_dataset, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(compose_config(tiny_overrides(note_dataset, 2) + [override]), run_dir=tmp_path)


def run_train_cli(arguments: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        TRAIN_SCRIPT + arguments, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "arguments, message",
    [
        (["trainer.no_such_key=1"], "no_such_key"),
        (["model=no_such_model"], "no_such_model"),
        (["data.root=/nonexistent/dataset"], "/nonexistent/dataset"),
    ],
)
def test_cli_reports_bad_overrides_without_a_traceback(tmp_path, arguments, message):
    result = run_train_cli(["model=tiny", f"hydra.run.dir={tmp_path}"] + arguments, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_sigint_checkpoints_and_resume_finishes(note_dataset, tmp_path):
    run_dir = tmp_path / "run"
    arguments = tiny_overrides(note_dataset, 100000, **{"trainer.checkpoint_every": 100000})
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        TRAIN_SCRIPT + arguments + [f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    deadline = time.time() + 120
    metrics = run_dir / "metrics.csv"
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    stopped_at = load_checkpoint(run_dir)["training"]["step"]
    assert stopped_at >= 3
    resumed = run_train_cli(
        tiny_overrides(note_dataset, stopped_at + 2, **{"trainer.resume": str(run_dir)}), cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run_dir)["training"]["step"] == stopped_at + 2


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(note_dataset, tmp_path):
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "timbre.train.app",
        *tiny_overrides(note_dataset, 6),
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas identical" in result.stdout
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["training"]["step"] == 6
    assert checkpoint["run"]["world_size"] == 2


# ----------------------------------------------------------------------------- run directories and resume


def test_runs_started_in_the_same_second_get_their_own_directory(tmp_path):
    from timbre.train.app import claim_run_dir

    first, second = claim_run_dir(tmp_path / "runs"), claim_run_dir(tmp_path / "runs")
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name.startswith(first.name)  # same time stamp, numbered


def test_a_directory_holding_a_run_is_never_reused(note_dataset, tmp_path):
    train(compose_config(tiny_overrides(note_dataset, 2)), run_dir=tmp_path / "run")
    before = {path: path.read_bytes() for path in (tmp_path / "run").rglob("*") if path.is_file()}
    with pytest.raises(ConfigError, match="already holds a run"):
        train(compose_config(tiny_overrides(note_dataset, 3)), run_dir=tmp_path / "run")
    assert {path: path.read_bytes() for path in (tmp_path / "run").rglob("*") if path.is_file()} == before


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_steps=abc", "trainer.max_steps must be an integer, got 'abc'"),
        ("trainer.lr=fast", "trainer.lr must be a number, got 'fast'"),
        ("+trainer.foo=1", "trainer.foo is not a trainer setting"),
        ("data.crop_samples=1000", "data.crop_samples=1000 is not a multiple of the model's hop length 512"),
        ("data.root=null", "data.root is not set"),
    ],
)
def test_bad_settings_fail_before_the_run_directory_exists(note_dataset, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(compose_config(tiny_overrides(note_dataset, 2) + [override]), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_config_keeps_the_run_settings_and_names_what_may_not_change():
    from timbre.train.app import resume_config

    stored = OmegaConf.create({"model": {"width": 8}, "data": {"root": "old", "crop_samples": 1024},
                               "trainer": {"max_steps": 10, "batch_size": 2, "resume": None}})  # fmt: skip
    composed = OmegaConf.create({"model": {"width": 32}, "data": {"root": "new", "crop_samples": 6144},
                                 "trainer": {"max_steps": 20, "batch_size": 8, "resume": "run"}})  # fmt: skip
    # Only what the command line names counts: the defaults behind it do not override the run.
    resumed = resume_config(composed, stored, ["trainer.resume=run", "data.root=new", "trainer.max_steps=20"], "run")
    assert OmegaConf.to_container(resumed) == {
        "model": {"width": 8}, "data": {"root": "new", "crop_samples": 1024},
        "trainer": {"max_steps": 20, "batch_size": 2, "resume": "run"},
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"trainer.batch_size \(2 -> 8\)"):
        resume_config(composed, stored, ["trainer.resume=run", "trainer.batch_size=8"], "run")
    with pytest.raises(ConfigError, match=r"model.width \(8 -> 32\)"):
        resume_config(composed, stored, ["trainer.resume=run", "model=other"], "run")


def test_cpu_bf16_autocast_only_where_asked_and_the_cpu_has_bf16_units(monkeypatch, tmp_path, capsys):
    import timbre.train.loop as loop
    from timbre.runtime import cpu_has_native_bf16
    from timbre.train.app import _warn_if_autocast_differs, resume_config

    flags = tmp_path / "cpuinfo"
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_native_bf16(str(flags))
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert not cpu_has_native_bf16(str(flags)) and not cpu_has_native_bf16(str(tmp_path / "missing"))

    class Probe(torch.nn.Module):  # records the dtype its product runs in
        def __init__(self):
            super().__init__()
            self.linear, self.dtypes = torch.nn.Linear(4, 4), []

        def training_loss(self, batch):
            out = self.linear(batch)
            self.dtypes.append(out.dtype)
            return out.float().pow(2).mean(), {}

    data = loop.DataBundle(train=[torch.ones(2, 4)], valid=[])
    for native, setting, precision, expected in [
        (True, "auto", "bf16", torch.bfloat16),
        (False, "auto", "bf16", torch.float32),  # emulated bf16 is slower: never chosen
        (True, "never", "bf16", torch.float32),
        (True, "auto", "fp32", torch.float32),
    ]:
        monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda native=native: native)
        settings = loop.TrainerSettings(
            max_steps=1, cpu_bf16=setting, precision=precision, device="cpu", progress=False
        )
        probe = Probe()
        run_dir = tmp_path / f"{setting}{precision}{native}"
        run_dir.mkdir()
        trainer = loop.Trainer(probe, data, settings, run_dir, {"family": "probe"})
        trainer.train_step(torch.ones(2, 4))
        assert (probe.dtypes[-1], trainer.autocasts, trainer.run_info["bf16_autocast"]) == (
            expected,
            expected == torch.bfloat16,
            expected == torch.bfloat16,
        )
    with pytest.raises(ConfigError, match="trainer.cpu_bf16 must be never or auto, got 'always'"):
        loop.TrainerSettings(cpu_bf16="always").validate()

    # A run may resume with it changed; the drift is reported.
    stored = OmegaConf.create({"trainer": {"max_steps": 10, "resume": None}})
    composed = OmegaConf.create({"trainer": {"max_steps": 10, "resume": "run", "cpu_bf16": "auto"}})
    resumed = resume_config(composed, stored, ["trainer.resume=run", "trainer.cpu_bf16=auto"], "run")
    assert resumed.trainer.cpu_bf16 == "auto"
    _warn_if_autocast_differs({"run": {"bf16_autocast": False}}, True)
    assert "trained in float32 and resumes in bf16 autocast" in capsys.readouterr().err
    _warn_if_autocast_differs({"run": {"bf16_autocast": True}}, True)
    _warn_if_autocast_differs({"run": {"threads": 2}}, True)  # older checkpoints did not record it: no guess
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_resume_from_the_run_directory_alone_after_kill_9_during_checkpoints(note_dataset, tmp_path):
    """The README's resume: `timbre-train trainer.resume=RUN_DIR` and nothing else, after a hard kill."""
    arguments = tiny_overrides(note_dataset, 100000, **{"trainer.checkpoint_every": 1, "trainer.keep_checkpoints": 1})
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        TRAIN_SCRIPT + arguments, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("runs/*/*/checkpoints/step_*.pt")):
        time.sleep(0.05)
    time.sleep(0.3)  # checkpoints are written after every step: the kill lands in or near a write
    process.kill()
    process.wait(timeout=30)
    (run_dir,) = [path.parent for path in tmp_path.glob("runs/*/*/config.yaml")]
    stale = run_dir / "checkpoints" / ".last.pt.killed.tmp"
    stale.write_bytes(b"half a checkpoint")  # what a kill in the middle of torch.save leaves
    killed_at = load_checkpoint(run_dir)["training"]["step"]

    resumed = run_train_cli([f"trainer.resume={run_dir}", f"trainer.max_steps={killed_at + 2}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run_dir)["training"]["step"] == killed_at + 2
    assert not list(run_dir.rglob("*.tmp"))
    # Nothing new under runs/: the resumed run wrote into its own directory.
    assert [path.parent for path in tmp_path.glob("runs/*/*/config.yaml")] == [run_dir]
    assert len(list(tmp_path.glob("runs/*/*"))) == 1


@pytest.mark.slow
def test_resume_refuses_a_batch_size_change_and_warns_about_threads(note_dataset, tmp_path):
    run_dir = tmp_path / "run"
    assert run_train_cli(tiny_overrides(note_dataset, 2) + [f"hydra.run.dir={run_dir}"], cwd=tmp_path).returncode == 0
    refused = run_train_cli([f"trainer.resume={run_dir}", "trainer.batch_size=4"], cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "trainer.batch_size (2 -> 4)" in refused.stderr
    environment = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    resumed = subprocess.run(
        TRAIN_SCRIPT + [f"trainer.resume={run_dir}", "trainer.max_steps=3", f"data.root={note_dataset}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, env=environment,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "trained with 1 CPU threads and resumes with 2" in resumed.stderr
    assert load_checkpoint(run_dir)["training"]["step"] == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "arguments, message",
    [
        (["trainer.max_steps=abc"], "trainer.max_steps must be an integer"),
        (["+trainer.foo=1"], "trainer.foo is not a trainer setting"),
        (["trainer.foo=1"], "+trainer.foo=1"),
        ([], "data.root is not set"),
    ],
)
def test_failed_launches_are_one_line_and_leave_no_run_directory(tmp_path, arguments, message):
    result = run_train_cli(["model=tiny"] + arguments, cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "runs").exists()


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    command = " ".join(TRAIN_SCRIPT) + " --help | head -1"
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr

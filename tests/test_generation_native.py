"""The native decoding kernel: built at install, loaded without a compiler, thread-safe, checked sizes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from timbre.generation import native
from timbre.generation.engine import generate
from timbre.generation.folded import FoldedWeights
from timbre.models.decoder import WaveNetDecoder

pytestmark = pytest.mark.skipif(
    native.load_library() is None,
    reason=f"timbre was installed without its native kernel: {native.unavailable_reason()}",
)


def small_decoder() -> WaveNetDecoder:
    torch.manual_seed(0)
    return WaveNetDecoder(
        residual_channels=8, skip_channels=8, layers=4, stages=2, kernel_size=3, pitch_embedding_dim=4, hop_length=16
    ).eval()


def test_the_kernel_was_built_by_the_package_build_beside_its_binding():
    path = native.library_path()
    assert path is not None and path.parent == Path(native.__file__).resolve().parent
    assert path.name.startswith("_fastgen")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("openmp", [["-fopenmp"], ["-Wno-unknown-pragmas"]], ids=["openmp", "single-threaded"])
def test_the_kernel_source_compiles_without_warnings(tmp_path, openmp):
    """What setup.py builds, with the warnings it turns into errors (also outside CI, where they are not)."""
    source = Path(native.__file__).with_name("fastgen.c")
    command = ["gcc", "-O3", "-Wall", "-Wextra", "-Werror", *openmp, "-fPIC", "-shared", "-o", str(tmp_path / "k.so")]
    result = subprocess.run([*command, str(source), "-lm"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_two_threads_loading_the_kernel_at_once_both_get_it(monkeypatch):
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_loaded", None)
    start = threading.Barrier(2)
    results: list[native.NativeLibrary | None] = []

    def load() -> None:
        start.wait()
        results.append(native.load_library())

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] is not None and results[0] is results[1]


def test_the_kernel_loads_and_decodes_with_no_compiler_on_the_path(tmp_path):
    """Nothing is compiled at run time: no compiler on PATH and CC=false change nothing."""
    script = textwrap.dedent(
        """
        import shutil, torch
        from timbre.generation import native
        from timbre.generation.engine import generate
        from timbre.models.decoder import WaveNetDecoder
        assert shutil.which("gcc") is None and shutil.which("cc") is None
        assert native.load_library() is not None, native.unavailable_reason()
        torch.manual_seed(0)
        decoder = WaveNetDecoder(residual_channels=8, skip_channels=8, layers=3, stages=3, hop_length=16).eval()
        z = torch.randn(2, 16, 4)
        native_audio = generate(decoder, z, 60, 64, temperature=0.0, backend="native")
        torch_audio = generate(decoder, z, 60, 64, temperature=0.0, backend="torch")
        assert torch.equal(native_audio, torch_audio)
        print("decoded natively")
        """
    )
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    environment = {**os.environ, "PATH": str(empty_bin), "CC": "false", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "decoded natively" in result.stdout
    assert not list(tmp_path.rglob("*.so"))  # no kernel was built into the home directory or a cache


def test_the_kernel_rejects_sizes_out_of_range_with_an_error():
    library = native.load_library()
    weights = FoldedWeights.from_step(small_decoder().step_weights())
    stepper = native.NativeStepper(library, weights, batch=2, threads=0)
    with pytest.raises(ValueError, match="sizes out of range"):
        stepper.run(0, 4)
    stepper.threads = 1
    with pytest.raises(ValueError, match=r"teacher must be \[steps=4, batch=2\]"):
        stepper.run(0, 4, teacher=torch.zeros(4, 3))
    assert stepper.run(0, 4).shape == (4, 2)


def test_a_library_of_another_layout_is_refused(monkeypatch):
    """The ctypes mirror is checked against the library's own structure sizes and ABI version."""
    monkeypatch.setattr(native, "ABI_VERSION", native.ABI_VERSION + 1)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_loaded", None)
    assert native.load_library() is None
    assert "does not match this package" in native.unavailable_reason()
    decoder = small_decoder()
    with pytest.warns(RuntimeWarning, match="does not match this package"):
        audio = generate(decoder, torch.randn(1, 16, 4), 60, 64, temperature=0.0)
    assert audio.shape == (1, 64)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_the_portable_int8_path_computes_what_the_avx2_one_does(tmp_path):
    """Built without intrinsics (as for a CPU without AVX2), the one-note int8 product sums the same
    integers: the logits agree up to float32 rounding, which may move a 14-bit input by one level
    (measured 1e-4 of the largest logit; a misread weight or scale moves them by 6% or more)."""
    source = Path(native.__file__).with_name("fastgen.c")
    portable = tmp_path / "portable.so"
    command = ["gcc", "-O3", "-Wall", "-Wextra", "-Werror", "-DTIMBRE_NO_INTRINSICS", "-fPIC", "-shared"]
    result = subprocess.run(
        [*command, "-Wno-unknown-pragmas", "-o", str(portable), str(source), "-lm"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    torch.manual_seed(0)
    decoder = WaveNetDecoder(
        residual_channels=24, skip_channels=70, layers=4, stages=2, kernel_size=3, pitch_embedding_dim=4, hop_length=16
    ).eval()
    weights = FoldedWeights.from_step(decoder.step_weights())
    inputs = torch.rand(300, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1
    frame = (torch.randn(4, 1, 48) * 0.3, torch.randn(1, 70) * 0.3)
    logits = []
    for library in (native.load_library(), native._open(portable)):
        stepper = native.NativeStepper(library, weights, batch=1, threads=1, weight_dtype=torch.int8)
        stepper.set_frame(*frame)
        logits.append(stepper.run(0, 300, teacher=inputs))
    assert (logits[0] - logits[1]).abs().max().item() < 5e-4 * logits[0].abs().max().item()

"""Builds the native kernels (timbre/generation/fastgen.c, the WaveNet's cached step, and
composer_step.c, the composer's); all other metadata is in pyproject.toml.

The kernel is plain C loaded with ctypes (timbre/generation/native.py), so it is built like an
extension module but exports no Python entry point. It is compiled with warnings as errors and
without ``-march=native``: the C source picks its AVX-512 / AVX2 code paths when it loads, so one
build runs on any x86-64. OpenMP is used when the compiler supports it.

Outside CI the extension is optional: without a working C compiler the package still installs and
decodes with the slower torch stepper. With ``CI`` set, a failed build fails the install.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, LinkError

WARNINGS = ["-Wall", "-Wextra", "-Werror"]
OPENMP = ["-fopenmp"]


class BuildKernel(build_ext):
    """Builds with OpenMP when the compiler has it, else single-threaded."""

    def build_extension(self, ext: Extension) -> None:
        plain_compile, plain_link = list(ext.extra_compile_args), list(ext.extra_link_args)
        ext.extra_compile_args, ext.extra_link_args = plain_compile + OPENMP, plain_link + OPENMP
        try:
            super().build_extension(ext)
            return
        except (CCompilerError, CompileError, LinkError) as error:
            self.warn(f"building {ext.name} with OpenMP failed ({error}); building it single-threaded")
        # Without OpenMP its pragmas are unknown to the compiler: expected, not a warning.
        ext.extra_compile_args = plain_compile + ["-Wno-unknown-pragmas"]
        ext.extra_link_args = plain_link
        super().build_extension(ext)

    def get_export_symbols(self, ext: Extension) -> list[str]:
        return list(ext.export_symbols or [])  # not a Python module: no PyInit_ function to export


kernel = Extension(
    "timbre.generation._fastgen",
    sources=["timbre/generation/fastgen.c", "timbre/generation/composer_step.c"],
    depends=["timbre/generation/cpu_dispatch.h"],  # rebuilds on change, and goes into the sdist
    extra_compile_args=["-O3", *WARNINGS],
    libraries=["m"],
    optional=not os.environ.get("CI"),
)

setup(ext_modules=[kernel], cmdclass={"build_ext": BuildKernel})

"""Builds the private native core, sandbox._native, from native/, and
sandbox/sandbox-init, the pid 1 of each environment's pid namespace.

The Cython sources live in native/ (a small hub, _native.pyx, that includes one
.pxi per concern). SANDBOX_DEBUG=1 builds with line tracing and an HTML
annotation next to each source, for profiling.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

INIT_SOURCE = "native/init.c"
INIT_NAME = "sandbox-init"


class BuildWithInit(build_ext):
    """build_ext, plus the init program: a small C executable, linked
    statically where the C library allows it (no dynamic loader to run at
    every environment's start)."""

    def run(self):
        super().run()
        package_dir = "sandbox" if self.inplace else os.path.join(self.build_lib, "sandbox")
        objects = self.compiler.compile([INIT_SOURCE], output_dir=self.build_temp,
                                        extra_postargs=["-O2"])
        try:
            self.compiler.link_executable(objects, INIT_NAME, output_dir=package_dir,
                                          extra_postargs=["-static", "-s"])
        except Exception:  # no static libc here: a dynamic one works the same
            self.compiler.link_executable(objects, INIT_NAME, output_dir=package_dir,
                                          extra_postargs=["-s"])

debug = os.environ.get("SANDBOX_DEBUG") == "1"

macros = [("SANDBOX_DEBUG", "1" if debug else "0")]
directives = {"language_level": "3", "boundscheck": False, "wraparound": False}
if debug:
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
    directives.update({"linetrace": True, "binding": True})

extension = Extension(
    "sandbox._native",
    sources=["native/_native.pyx"],
    include_dirs=["native"],
    libraries=["seccomp"],
    define_macros=macros,
    extra_compile_args=["-O0", "-g"] if debug else ["-O2"],
)

setup(
    cmdclass={"build_ext": BuildWithInit},
    ext_modules=cythonize(
        [extension],
        compiler_directives=directives,
        annotate=debug,
        include_path=["native"],
    ),
)

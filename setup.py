"""Builds the private native core, sandbox._native, from native/.

The Cython sources live in native/ (a small hub, _native.pyx, that includes one
.pxi per concern). SANDBOX_DEBUG=1 builds with line tracing and an HTML
annotation next to each source, for profiling.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

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
    ext_modules=cythonize(
        [extension],
        compiler_directives=directives,
        annotate=debug,
        include_path=["native"],
    ),
)

"""Building the native kernels: a build's cache key (a hash of the sources, the flags, torch and
Python) must not move because something was compiled earlier in the same process; otherwise the
next process misses the cache and compiles the same library again."""

from __future__ import annotations

import pytest
from astrai.model.kernels import build

# A Python module with no torch code: compiles and links in seconds through the same builder.
PROBE_SOURCE = """
#include <Python.h>
static struct PyModuleDef probe_module = {PyModuleDef_HEAD_INIT, "astrai_build_probe", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit_astrai_build_probe() { return PyModule_Create(&probe_module); }
"""


def test_a_compile_leaves_later_cache_keys_alone(tmp_path, monkeypatch):
    try:
        build.check_machine()
    except build.NativeUnavailable as exc:
        pytest.skip(f"this machine cannot build the native kernels: {exc}")
    flags = build._variant_flags("avx2", build.ops_namespace("avx2"))
    key_before = build._fingerprint(build.sources(), flags)
    link_flags_before = list(build.LDFLAGS)

    probe_tree = tmp_path / "csrc"  # the probe's own source tree and cache, through the real builder
    probe_tree.mkdir()
    source = probe_tree / "astrai_build_probe.cpp"
    source.write_text(PROBE_SOURCE)
    with monkeypatch.context() as patch:
        patch.setattr(build, "CSRC", probe_tree)
        patch.setenv("ASTRAI_KERNEL_CACHE", str(tmp_path / "cache"))
        module, library = build._build("astrai_build_probe", [source], ["-O0"], build.LDFLAGS, "a build probe")
        assert module.__name__ == "astrai_build_probe"
        # The same build again finds its library: one cache folder, the same file.
        _, again = build._build("astrai_build_probe", [source], ["-O0"], build.LDFLAGS, "a build probe")
        assert again == library
        assert [p.name for p in (tmp_path / "cache").iterdir()] == [library.parent.name]

    assert build.LDFLAGS == link_flags_before, "the builder's own link flags leaked into LDFLAGS"
    assert build._fingerprint(build.sources(), flags) == key_before

"""Threads and precision: what ``--threads`` and ``--precision auto`` resolve to."""

from __future__ import annotations

import os

import pytest
import torch
from diffdeblur.compute import (
    PRECISIONS,
    autocast,
    available_cpus,
    cpu_has_native_bf16,
    resolve_device,
    resolve_precision,
    set_threads,
)

FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 {extra}\nbogomips\t: 4000\n"


@pytest.mark.parametrize(
    ("extra", "native"),
    [("", False), ("avx512f avx512_bf16", True), ("amx_bf16 amx_tile", True), ("avx512f", False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, extra, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(FLAGS.format(extra=extra))
    assert cpu_has_native_bf16(cpuinfo) is native


def test_no_cpu_flags_file_means_no_native_bf16(tmp_path):
    assert cpu_has_native_bf16(tmp_path / "missing") is False


def test_auto_precision_follows_the_device_and_the_cpu():
    assert resolve_precision("auto", "cuda") == "fp16"
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", "cpu") == expected
    for option in PRECISIONS[1:]:
        assert resolve_precision(option, "cpu") == option
    with pytest.raises(ValueError, match="precision: must be one of"):
        resolve_precision("fp64", "cpu")


def test_autocast_changes_the_dtype_of_a_matrix_product_only_when_asked():
    a = torch.ones(4, 4)
    with autocast("fp32", "cpu"):
        assert (a @ a).dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert (a @ a).dtype == torch.bfloat16


def test_threads_default_to_the_process_affinity_and_bad_counts_are_refused():
    before = torch.get_num_threads()
    try:
        assert available_cpus() == len(os.sched_getaffinity(0))
        assert set_threads(None) == available_cpus() == torch.get_num_threads()
        assert set_threads(1) == 1 == torch.get_num_threads()
        with pytest.raises(ValueError, match="threads: must be >= 1"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_importing_diffdeblur_makes_openmp_waits_sleep_unless_told_otherwise():
    import subprocess
    import sys

    code = "import os, diffdeblur; print(os.environ['OMP_WAIT_POLICY'])"
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    default = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    assert default.stdout.strip() == "PASSIVE"
    chosen = subprocess.run(
        [sys.executable, "-c", code],
        env={**environment, "OMP_WAIT_POLICY": "ACTIVE"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert chosen.stdout.strip() == "ACTIVE"


def test_auto_device_is_cuda_only_where_there_is_one():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: cuda: no CUDA device is available"):
            resolve_device("cuda")

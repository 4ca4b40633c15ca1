"""Fixtures of the tools' tests."""
import pytest

from alignment import bench


@pytest.fixture
def bench_all_unmeasured(monkeypatch):
  """`bench all` with nothing measured: fixed peaks (bfloat16 1, float32 2 GFLOP/s,
  3 GB/s) and a `profile` benchmark that returns at once (4 GFLOP in 2 s), so a test
  of how `bench all` handles the others runs in a second."""
  monkeypatch.setattr(bench.suite.peaks_lib, "measure_peaks", lambda platform, copy_mib, repeats: {
      "bfloat16_gflops": 1.0, "float32_gflops": 2.0, "bandwidth_gbs": 3.0})
  monkeypatch.setitem(bench.BENCHMARKS, "profile", (
      bench.BENCHMARKS["profile"][0], lambda args: {"settings": {"model": "m"},
                                                    "model_flops": 4e9,
                                                    "profiles": {"float32": {"step_s": 2.0}}},
      None))

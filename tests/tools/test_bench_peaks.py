"""`alignment.bench.peaks`: JAX device kinds matched to the vendor peaks table, and the
fallback to measured peaks (no device, no torch)."""
import pytest

from alignment.bench import peaks

MEASURED = {"bfloat16_gflops": 50.0, "float32_gflops": 100.0, "bandwidth_gbs": 20.0}


@pytest.mark.parametrize("kind, chip", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB"),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
    ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
    ("NVIDIA L4", "L4"),
    ("TPU v4", "TPU v4"),
    ("TPU v5 lite", "TPU v5e"),
    ("TPU v5e", "TPU v5e"),
    ("TPU v5", "TPU v5p"),
    ("TPU v5p", "TPU v5p"),
    ("TPU v6 lite", "TPU v6e"),
    ("tpu V6E", "TPU v6e"),
])
def test_lookup_matches_jax_device_kinds(kind, chip):
  assert peaks.lookup(kind).name == chip


@pytest.mark.parametrize("kind", ["NVIDIA L40S", "NVIDIA GeForce RTX 4090", "TPU v3",
                                  "TPU v4 lite", "cpu", ""])
def test_lookup_does_not_guess_unknown_kinds(kind):
  assert peaks.lookup(kind) is None


def test_table_figures_are_dense_and_consistent():
  for chip in peaks.TABLE:
    assert chip.source and chip.hbm_bytes_per_s > 1e11
    assert chip.bfloat16_flops > (chip.float32_flops or 0) > -1
  assert peaks.lookup("NVIDIA H100 80GB HBM3").bfloat16_flops == pytest.approx(989.4e12)


def test_device_peaks_uses_the_table_on_a_known_accelerator():
  p = peaks.device_peaks("NVIDIA H100 80GB HBM3", "gpu", MEASURED)
  assert p["bfloat16"]["flops"] == pytest.approx(989.4e12)
  assert p["bandwidth"]["bytes_per_s"] == pytest.approx(3.35e12)
  assert p["float32"]["source"].startswith("table: NVIDIA H100")


def test_device_peaks_falls_back_to_measured_and_says_so():
  tpu = peaks.device_peaks("TPU v5 lite", "tpu", MEASURED)  # no vendor float32 figure
  assert tpu["bfloat16"]["source"].startswith("table")
  assert tpu["float32"] == {"flops": 100e9, "source": "measured on this device"}
  unknown = peaks.device_peaks("NVIDIA B200", "gpu", MEASURED)
  assert unknown["chip"] is None and "not in" in unknown["note"]
  assert unknown["bandwidth"] == {"bytes_per_s": 20e9, "source": "measured on this device"}
  cpu = peaks.device_peaks("cpu", "cpu", MEASURED)
  assert cpu["bfloat16"]["flops"] == 50e9 and cpu["note"].startswith("CPU")

"""Peak FLOP/s and memory bandwidth per chip, by JAX `device.device_kind`.

The denominators of `bench all`'s MFU and MBU on an accelerator: the vendor's
dense (no sparsity) bfloat16 and float32 matmul FLOP/s and HBM bandwidth of one
chip, each from the datasheet named beside it. `lookup` matches JAX's
`device_kind` strings ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "TPU v5
lite", "TPU v4"); `device_peaks` falls back to peaks measured on the device
(`measure.matmul_peak`, `measure.memory_bandwidth`) for a kind the table does not
know, for a figure the vendor does not publish (a TPU's float32: XLA runs float32
matmuls as bfloat16 passes on the MXU), and on CPU, and says which it used.
"""
from __future__ import annotations

import dataclasses
import re

from alignment.bench.measure import Json

_TERA = 1e12


@dataclasses.dataclass(frozen=True)
class ChipPeaks:
  """One chip's vendor figures; None where the vendor publishes none."""
  name: str
  bfloat16_flops: float  # dense, FLOP/s
  float32_flops: float | None  # dense, FLOP/s
  hbm_bytes_per_s: float
  source: str  # the datasheet


# NVIDIA figures: dense Tensor Core BF16 (the datasheets' headline is with 2:4
# sparsity, twice these) and FP32 on CUDA cores (TF32 Tensor Core is higher; XLA
# uses it for float32 matmuls only at a lower precision setting).
_H100_SXM = ChipPeaks("H100 SXM", 989.4 * _TERA, 66.9 * _TERA, 3.35e12,
                      "NVIDIA H100 Tensor Core GPU datasheet (H100 SXM)")
_H100_PCIE = ChipPeaks("H100 PCIe", 756.5 * _TERA, 51.2 * _TERA, 2.0e12,
                       "NVIDIA H100 Tensor Core GPU datasheet (H100 PCIe)")
_H100_NVL = ChipPeaks("H100 NVL", 835.5 * _TERA, 60.0 * _TERA, 3.9e12,
                      "NVIDIA H100 Tensor Core GPU datasheet (H100 NVL)")
_H200 = ChipPeaks("H200 SXM", 989.4 * _TERA, 66.9 * _TERA, 4.8e12,
                  "NVIDIA H200 Tensor Core GPU datasheet (H200 SXM)")
_A100_40 = ChipPeaks("A100 40GB", 312 * _TERA, 19.5 * _TERA, 1.555e12,
                     "NVIDIA A100 Tensor Core GPU datasheet (A100 40GB)")
_A100_80 = ChipPeaks("A100 80GB SXM", 312 * _TERA, 19.5 * _TERA, 2.039e12,
                     "NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM)")
_A100_80_PCIE = ChipPeaks("A100 80GB PCIe", 312 * _TERA, 19.5 * _TERA, 1.935e12,
                          "NVIDIA A100 Tensor Core GPU datasheet (A100 80GB PCIe)")
_L4 = ChipPeaks("L4", 121 * _TERA, 30.3 * _TERA, 0.3e12, "NVIDIA L4 Tensor Core GPU datasheet")
# Google figures: peak bf16 compute and HBM bandwidth per chip; no float32 figure.
_TPU_V4 = ChipPeaks("TPU v4", 275 * _TERA, None, 1.2e12,
                    "Google Cloud TPU documentation, TPU v4 system architecture")
_TPU_V5E = ChipPeaks("TPU v5e", 197 * _TERA, None, 0.819e12,
                     "Google Cloud TPU documentation, TPU v5e")
_TPU_V5P = ChipPeaks("TPU v5p", 459 * _TERA, None, 2.765e12,
                     "Google Cloud TPU documentation, TPU v5p")
_TPU_V6E = ChipPeaks("TPU v6e", 918 * _TERA, None, 1.64e12,
                     "Google Cloud TPU documentation, TPU v6e (Trillium)")

TABLE = (_H100_SXM, _H100_PCIE, _H100_NVL, _H200, _A100_40, _A100_80, _A100_80_PCIE, _L4,
         _TPU_V4, _TPU_V5E, _TPU_V5P, _TPU_V6E)


def lookup(device_kind: str) -> ChipPeaks | None:
  """The table's chip for a JAX `device_kind`, or None for a kind it does not know.

  Case, punctuation and word order do not matter ("NVIDIA A100-SXM4-80GB",
  "NVIDIA A100 80GB PCIe"); "lite" and a trailing "e" are the same TPU ("TPU v5
  lite", "TPU v5e"); "TPU v5" and "TPU v5p" are v5p.
  """
  words = re.findall(r"[a-z0-9]+", device_kind.lower())
  s = " ".join(words)
  has = lambda *ws: all(w in words for w in ws)
  if "tpu" in words:
    lite = "lite" in words or "litepod" in words
    if has("v4") and not lite:
      return _TPU_V4
    if has("v5e") or has("v5", "lite") or has("v5", "litepod"):
      return _TPU_V5E
    if has("v5p") or (has("v5") and not lite):
      return _TPU_V5P
    if has("v6e") or has("v6", "lite"):
      return _TPU_V6E
    return None
  if re.search(r"\bh100", s):
    return _H100_PCIE if "pcie" in s else _H100_NVL if "nvl" in words else _H100_SXM
  if re.search(r"\bh200", s):
    return _H200 if "nvl" not in words else None  # H200 NVL: other figures
  if "a100" in words:
    if "80gb" in words:
      return _A100_80_PCIE if "pcie" in words else _A100_80
    return _A100_40
  if "l4" in words:
    return _L4
  return None


def device_peaks(device_kind: str, platform: str, measured: Json) -> Json:
  """The peaks MFU and MBU are against, each with where it came from.

  `measured` holds this device's measured peaks (`measure_peaks`). Returns
  {"bfloat16"|"float32": {"flops", "source"}, "bandwidth": {"bytes_per_s",
  "source"}, "chip", "device_kind", "platform", "note"}.
  """
  chip = lookup(device_kind) if platform != "cpu" else None
  m_flops = {"bfloat16": measured["bfloat16_gflops"] * 1e9,
             "float32": measured["float32_gflops"] * 1e9}
  out: Json = {"device_kind": device_kind, "platform": platform,
               "chip": chip.name if chip else None}
  for dtype, vendor in (("bfloat16", chip and chip.bfloat16_flops),
                        ("float32", chip and chip.float32_flops)):
    out[dtype] = ({"flops": vendor, "source": f"table: {chip.source}"} if vendor else
                  {"flops": m_flops[dtype], "source": "measured on this device"})
  out["bandwidth"] = ({"bytes_per_s": chip.hbm_bytes_per_s, "source": f"table: {chip.source}"}
                      if chip else {"bytes_per_s": measured["bandwidth_gbs"] * 1e9,
                                    "source": "measured on this device"})
  if platform == "cpu":
    out["note"] = "CPU: measured peaks (as every benchmark measures them)"
  elif chip is None:
    out["note"] = (f"device kind {device_kind!r} is not in alignment/bench/peaks.py's table: "
                   "MFU and MBU are against peaks measured on this device")
  elif chip.float32_flops is None:
    out["note"] = f"{chip.name}: no vendor float32 figure; float32 MFU against the measured peak"
  else:
    out["note"] = f"{chip.name}: vendor peaks"
  return out


def measure_peaks(device_platform: str, copy_mib: int = 512, repeats: int = 10) -> Json:
  """This device's float32 and bfloat16 matmul peaks (GFLOP/s, the fastest of `repeats`)
  and copy bandwidth (GB/s) over `copy_mib` MiB (past a CPU's last-level cache).

  On an accelerator the bandwidth is XLA's copy on the device (numpy's is the host's).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from alignment.bench import measure  # pylint: disable=g-import-not-at-top
  f32 = measure.matmul_peak(repeats)
  bf16 = {name: flops / min(measure.timed(fn, repeats, warmup=2)) / 1e9
          for name, (flops, fn) in measure.matmul_calls(dtype=jnp.bfloat16).items()}
  bw = measure.memory_bandwidth(copy_mib)
  return {"matmul_peak": f32, "bfloat16_matmul_peak": bf16, "memory_bandwidth": bw,
          "float32_gflops": f32["gflops"], "bfloat16_gflops": max(bf16.values()),
          "bandwidth_gbs": bw["gbs"] if device_platform == "cpu" else bw["xla_gbs"]}

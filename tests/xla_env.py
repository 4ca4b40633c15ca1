"""The test session's XLA flags, for the processes the tests start.

conftest.py sets XLA_FLAGS before JAX starts: 8 host devices and XLA's CPU
back end at its cheapest to compile (`CODEGEN`), unless the caller's XLA_FLAGS
already name an optimisation level. A test that starts `python -m
alignment.main`, a study or a multi-process job gives it `flags(devices)`: the
same flags with its own device count, so a run in a subprocess compiles the
programs the test's own process compiles, and comparisons between them stay
bit for bit.
"""
import os

# XLA's CPU back end at its cheapest to compile: LLVM unoptimised, and each fusion's
# code from XLA's elemental LLVM emitter rather than its MLIR fusion emitters. The XLA
# programs (HLO, fusion, layouts) are those of any run (a lone elementwise op is left
# unwrapped rather than made a fusion of one); only the machine code differs (no FMA
# contraction or vectorisation, the elemental emitter's expansions of exp, log and
# tanh), so numbers can differ from a default build's in their last bits, the same in
# every process of the session. One program gives the same bits everywhere; two
# programs doing the same arithmetic need not (`same_bits_across_programs`). Compiling
# takes about half the CPU time of the default (a cold tiny online run: 21 -> 16 CPU-s
# for the emitter alone); tiny models run as fast.
# `XLA_FLAGS=--xla_backend_optimization_level=2 make test` tests the default back end.
_ELEMENTAL = "--xla_cpu_use_fusion_emitters=false"
CODEGEN = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
           _ELEMENTAL)
_DEVICES = "--xla_force_host_platform_device_count"


def session_flags(given: str, devices: int = 8) -> str:
  """XLA_FLAGS for the session: `given` (the caller's), CODEGEN unless `given` names an
  optimisation level, and the device count."""
  flags = [f for f in given.split() if not f.startswith(_DEVICES)]
  if not any(f.startswith("--xla_backend_optimization_level") for f in flags):
    flags += CODEGEN
  return " ".join(flags + [f"{_DEVICES}={devices}"])


def same_bits_across_programs() -> bool:
  """Whether two different programs doing the same arithmetic (the online loop's update
  and the offline loop's step on the same pairs) give the same bits in this session:
  they do with XLA's MLIR fusion emitters, not with the elemental emitter of CODEGEN
  (the tandem replay of a smoke study: 2.8e-5 relative apart, 2026-12-07)."""
  return _ELEMENTAL not in os.environ.get("XLA_FLAGS", "").split()


def flags(devices: int) -> str:
  """The session's XLA_FLAGS (as conftest set them) with `devices` host devices."""
  return session_flags(os.environ.get("XLA_FLAGS", ""), devices)

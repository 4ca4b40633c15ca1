"""The test session's XLA flags, for the processes the tests start.

conftest.py sets XLA_FLAGS before JAX starts: 8 host devices and XLA's LLVM
back end without its optimisations (`CODEGEN`), unless the caller's XLA_FLAGS
already name an optimisation level. A test that starts `python -m
alignment.main`, a study or a multi-process job gives it `flags(devices)`: the
same flags with its own device count, so a run in a subprocess compiles the
programs the test's own process compiles, and comparisons between them stay
bit for bit.
"""
import os

# The LLVM back end unoptimised: the XLA programs (HLO, fusion, layouts) are those of
# any run; only the machine code differs (no FMA contraction or vectorisation), so
# numbers can differ from an optimised build's in their last bits, the same in every
# process of the session. Compiling takes about a third less CPU time; tiny models
# run as fast. `XLA_FLAGS=--xla_backend_optimization_level=2 make test` tests the
# optimised code instead.
CODEGEN = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
_DEVICES = "--xla_force_host_platform_device_count"


def session_flags(given: str, devices: int = 8) -> str:
  """XLA_FLAGS for the session: `given` (the caller's), CODEGEN unless `given` names an
  optimisation level, and the device count."""
  flags = [f for f in given.split() if not f.startswith(_DEVICES)]
  if not any(f.startswith("--xla_backend_optimization_level") for f in flags):
    flags += CODEGEN
  return " ".join(flags + [f"{_DEVICES}={devices}"])


def flags(devices: int) -> str:
  """The session's XLA_FLAGS (as conftest set them) with `devices` host devices."""
  return session_flags(os.environ.get("XLA_FLAGS", ""), devices)

"""Test set-up: 8 fake CPU devices, set before JAX starts (docs/conventions.md, "Tests")."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import jax  # noqa: E402  (must follow the flags above)

jax.config.update("jax_threefry_partitionable", True)

assert len(jax.devices()) == 8, "conftest must run before anything imports jax"

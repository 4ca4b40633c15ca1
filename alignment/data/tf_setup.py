"""TensorFlow for the input pipeline only: never on an accelerator.

TF would otherwise claim every GPU's memory (and on a TPU VM try to open the
TPU) that JAX needs, as big_vision and t5x warn. Every module of
`alignment.data` that uses TF imports it from here, so the devices are hidden
before TF creates its context. If TF was already initialised by someone else,
hiding is impossible; that is logged, not fatal (on a CPU-only host nothing is
lost).
"""
from __future__ import annotations

import logging

import tensorflow as tf

log = logging.getLogger(__name__)
HIDDEN: dict[str, bool] = {}


def hide_accelerators() -> dict[str, bool]:
  """tf.config.set_visible_devices([], kind) for GPU and TPU; returns what was hidden."""
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
      HIDDEN[kind] = True
    except (RuntimeError, ValueError) as e:  # context already initialised / unknown kind
      HIDDEN[kind] = not tf.config.get_visible_devices(kind) if kind == "GPU" else False
      log.info("could not hide %s devices from TensorFlow: %s", kind, e)
  return dict(HIDDEN)


hide_accelerators()

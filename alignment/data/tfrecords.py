"""TFRecord files read back: where a damaged one breaks (stream chunks, imports)."""
from __future__ import annotations

from alignment.data.tf_setup import tf


def damaged_record(path: str) -> str:
  """Where TFRecord's framing finds a file damaged: ', record N (...)', else a count
  of the whole records it holds."""
  n = 0
  try:
    for _ in tf.data.TFRecordDataset(path).as_numpy_iterator():
      n += 1
  except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as e:
    why = "truncated" if "truncated" in str(e).lower() else "corrupted"
    return f", record {n + 1} ({why}; records 1-{n} are whole)" if n else \
        f", record 1 ({why})"
  return f" ({n} whole records; a part is missing or altered)"

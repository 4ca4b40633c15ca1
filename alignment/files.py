"""Files that are never seen half-written, and the JSONL the runs keep.

Every writer in the package goes through `write_atomic`: the content goes to
a temporary name beside the target, then one rename puts it in place, so a
reader (or a rerun after a kill) sees the old file or the new one, never a
part. Paths may be local or URLs (gs://...) through etils.epath.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

from etils import epath


def write_atomic(path: str, write: Callable[[Any], None], mode: str = "w") -> None:
  """Calls `write(f)` on a temporary file opened with `mode`, then renames it to
  `path`. The temporary name keeps the target's suffix (numpy and others
  look at it) and carries the pid, so two writers never share one."""
  root, ext = os.path.splitext(str(path))
  tmp = epath.Path(f"{root}.tmp{os.getpid()}{ext}")
  try:
    with tmp.open(mode) as f:
      write(f)
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


def write_text(path: str, text: str) -> None:
  write_atomic(path, lambda f: f.write(text))


def write_bytes(path: str, data: bytes) -> None:
  write_atomic(path, lambda f: f.write(data), mode="wb")


def write_json(path: str, obj: Any, sort_keys: bool = True) -> None:
  """JSON, indented, non-JSON values written by str()."""
  write_atomic(path, lambda f: json.dump(obj, f, indent=1, sort_keys=sort_keys, default=str))


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSONL file ([] when it does not exist); a line that is not
  JSON is an error naming the file and the line."""
  p = epath.Path(path)
  if not p.exists():
    return []
  records = []
  with p.open() as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n}: not a JSON record ({e.msg})") from None
  return records

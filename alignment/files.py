"""Files that are never seen half-written, and the JSONL the runs keep.

Every writer in the package goes through `write_atomic`: the content goes to
a temporary name beside the target, then one rename puts it in place, so a
reader (or a rerun after a kill) sees the old file or the new one, never a
part. Paths may be local or URLs (gs://...) through etils.epath.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator

from etils import epath


def write_atomic(path: str, write: Callable[[Any], None], mode: str = "w") -> None:
  """Calls `write(f)` on a temporary file opened with `mode`, then renames it to
  `path`. The temporary name keeps the target's suffix (numpy and others
  look at it) and carries the pid, so two writers never share one."""
  root, ext = os.path.splitext(str(path))
  tmp = epath.Path(f"{root}.tmp{os.getpid()}{ext}")
  try:
    with tmp.open(mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      write(f)
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


@contextlib.contextmanager
def staged(directory: str) -> Iterator[str]:
  """A set of files that appears in `directory` together or not at all (local paths).

  The block writes its files into the yielded temporary directory inside
  `directory`; when it ends without error they are renamed into place (renames
  need no new space), otherwise the temporary directory is removed and the old
  files are left as they were.
  """
  os.makedirs(directory, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".staged.tmp-", dir=directory)
  try:
    yield tmp
    for name in sorted(os.listdir(tmp)):
      os.replace(os.path.join(tmp, name), os.path.join(directory, name))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


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


class BadName(ValueError):
  """A name given where one entry of a directory is meant, that could lead out of it."""


def check_name(name, what: str) -> str:
  """`name` if it names one entry inside a directory and nothing else: a non-empty
  string without a path separator (/ or \\: so neither an absolute path nor a
  nested one), not "." or "..", without NUL or other control characters, at most
  255 bytes in UTF-8. Else `BadName`, one line: `<what>: <name>: <why>`.

  For names the user gives that become files or directories under one we chose
  (an import's `--name`, a shard named by an index file, a task name)."""
  if not isinstance(name, str):
    raise BadName(f"{what}: {name!r}: not a string")
  shown = repr(name) if len(name) <= 80 else repr(name[:80]) + "..."
  if not name.strip():
    raise BadName(f"{what}: {shown}: empty; give a plain name")
  if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
    raise BadName(f"{what}: {shown}: has a path separator; give a plain name, not a path")
  if name in (".", ".."):
    raise BadName(f"{what}: {shown}: names a directory itself; give a plain name")
  if any(ord(c) < 32 or ord(c) == 127 for c in name):
    raise BadName(f"{what}: {shown}: has a control character; give a plain name")
  try:
    size = len(name.encode("utf-8"))
  except UnicodeEncodeError:
    raise BadName(f"{what}: {shown}: not text (an unpaired surrogate)") from None
  if size > 255:
    raise BadName(f"{what}: {shown}: {size} bytes, more than a file name may have (255)")
  return name


CHECKSUMS = "SHA256SUMS"


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with epath.Path(path).open("rb") as f:
    while block := f.read(1 << 22):
      h.update(block)
  return h.hexdigest()


def write_checksums(directory: str, names: list[str]) -> None:
  """<directory>/SHA256SUMS for the named files, in `sha256sum` format (so
  `cd DIR && sha256sum -c SHA256SUMS` checks them too)."""
  write_text(os.path.join(directory, CHECKSUMS), "".join(
      f"{sha256(os.path.join(directory, n))}  {n}\n" for n in sorted(names)))


def damaged_checksums(directory: str) -> list[str] | None:
  """The files of <directory>/SHA256SUMS that are missing or do not match it; None
  when the directory has no SHA256SUMS (written before checksums)."""
  path = epath.Path(directory, CHECKSUMS)
  if not path.exists():
    return None
  bad = []
  for line in path.read_text().splitlines():
    digest, _, name = line.partition("  ")
    target = os.path.join(directory, name)
    if not name or not epath.Path(target).exists() or sha256(target) != digest:
      bad.append(target if name else f"{path} ({line!r})")
  return bad

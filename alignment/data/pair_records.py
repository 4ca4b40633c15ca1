"""A user's preference file, read and checked record by record (`read_records`).

The formats (jsonl, tldr, hh, chat), JSON Lines and Parquet input, and what makes
a record bad are `alignment.data.import_pairs`'s (its docstring is the reference);
this module reads them: every record parsed into a `Record` (texts, and for chat
the messages), every bad one a `BadInput` whose message names the file, the line
or row, and the field. `import_pairs` tokenizes and writes what it yields.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator, Sequence


FORMATS = ("jsonl", "tldr", "hh", "chat")
# The fields each format reads: the Parquet columns read (the others are never loaded).
COLUMNS = {"jsonl": ("id", "prompt", "chosen", "rejected"), "tldr": ("info", "summaries", "choice"),
           "hh": ("id", "chosen", "rejected"), "chat": ("id", "prompt", "chosen", "rejected")}
CHAT_ROLES = ("system", "user", "assistant")
PARQUET_BATCH = 256  # rows turned into Python objects at a time
HH_MARKER = "\n\nAssistant:"


class BadInput(Exception):
  """A user error: the message is the whole story."""


class Record:
  """A parsed record: texts (for chat, the messages as JSON), where it was, and for chat
  the messages themselves ([{"role", "content"}] of the prompt and of each response)."""
  __slots__ = ("line", "where", "id", "prompt", "chosen", "rejected", "messages")

  def __init__(self, line, where, id_, prompt, chosen, rejected, messages=None):
    self.line, self.where, self.id = line, where, id_
    self.prompt, self.chosen, self.rejected, self.messages = prompt, chosen, rejected, messages


def _field(obj: dict, path: str, where: str, kind=str):
  """obj's value at a dotted path ("info.post", "summaries[1].text"), type-checked."""
  value: Any = obj
  walked = ""
  for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
    if part.startswith("["):
      i = int(part[1:-1])
      if not isinstance(value, list) or i >= len(value):
        raise BadInput(f'{where}: field "{walked}": expected a list of at least {i + 1} items')
      value = value[i]
      walked += part
    else:
      walked += ("." if walked else "") + part
      if not isinstance(value, dict) or part not in value:
        raise BadInput(f'{where}: field "{walked}" is missing')
      value = value[part]
  if kind is str:
    if not isinstance(value, str):
      raise BadInput(f'{where}: field "{walked}": expected text, got {type(value).__name__}')
    if not value.strip():
      raise BadInput(f'{where}: field "{walked}": empty text')
    _check_encodable(value, where, walked)
  elif kind is list and not isinstance(value, list):
    raise BadInput(f'{where}: field "{walked}": expected a list, got {type(value).__name__}')
  return value


def _check_encodable(text: str, where: str, field: str):
  """JSON's \\ud800 escapes decode to lone surrogates, which no UTF-8 writer takes."""
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    raise BadInput(f'{where}: field "{field}": an unpaired surrogate '
                   f'(\\u{ord(text[e.start]):04x}) is not text') from None


def _short(value) -> str:
  """A value for an error line: its repr, cut (a field may hold megabytes)."""
  text = repr(value)
  return text if len(text) <= 60 else text[:50] + f"... ({len(text)} characters)"


def _from_jsonl(obj: dict, where: str):
  return (_field(obj, "prompt", where), _field(obj, "chosen", where),
          _field(obj, "rejected", where))


def _from_tldr(obj: dict, where: str):
  info = obj.get("info")
  if not isinstance(info, dict):
    raise BadInput(f'{where}: field "info": ' + ("is missing" if info is None else
                                                 f"expected an object, got {type(info).__name__}"))
  body_key = "post" if "post" in info else "article"
  body = _field(obj, f"info.{body_key}", where)
  parts = []
  if info.get("subreddit") is not None:
    parts.append(f"SUBREDDIT: r/{_field(obj, 'info.subreddit', where)}")
  if info.get("title") is not None:
    parts.append(f"TITLE: {_field(obj, 'info.title', where)}")
  parts.append(f"{body_key.upper()}: {body.strip()}")
  prompt = "\n".join(parts) + "\n\nTL;DR:"
  summaries = _field(obj, "summaries", where, kind=list)
  if len(summaries) != 2:
    raise BadInput(f'{where}: field "summaries": expected 2 summaries, got {len(summaries)}')
  texts = [_field(obj, f"summaries[{i}].text", where).strip() for i in range(2)]
  choice = obj.get("choice")
  if "choice" not in obj:
    raise BadInput(f'{where}: field "choice" is missing')
  if type(choice) is not int or choice not in (0, 1):  # pylint: disable=unidiomatic-typecheck
    raise BadInput(f'{where}: field "choice": expected 0 or 1, got {_short(choice)}')
  return prompt, texts[choice], texts[1 - choice]


def _from_hh(obj: dict, where: str):
  split = {}
  for side in ("chosen", "rejected"):
    text = _field(obj, side, where)
    at = text.rfind(HH_MARKER)
    if at < 0:
      raise BadInput(f'{where}: field "{side}": no "\\n\\nAssistant:" turn in the transcript')
    response = text[at + len(HH_MARKER):].strip()
    if not response:
      raise BadInput(f'{where}: field "{side}": empty text after the last "\\n\\nAssistant:"')
    split[side] = (text[:at + len(HH_MARKER)], response)
  if split["chosen"][0] != split["rejected"][0]:
    raise BadInput(f'{where}: fields "chosen" and "rejected": the transcripts differ before '
                   f'their last "\\n\\nAssistant:"')
  return split["chosen"][0], split["chosen"][1], split["rejected"][1]


class _Message:
  """One message of a chat record, with the field it came from ("chosen[2]", or
  "prompt" for a text that stands for one message)."""
  __slots__ = ("path", "role", "content")

  def __init__(self, path, role, content):
    self.path, self.role, self.content = path, role, content

  def role_field(self) -> str:
    return f"{self.path}.role" if self.path.endswith("]") else self.path

  def same(self, other) -> bool:
    return (self.role, self.content) == (other.role, other.content)


def _messages(obj: dict, key: str, where: str, text_role: str) -> list[_Message]:
  """obj[key] as messages: a text is one message of text_role, a list is {role, content}s."""
  value = obj.get(key)
  if key not in obj:
    raise BadInput(f'{where}: field "{key}" is missing')
  if isinstance(value, str):
    return [_Message(key, text_role, _field(obj, key, where))]
  if not isinstance(value, list):
    raise BadInput(f'{where}: field "{key}": expected text or a list of messages, got '
                   f"{type(value).__name__}")
  if not value:
    raise BadInput(f'{where}: field "{key}": no messages')
  out = []
  for i, message in enumerate(value):
    path = f"{key}[{i}]"
    if not isinstance(message, dict):
      raise BadInput(f'{where}: field "{path}": expected a message {{"role", "content"}}, got '
                     f"{type(message).__name__}")
    role = _field(obj, f"{path}.role", where)
    if role not in CHAT_ROLES:
      raise BadInput(f'{where}: field "{path}.role": expected "system", "user" or "assistant", '
                     f"got {_short(role)}")
    out.append(_Message(path, role, _field(obj, f"{path}.content", where)))
  return out


def _check_turns(messages: list[_Message], where: str, ends_with: str):
  """An optional first system message, then user and assistant by turns from the user's,
  the last one ends_with's."""
  start = 1 if messages[0].role == "system" else 0
  for i, m in enumerate(messages[start:]):
    expected = "user" if i % 2 == 0 else "assistant"
    if m.role != expected:
      raise BadInput(f'{where}: field "{m.role_field()}": "{m.role}" out of order, expected '
                     f'"{expected}" (after an optional first system message, user and '
                     "assistant take turns)")
  last = messages[-1]
  if last.role != ends_with:
    what = "a prompt ends with the user's turn" if ends_with == "user" else (
        "a conversation ends with the assistant's reply")
    raise BadInput(f'{where}: field "{last.role_field()}": the last message is the '
                   f"{last.role}'s; {what}")


def _from_chat(obj: dict, where: str):
  """The layouts of the module docstring -> (prompt, chosen, rejected) messages."""
  sides = {s: _messages(obj, s, where, "assistant") for s in ("chosen", "rejected")}
  if "prompt" in obj:
    prompt = _messages(obj, "prompt", where, "user")
    _check_turns(prompt, where, ends_with="user")
    for side, messages in sides.items():
      if messages[0].role != "assistant":  # the whole conversation: it opens with the prompt
        n = len(prompt)
        if len(messages) <= n or not all(a.same(b) for a, b in zip(messages, prompt)):
          raise BadInput(f'{where}: fields "prompt" and "{side}": "{side}" opens with a '
                         f'"{messages[0].role}" message, so it is a whole conversation, but '
                         "it does not begin with the prompt and go on after it")
        sides[side] = messages[n:]
  else:
    chosen, rejected = sides["chosen"], sides["rejected"]
    for side, messages in sides.items():
      if len(messages) == 1 and messages[0].path == side:
        raise BadInput(f'{where}: field "prompt" is missing (and "{side}" is a text, not a '
                       "conversation that holds the prompt)")
      _check_turns(messages, where, ends_with="assistant")
    shared = 0
    while (shared < min(len(chosen), len(rejected)) and
           chosen[shared].same(rejected[shared])):
      shared += 1
    if shared in (len(chosen), len(rejected)):
      raise BadInput(f'{where}: fields "chosen" and "rejected": ' + (
          "the same conversation" if len(chosen) == len(rejected) else
          "one conversation is the start of the other") + ", nothing to compare")
    if not shared or chosen[shared].role != "assistant":
      raise BadInput(f'{where}: fields "chosen" and "rejected": different prompts (they part '
                     f'at {chosen[shared].path}, a "{chosen[shared].role}" message; they '
                     "must share every message before the assistant's replies)")
    prompt = chosen[:shared]
    sides = {"chosen": chosen[shared:], "rejected": rejected[shared:]}
  for side, messages in sides.items():
    _check_turns(prompt + messages, where, ends_with="assistant")
  as_dicts = lambda ms: [{"role": m.role, "content": m.content} for m in ms]
  return as_dicts(prompt), as_dicts(sides["chosen"]), as_dicts(sides["rejected"])


_PARSERS = {"jsonl": _from_jsonl, "tldr": _from_tldr, "hh": _from_hh, "chat": _from_chat}


def _jsonl_objects(path: str) -> Iterator[tuple[int, str, str, Any]]:
  """(line number, where, the line's name for a duplicate, JSON value) of each non-blank line."""
  try:
    f = open(path, "rb")  # pylint: disable=consider-using-with  (closed below)
  except OSError as e:
    raise BadInput(f"{path}: cannot read: {e.strerror}") from None
  with f:
    for number, raw in enumerate(f, start=1):
      where = f"{path}:{number}"
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise BadInput(f"{where}: invalid UTF-8 at byte {e.start} of the line") from None
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise BadInput(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
      except RecursionError:  # json's parser recurses: thousands of nested lists
        raise BadInput(f"{where}: not valid JSON (nested too deeply)") from None
      except ValueError as e:  # an integer of over 4300 digits; the rest is its advice
        raise BadInput(f"{where}: not valid JSON ({str(e).split(';')[0]})") from None
      yield number, where, f"line {number}", obj


def _without_nulls(value):
  """A Parquet row as the JSON object it stands for: a null field is an absent one."""
  if isinstance(value, dict):
    return {k: _without_nulls(v) for k, v in value.items() if v is not None}
  if isinstance(value, list):
    return [_without_nulls(v) for v in value]
  return value


def _parquet_shards(path: str) -> list[str]:
  if not os.path.isdir(path):
    return [path]
  shards = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".parquet"))
  if not shards:
    raise BadInput(f"{path}: no *.parquet files in the directory")
  return shards


def _parquet_batches(shard: str, columns: Sequence[str]) -> Iterator[list[dict]]:
  """The shard's rows, PARQUET_BATCH at a time (the read columns only); an unreadable
  shard is one BadInput naming it."""
  import pyarrow  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    with pq.ParquetFile(shard) as reader:
      names = [n for n in reader.schema_arrow.names if n in columns]
      start = 0
      for batch in reader.iter_batches(batch_size=PARQUET_BATCH, columns=names):
        try:
          rows = batch.to_pylist()
        except UnicodeDecodeError:  # a damaged string page: arrow does not check every one
          raise BadInput(f"{shard}: not a readable Parquet file (invalid UTF-8 in a text "
                         f"column, rows {start} to {start + batch.num_rows - 1})") from None
        start += len(rows)
        yield rows
  except (pyarrow.ArrowException, OSError) as e:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
    raise BadInput(f"{shard}: not a readable Parquet file ({reason[:160]})") from None


def _parquet_objects(path: str, fmt: str) -> Iterator[tuple[int, str, str, Any]]:
  """(index over the shards from 0, where, its name for a duplicate, row) of each row."""
  shards = _parquet_shards(path)
  index = 0
  for shard in shards:
    row = 0
    for rows in _parquet_batches(shard, COLUMNS[fmt]):
      for obj in rows:
        where = f"{shard}: row {row}" + (f" (record {index})" if len(shards) > 1 else "")
        yield index, where, f"row {row} of {shard}", _without_nulls(obj)
        row += 1
        index += 1


def is_parquet(path: str) -> bool:
  """Parquet input: a .parquet file or a directory (of .parquet shards); else JSONL."""
  return path.endswith(".parquet") or os.path.isdir(path)


def read_records(path: str, fmt: str) -> Iterator[Record]:
  """Parses and checks every record of the file (texts only; lengths come later),
  one at a time: a Parquet file is read PARQUET_BATCH rows at a time."""
  if fmt not in FORMATS:
    raise BadInput(f"unknown --format {fmt!r}: use one of {', '.join(FORMATS)}")
  objects = _parquet_objects(path, fmt) if is_parquet(path) else _jsonl_objects(path)
  seen_ids: dict[str, str] = {}
  count = 0
  for number, where, name, obj in objects:
    if not isinstance(obj, dict):
      raise BadInput(f"{where}: expected a JSON object, got {type(obj).__name__}")
    prompt, chosen, rejected = _PARSERS[fmt](obj, where)
    messages = None
    if fmt == "chat":
      messages = (prompt, chosen, rejected)
      prompt, chosen, rejected = (json.dumps(m, ensure_ascii=False) for m in messages)
    id_ = None
    if fmt != "tldr" and "id" in obj:
      if isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int)):
        raise BadInput(f'{where}: field "id": expected text or an integer, got '
                       f'{type(obj["id"]).__name__}')
      id_ = str(obj["id"])
      _check_encodable(id_, where, "id")
      if id_ in seen_ids:
        raise BadInput(f'{where}: field "id": {_short(id_)} duplicates {seen_ids[id_]}')
      seen_ids[id_] = name
    count += 1
    yield Record(number, where, id_, prompt, chosen, rejected, messages)
  if not count:
    raise BadInput(f"{path}: no records")

"""`python -m alignment.data.import_pairs`: a user's preference file -> a seqio task.

  python -m alignment.data.import_pairs --input=FILE|DIR --format=FMT --output=DIR \\
      [--vocab=byte|sentencepiece|SP_MODEL|TOKENIZER_JSON|MODEL_DIR] [--max_prompt_tokens=N] \\
      [--max_response_tokens=N] [--on_long=error|truncate] [--name=NAME] [--overwrite] \\
      [--validation_fraction=F] [--eval_fraction=F]

Input: JSON Lines (one JSON object per line; blank lines are skipped), or
Parquet: a FILE ending in .parquet or a DIR of *.parquet shards (read in
sorted order; not its subdirectories), read PARQUET_BATCH rows at a time and
only the columns the format reads (pyarrow holds at most a row group of
those), so memory stays bounded however many rows the files hold; a row is
the JSON object its columns make, a null field an absent one. Records are
read, tokenized and written CHUNK at a time.

Formats:
  jsonl  {"prompt": str, "chosen": str, "rejected": str, "id"?: str|int}
  tldr   OpenAI "summarize from feedback" comparisons: {"info": {"post"|"article":
         str, "title"?: str, "subreddit"?: str}, "summaries": [{"text": str}, {"text":
         str}], "choice": 0|1}. The prompt is "SUBREDDIT: r/<s>\\nTITLE: <t>\\nPOST:
         <post>\\n\\nTL;DR:" (the fields present), chosen = summaries[choice].
         info.id names a post, which many comparisons share, so it is not checked
         for duplicates.
  hh     Anthropic HH-RLHF: {"chosen": str, "rejected": str} full transcripts that
         share everything up to their last "\\n\\nAssistant:"; the prompt is that
         shared prefix (marker included), the responses what follows it.
  chat   conversational pairs, TRL's preference layouts, told apart per record. A
         message is {"role": "system"|"user"|"assistant", "content": str} (other
         keys are ignored; content must be text); a conversation is an optional
         first system message, then user and assistant by turns.
           {"prompt": str|[messages], "chosen": str|[messages], "rejected": ...}
             TRL's explicit prompt: a prompt text is one user message, a
             response text one assistant message; the prompt ends with the
             user's turn, each response starts with the assistant's and ends
             with it (several messages are one response, as in TRL).
           {"chosen": [messages], "rejected": [messages]}
             TRL's implicit prompt: two whole conversations; the prompt is the
             messages they share, which must end with a user turn (they part
             at the assistant's replies).
           {"prompt": ..., "chosen": [messages], "rejected": [messages]} where
             the lists open with the prompt's messages (HuggingFaceH4's
             ultrafeedback_binarized): the prompt's messages are taken off.
         --vocab must be a Hugging Face model directory (or its tokenizer.json)
         with a chat template: the prompt is the template's rendering with the
         generation prompt, each response the template's tokens for it up to
         its end-of-turn token, so prompt + response are the ids of
         transformers' apply_chat_template on the conversation
         (`alignment.data.chat` says exactly how). The texts stored beside the
         ids are the messages as JSON. --on_long=truncate drops whole turns
         from the prompt's oldest (never the system message, never inside the
         last user turn); metadata.json's "chat_template" names the template
         and the end-of-turn ids the responses end with.
Where records carry an "id", ids must be unique.

Lengths are counted in tokens of --vocab (default "byte": it reads any text;
"sentencepiece" is the environment's word vocabulary, where real words are
UNK; pass T5's or another SentencePiece model file, or a Hugging Face
tokenizer.json such as Llama 3's (or the model directory holding it), for
real text). Responses get the vocabulary's EOS (a tokenizer.json's own; chat
responses their template's end-of-turn token instead) and must fit
--max_response_tokens with it. A record over a limit is
an error with --on_long=error (the default) or is cut with --on_long=truncate:
prompts keep their LAST tokens (the text nearest the response; chat prompts
lose whole turns instead), responses their FIRST tokens (without EOS, as
batches.py allows for cut responses).

Held-out splits: --validation_fraction=F puts about F of the records in a
"validation" split (what SFT's and the PM's held-out losses and a study's
held-out pairs read), --eval_fraction=F about F in an "eval" split (a study's
win-rate prompts; with 0 the eval split is the validation records). A record's
split is fixed by a hash of its PROMPT text (sha256; for chat, of the prompt's
messages as JSON), so it does not depend on
the file's order, and comparisons that share a prompt (a TL;DR post) land in
one split. Without fractions the import is train-only, as before.

Output: DIR/pairs.tfrecord (the train split; texts and token ids),
DIR/pairs-validation.tfrecord and DIR/pairs-eval.tfrecord where those splits
are asked for, DIR/metadata.json ("splits": records per split) and
DIR/SHA256SUMS (their checksums), built in a temporary directory beside DIR
and renamed into place, so DIR is either complete or absent (a failed write, a
full disk, removes the temporary directory and leaves an older DIR as it was).
Reading DIR (`read_metadata`, `register_imported`) checks the checksums first:
a truncated or altered file is refused naming it (and the damaged record,
where TFRecord's framing finds it). A DIR imported before checksums is read
with a one-line warning that it is unverified; import it again to have it
checked. Train on it with `--config.data.task=DIR` (any task key takes an
import directory, or its name when ALIGNMENT_TASK_DIRS lists it:
`tasks.resolve`). `register_imported(DIR)` registers the seqio tasks <name>
({prompt, chosen, rejected}), <name>_prompts ({prompt}) and <name>_sft ({prompt,
response}: the chosen response, the SFT view of the same records), each with
the import's splits, and returns <name>; read them with `pipeline.make_iterator(name, "train", "pairs", ...,
prompt_length=meta["max_prompt_tokens"], response_length=...)`.

Bad input ends with one line naming the file, the line (a Parquet file's
row: "FILE: row R", counted from 0, with "(record N)" over a directory's
shards) and the field, and exit status 2 (no traceback): a missing or
mistyped field, empty text, invalid UTF-8 or JSON, an unreadable Parquet
file, a record over the length limit, a duplicated id, an unknown format; for
chat, roles out of order, a conversation that does not end with the
assistant, chosen and rejected with different prompts, a template that
refuses a conversation or needs a variable nothing sets, a tokenizer without
a template. The output directory is written whole or not at all.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from typing import Any, Iterator, Sequence

from alignment import faults, files
from alignment import files as files_lib  # register_imported has a local `files`

FORMATS = ("jsonl", "tldr", "hh", "chat")
# The fields each format reads: the Parquet columns read (the others are never loaded).
COLUMNS = {"jsonl": ("id", "prompt", "chosen", "rejected"), "tldr": ("info", "summaries", "choice"),
           "hh": ("id", "chosen", "rejected"), "chat": ("id", "prompt", "chosen", "rejected")}
CHAT_ROLES = ("system", "user", "assistant")
PARQUET_BATCH = 256  # rows turned into Python objects at a time
CHUNK = 512  # records tokenized together (batched encoding), then written
HH_MARKER = "\n\nAssistant:"
META = "metadata.json"
RECORDS = "pairs.tfrecord"
HELD_OUT = ("validation", "eval")


def split_file(split: str) -> str:
  """The records file of a split (train keeps the original name)."""
  return RECORDS if split == "train" else f"pairs-{split}.tfrecord"


def split_of(prompt: str, validation_fraction: float, eval_fraction: float) -> str:
  """A record's split from a hash of its prompt: stable across files and orders."""
  u = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2.0**64
  if u < validation_fraction:
    return "validation"
  if u < validation_fraction + eval_fraction:
    return "eval"
  return "train"


class BadInput(Exception):
  """A user error: the message is the whole story."""


class _Record:
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


def read_records(path: str, fmt: str) -> Iterator[_Record]:
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
    yield _Record(number, where, id_, prompt, chosen, rejected, messages)
  if not count:
    raise BadInput(f"{path}: no records")


def _fit(ids: list[int], limit: int, field: str, where: str, on_long: str, keep: str,
         counts: dict) -> list[int]:
  if len(ids) <= limit:
    return ids
  if on_long == "error":
    raise BadInput(f'{where}: field "{field}": {len(ids)} tokens, over the limit of {limit} '
                   f"(raise the limit or pass --on_long=truncate)")
  counts[field] += 1
  return ids[-limit:] if keep == "last" else ids[:limit]


def _check_options(fmt: str, on_long: str, max_prompt_tokens: int, max_response_tokens: int,
                   validation_fraction: float, eval_fraction: float):
  """Refuses bad flags before anything is read: a typo costs no tokenising."""
  if fmt not in FORMATS:
    raise BadInput(f"unknown --format {fmt!r}: use one of {', '.join(FORMATS)}")
  if on_long not in ("error", "truncate"):
    raise BadInput(f"unknown --on_long {on_long!r}: use error or truncate")
  if max_prompt_tokens < 1 or max_response_tokens < 1:
    raise BadInput("--max_prompt_tokens and --max_response_tokens must be positive")
  if not (0 <= validation_fraction < 1 and 0 <= eval_fraction < 1 and
          validation_fraction + eval_fraction < 1):
    raise BadInput(f"--validation_fraction={validation_fraction} and --eval_fraction="
                   f"{eval_fraction}: each in [0, 1), together under 1")
  if eval_fraction and not validation_fraction:
    raise BadInput("--eval_fraction needs a --validation_fraction too")


def _temp_dir_beside(output_dir: str) -> str:
  """A new directory beside output_dir (same file system: the final rename is
  atomic), with the permissions an ordinary new directory would get."""
  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename
  return tmp


def _split_names(validation_fraction: float, eval_fraction: float) -> list[str]:
  return ["train"] + (["validation"] if validation_fraction else []) + (
      ["eval"] if eval_fraction else [])


def _check_splits(counts: dict[str, int], input_path: str):
  """A split asked for that no record fell in is an error (its task would have nothing
  to read)."""
  empty = [n for n, c in counts.items() if not c]
  if empty:
    raise BadInput(f"{input_path}: no record fell in the {' and '.join(empty)} split (split "
                   f"by a hash of the prompt; {sum(counts.values())} records): change the "
                   "fractions")


def _example(record: _Record, prompt: list[int], chosen: list[int], rejected: list[int]) -> bytes:
  """One record as a serialised tf.train.Example: token ids beside the texts they came from."""
  from alignment.data.tf_setup import tf  # pylint: disable=g-import-not-at-top
  feats = {
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[(record.id or "").encode()])),
      "line": tf.train.Feature(int64_list=tf.train.Int64List(value=[record.line])),
  }
  for key, text, tokens in (("prompt", record.prompt, prompt), ("chosen", record.chosen, chosen),
                            ("rejected", record.rejected, rejected)):
    feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=tokens))
    feats[key + "_text"] = tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[text.encode()]))
  return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _chunks(records: Iterator[_Record], size: int) -> Iterator[list[_Record]]:
  chunk = []
  for r in records:
    chunk.append(r)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _token_ids(chunk: list[_Record], vocabulary, template, *, max_prompt_tokens: int,
               on_long: str, counts: dict) -> Iterator[tuple[list[int], list[int], list[int]]]:
  """Each record's (prompt, chosen, rejected) ids: the prompt fitted to its limit, each
  response ending with the vocabulary's EOS (or, for chat, the template's end-of-turn)."""
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  if template is None:
    ids = vocab_lib.encode_batch(vocabulary, [t for r in chunk
                                              for t in (r.prompt, r.chosen, r.rejected)])
    for i, r in enumerate(chunk):
      p, c, j = ids[3 * i:3 * i + 3]
      yield (_fit(list(p), max_prompt_tokens, "prompt", r.where, on_long, "last", counts),
             list(c) + [vocabulary.eos_id], list(j) + [vocabulary.eos_id])
    return
  from alignment.data import chat  # pylint: disable=g-import-not-at-top
  for r in chunk:
    try:
      pair = template.pair_ids(*r.messages, max_prompt_tokens=max_prompt_tokens,
                               on_long=on_long)
    except chat.ChatError as e:
      raise BadInput(f"{r.where}: {e}") from None
    counts["prompt"] += pair.turns_dropped > 0
    counts["end_of_turn"].update((pair.chosen[-1], pair.rejected[-1]))
    yield pair.prompt, pair.chosen, pair.rejected


def _write_splits(tmp: str, records: Iterator[_Record], vocabulary, template, *,
                  names: list[str], validation_fraction: float, eval_fraction: float,
                  max_prompt_tokens: int, max_response_tokens: int, on_long: str) -> dict:
  """Each record, read, tokenized and fitted to the limits CHUNK at a time, into its
  split's file; returns the records per split, how many of each field were cut (with
  --on_long=truncate; over a limit is an error otherwise) and, for chat, the
  end-of-turn ids the responses ended with."""
  from alignment.data.tf_setup import tf  # pylint: disable=g-import-not-at-top
  counts = {"splits": dict.fromkeys(names, 0), "prompt": 0, "chosen": 0, "rejected": 0,
            "end_of_turn": set()}
  writers = {n: tf.io.TFRecordWriter(os.path.join(tmp, split_file(n))) for n in names}
  with contextlib.ExitStack() as stack:
    for w in writers.values():
      stack.enter_context(w)
    for chunk in _chunks(records, CHUNK):
      ids = _token_ids(chunk, vocabulary, template, max_prompt_tokens=max_prompt_tokens,
                       on_long=on_long, counts=counts)
      for r, (p, c, j) in zip(chunk, ids):
        c = _fit(c, max_response_tokens, "chosen", r.where, on_long, "first", counts)
        j = _fit(j, max_response_tokens, "rejected", r.where, on_long, "first", counts)
        split = split_of(r.prompt, validation_fraction, eval_fraction)
        counts["splits"][split] += 1
        writers[split].write(_example(r, p, c, j))
  return counts


def _replace_dir(tmp: str, output_dir: str):
  """Renames tmp to output_dir; an older output_dir is moved aside first and
  removed only once the new one is in place."""
  if os.path.exists(output_dir):
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-",
                           dir=os.path.dirname(output_dir))
    os.replace(output_dir, os.path.join(old, "d"))
    os.replace(tmp, output_dir)
    shutil.rmtree(old)
  else:
    os.replace(tmp, output_dir)


def import_file(input_path: str, fmt: str, output_dir: str, *, vocab: str = "byte",
                max_prompt_tokens: int = 512, max_response_tokens: int = 128,
                on_long: str = "error", name: str | None = None,
                overwrite: bool = False, validation_fraction: float = 0.0,
                eval_fraction: float = 0.0) -> dict:
  """Imports a preference file into output_dir (atomically); returns its metadata."""
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  # TF through tf_setup first, so it hides the accelerators before the vocabulary loads TF.
  # pylint: disable-next=g-import-not-at-top,unused-import
  from alignment.data import tf_setup  # noqa: F401
  _check_options(fmt, on_long, max_prompt_tokens, max_response_tokens, validation_fraction,
                 eval_fraction)
  if name is not None:  # a task name (seqio's registry, caches): one plain name, never a path
    try:
      files.check_name(name, "--name")
    except files.BadName as e:
      raise BadInput(str(e)) from None
  output_dir = os.path.abspath(output_dir)
  if os.path.exists(output_dir) and not overwrite:
    raise BadInput(f"{output_dir}: exists already (pass --overwrite to replace it)")
  try:
    vocabulary = vocab_lib.get_vocabulary(vocab)
  except (ValueError, OSError) as e:
    raise BadInput(f"--vocab={vocab}: {e}") from None
  template = None
  if fmt == "chat":
    from alignment.data import chat  # pylint: disable=g-import-not-at-top
    try:
      template = chat.load_template(vocabulary)
    except ValueError as e:
      raise BadInput(f"--format=chat needs a chat template: --vocab={vocab}: {e}") from None
  names = _split_names(validation_fraction, eval_fraction)
  tmp = _temp_dir_beside(output_dir)  # records are checked as they are written
  try:
    counts = _write_splits(tmp, read_records(input_path, fmt), vocabulary, template,
                           names=names, validation_fraction=validation_fraction,
                           eval_fraction=eval_fraction, max_prompt_tokens=max_prompt_tokens,
                           max_response_tokens=max_response_tokens, on_long=on_long)
    _check_splits(counts["splits"], input_path)
    meta = {
        "format_version": 1, "source": os.path.abspath(input_path), "source_format": fmt,
        "num_records": sum(counts["splits"].values()),
        "vocab": vocab_lib.vocabulary_name(vocabulary),
        "max_prompt_tokens": max_prompt_tokens, "max_response_tokens": max_response_tokens,
        "on_long": on_long, "truncated": {k: counts[k] for k in ("prompt", "chosen", "rejected")},
        "name": name or default_name(output_dir),
        "splits": counts["splits"], "validation_fraction": validation_fraction,
        "eval_fraction": eval_fraction,
    }
    if template is not None:
      meta["chat_template"] = {"file": template.origin, "sha256": template.sha256,
                               "end_of_turn": sorted(counts["end_of_turn"])}
    with open(os.path.join(tmp, META), "w") as f:
      json.dump(meta, f, indent=1, sort_keys=True)
    files.write_checksums(tmp, [split_file(n) for n in names] + [META])
    faults.hit("import", "", path=os.path.join(tmp, RECORDS))
    _replace_dir(tmp, output_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta


def default_name(output_dir: str) -> str:
  return "user_" + re.sub(r"[^0-9a-zA-Z_]", "_", os.path.basename(os.path.normpath(output_dir)))


META_KEYS = ("name", "vocab", "num_records", "max_prompt_tokens", "max_response_tokens")


def read_metadata(directory: str) -> dict:
  """The directory's metadata, checked: every file against SHA256SUMS, then the
  metadata's keys; a missing, malformed or damaged import is one BadInput."""
  path = os.path.join(directory, META)
  if not os.path.isdir(directory):
    raise BadInput(f"{directory}: no such directory")
  if not os.path.exists(path):
    raise BadInput(f"{directory}: no {META}; not a directory written by import_pairs")
  bad = files.damaged_checksums(directory)
  if bad is None:
    logging.getLogger("alignment").warning(
        "%s: imported before imports carried checksums: read unverified (import it again "
        "to have it checked)", directory)
  elif bad:
    from alignment.data import tfrecords  # pylint: disable=g-import-not-at-top
    where = tfrecords.damaged_record(bad[0]) if bad[0].endswith(".tfrecord") else ""
    raise BadInput(f"{bad[0]}: missing or contents do not match {files.CHECKSUMS}{where}: "
                   "the file was truncated or altered; import the pairs again")
  try:
    with open(path) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise BadInput(f"{path}: unreadable ({e})") from None
  missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
  if missing:
    raise BadInput(f"{path}: malformed, no {', '.join(missing)}; import the file again")
  if not os.path.exists(os.path.join(directory, RECORDS)):
    raise BadInput(f"{directory}: no {RECORDS}; import the file again")
  return meta


def register_imported(directory: str, name: str | None = None) -> str:
  """Registers <name> (pairs) and <name>_prompts as seqio tasks; returns <name>."""
  import seqio  # pylint: disable=g-import-not-at-top
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from alignment.data.tf_setup import tf  # pylint: disable=g-import-not-at-top
  meta = read_metadata(directory)
  what = "name" if name else f"{directory}/metadata.json: name"
  name = name or meta["name"]
  try:  # a metadata.json from elsewhere names the task too
    files_lib.check_name(name, what)
  except files_lib.BadName as e:
    raise BadInput(str(e)) from None
  spec = {k: tf.io.RaggedFeature(tf.int64) for k in ("prompt", "chosen", "rejected")}
  spec.update({"id": tf.io.FixedLenFeature([], tf.string),
               "line": tf.io.FixedLenFeature([], tf.int64)})
  counts = meta.get("splits") or {"train": meta["num_records"]}
  files = {split: os.path.join(directory, split_file(split)) for split in counts}
  if "validation" in counts and "eval" not in counts:  # win-rate prompts: the held-out ones
    files["eval"], counts = files["validation"], {**counts, "eval": counts["validation"]}
  source = seqio.TFExampleDataSource(files, spec, num_input_examples=counts, cycle_length=1)

  def to_int32(ds):
    return ds.map(lambda ex: {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 and k != "line"
                              else v for k, v in ex.items()})

  def prompts_only(ds):
    return ds.map(lambda ex: {"prompt": ex["prompt"]})

  def chosen_as_response(ds):  # the SFT view: the rater-preferred response (EOS included)
    return ds.map(lambda ex: {"prompt": ex["prompt"], "response": ex["chosen"]})

  try:
    vocab = vocab_lib.get_vocabulary(meta["vocab"])
  except (ValueError, OSError) as e:
    raise BadInput(f"{directory}: its vocabulary: {e}") from None
  # seqio directly, not tasks' helpers: tasks.resolve registers imports through this.
  features = lambda names: {n: seqio.Feature(vocab, add_eos=False, dtype=tf.int32)
                            for n in names}
  for task, preprocessors, names in ((name, [to_int32], ("prompt", "chosen", "rejected")),
                                     (name + "_prompts", [to_int32, prompts_only], ("prompt",)),
                                     (name + "_sft", [to_int32, chosen_as_response],
                                      ("prompt", "response"))):
    if task in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(task)
    seqio.TaskRegistry.add(task, source=source, preprocessors=preprocessors,
                           output_features=features(names))
  return name


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m alignment.data.import_pairs",
      description="Import a preference file as a seqio task (see the module docstring).")
  parser.add_argument("--input", required=True, help="JSONL, a .parquet file or a directory "
                      "of .parquet shards")
  parser.add_argument("--format", required=True, help="jsonl | tldr | hh | chat")
  parser.add_argument("--output", required=True)
  parser.add_argument("--vocab", default="byte")
  parser.add_argument("--max_prompt_tokens", type=int, default=512)
  parser.add_argument("--max_response_tokens", type=int, default=128)
  parser.add_argument("--on_long", default="error", help="error | truncate")
  parser.add_argument("--name", default=None)
  parser.add_argument("--overwrite", action="store_true")
  parser.add_argument("--validation_fraction", type=float, default=0.0)
  parser.add_argument("--eval_fraction", type=float, default=0.0)
  args = parser.parse_args(argv)
  try:
    meta = import_file(args.input, args.format, args.output, vocab=args.vocab,
                       max_prompt_tokens=args.max_prompt_tokens,
                       max_response_tokens=args.max_response_tokens, on_long=args.on_long,
                       name=args.name, overwrite=args.overwrite,
                       validation_fraction=args.validation_fraction,
                       eval_fraction=args.eval_fraction)
  except BadInput as e:
    print(f"import_pairs: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    print(f"import_pairs: error: no space left on device (writing {e.filename}): nothing "
          f"was imported{' and ' + args.output + ' is as it was' if args.overwrite else ''}; "
          "free space and run it again", file=sys.stderr)
    return 2
  print(f"imported {meta['num_records']} pairs from {args.input} into {args.output} "
        f"(task {meta['name']}; splits {meta['splits']}; truncated {meta['truncated']})")
  return 0


if __name__ == "__main__":
  sys.exit(main())

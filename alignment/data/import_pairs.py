"""`python -m alignment.data.import_pairs`: a user's preference file -> a seqio task.

  python -m alignment.data.import_pairs --input=FILE --format=FMT --output=DIR \\
      [--vocab=byte|sentencepiece|SP_MODEL|TOKENIZER_JSON] [--max_prompt_tokens=N] \\
      [--max_response_tokens=N] [--on_long=error|truncate] [--name=NAME] [--overwrite] \\
      [--validation_fraction=F] [--eval_fraction=F]

Formats (one JSON object per line; blank lines are skipped):
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
Where records carry an "id", ids must be unique.

Lengths are counted in tokens of --vocab (default "byte": it reads any text;
"sentencepiece" is the environment's word vocabulary, where real words are
UNK; pass T5's or another SentencePiece model file, or a Hugging Face
tokenizer.json such as Llama 3's (or the model directory holding it), for
real text). Responses get the vocabulary's EOS (a tokenizer.json's own) and
must fit --max_response_tokens with it. A record over a limit is
an error with --on_long=error (the default) or is cut with --on_long=truncate:
prompts keep their LAST tokens (the text nearest the response), responses
their FIRST tokens (without EOS, as batches.py allows for cut responses).

Held-out splits: --validation_fraction=F puts about F of the records in a
"validation" split (what SFT's and the PM's held-out losses and a study's
held-out pairs read), --eval_fraction=F about F in an "eval" split (a study's
win-rate prompts; with 0 the eval split is the validation records). A record's
split is fixed by a hash of its PROMPT text (sha256), so it does not depend on
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

Bad input ends with one line naming the file, the line and the field, and
exit status 2 (no traceback): a missing or mistyped field, empty text,
invalid UTF-8 or JSON, a record over the length limit, a duplicated id, an
unknown format.
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

FORMATS = ("jsonl", "tldr", "hh")
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
  __slots__ = ("line", "id", "prompt", "chosen", "rejected")

  def __init__(self, line, id_, prompt, chosen, rejected):
    self.line, self.id, self.prompt, self.chosen, self.rejected = (line, id_, prompt, chosen,
                                                                  rejected)


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


_PARSERS = {"jsonl": _from_jsonl, "tldr": _from_tldr, "hh": _from_hh}


def read_records(path: str, fmt: str) -> Iterator[_Record]:
  """Parses and checks every record of the file (texts only; lengths come later)."""
  if fmt not in FORMATS:
    raise BadInput(f"unknown --format {fmt!r}: use one of {', '.join(FORMATS)}")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise BadInput(f"{path}: cannot read: {e.strerror}") from None
  seen_ids: dict[str, int] = {}
  count = 0
  for number, raw in enumerate(data.split(b"\n"), start=1):
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
    if not isinstance(obj, dict):
      raise BadInput(f"{where}: expected a JSON object, got {type(obj).__name__}")
    prompt, chosen, rejected = _PARSERS[fmt](obj, where)
    id_ = None
    if fmt != "tldr" and "id" in obj:
      if isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int)):
        raise BadInput(f'{where}: field "id": expected text or an integer, got '
                       f'{type(obj["id"]).__name__}')
      id_ = str(obj["id"])
      _check_encodable(id_, where, "id")
      if id_ in seen_ids:
        raise BadInput(f'{where}: field "id": {_short(id_)} duplicates line {seen_ids[id_]}')
      seen_ids[id_] = number
    count += 1
    yield _Record(number, id_, prompt, chosen, rejected)
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


def _assign_splits(records: list[_Record], input_path: str, validation_fraction: float,
                   eval_fraction: float) -> tuple[dict[int, str], list[str], dict[str, int]]:
  """({line: split}, the splits asked for, records per split); a split asked for
  that no record fell in is an error (its task would have nothing to read)."""
  splits = {r.line: split_of(r.prompt, validation_fraction, eval_fraction) for r in records}
  names = ["train"] + (["validation"] if validation_fraction else []) + (
      ["eval"] if eval_fraction else [])
  counts = {n: sum(v == n for v in splits.values()) for n in names}
  empty = [n for n in names if not counts[n]]
  if empty:
    raise BadInput(f"{input_path}: no record fell in the {' and '.join(empty)} split (split "
                   f"by a hash of the prompt; {len(records)} records): change the fractions")
  return splits, names, counts


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


def _write_splits(tmp: str, records: list[_Record], ids: list, splits: dict[int, str],
                  names: list[str], vocabulary, input_path: str, *, max_prompt_tokens: int,
                  max_response_tokens: int, on_long: str) -> dict[str, int]:
  """Each record, fitted to the limits, into its split's file; returns how many
  of each field were cut (with --on_long=truncate; over a limit is an error otherwise)."""
  from alignment.data.tf_setup import tf  # pylint: disable=g-import-not-at-top
  truncated = {"prompt": 0, "chosen": 0, "rejected": 0}
  writers = {n: tf.io.TFRecordWriter(os.path.join(tmp, split_file(n))) for n in names}
  with contextlib.ExitStack() as stack:
    for w in writers.values():
      stack.enter_context(w)
    for i, r in enumerate(records):
      where = f"{input_path}:{r.line}"
      p, c, j = ids[3 * i:3 * i + 3]
      p = _fit(list(p), max_prompt_tokens, "prompt", where, on_long, "last", truncated)
      c = _fit(list(c) + [vocabulary.eos_id], max_response_tokens, "chosen", where, on_long,
               "first", truncated)
      j = _fit(list(j) + [vocabulary.eos_id], max_response_tokens, "rejected", where, on_long,
               "first", truncated)
      writers[splits[r.line]].write(_example(r, p, c, j))
  return truncated


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
  output_dir = os.path.abspath(output_dir)
  if os.path.exists(output_dir) and not overwrite:
    raise BadInput(f"{output_dir}: exists already (pass --overwrite to replace it)")
  try:
    vocabulary = vocab_lib.get_vocabulary(vocab)
  except (ValueError, OSError) as e:
    raise BadInput(f"--vocab={vocab}: {e}") from None
  records = list(read_records(input_path, fmt))
  texts = [t for r in records for t in (r.prompt, r.chosen, r.rejected)]
  ids = vocab_lib.encode_batch(vocabulary, texts)
  splits, names, counts = _assign_splits(records, input_path, validation_fraction,
                                         eval_fraction)
  tmp = _temp_dir_beside(output_dir)  # after every check that needs no file written
  try:
    truncated = _write_splits(tmp, records, ids, splits, names, vocabulary, input_path,
                              max_prompt_tokens=max_prompt_tokens,
                              max_response_tokens=max_response_tokens, on_long=on_long)
    meta = {
        "format_version": 1, "source": os.path.abspath(input_path), "source_format": fmt,
        "num_records": len(records), "vocab": vocab_lib.vocabulary_name(vocabulary),
        "max_prompt_tokens": max_prompt_tokens, "max_response_tokens": max_response_tokens,
        "on_long": on_long, "truncated": truncated,
        "name": name or default_name(output_dir),
        "splits": counts, "validation_fraction": validation_fraction,
        "eval_fraction": eval_fraction,
    }
    with open(os.path.join(tmp, META), "w") as f:
      json.dump(meta, f, indent=1, sort_keys=True)
    files.write_checksums(tmp, [RECORDS, META])
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
    where = tfrecords.damaged_record(bad[0]) if bad[0].endswith(RECORDS) else ""
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
  name = name or meta["name"]
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
  parser.add_argument("--input", required=True)
  parser.add_argument("--format", required=True, help="jsonl | tldr | hh")
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

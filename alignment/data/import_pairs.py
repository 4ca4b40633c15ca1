"""`python -m alignment.data.import_pairs`: a user's preference file -> a seqio task.

  python -m alignment.data.import_pairs --input=FILE|DIR --format=FMT --output=DIR \\
      [--vocab=byte|sentencepiece|SP_MODEL|TOKENIZER_JSON|MODEL_DIR] [--max_prompt_tokens=N] \\
      [--max_response_tokens=N] [--on_long=error|truncate] [--name=NAME] [--overwrite] \\
      [--validation_fraction=F] [--eval_fraction=F]

Input: JSON Lines (one JSON object per line; blank lines are skipped), or
Parquet: a FILE ending in .parquet or a DIR of *.parquet shards (read in
sorted order; not its subdirectories), read `pair_records.PARQUET_BATCH` rows at a time and
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
from typing import Iterator, Sequence

from alignment import faults, files
from alignment import files as files_lib  # register_imported has a local `files`
from alignment.data.pair_records import FORMATS, BadInput, Record, read_records  # noqa: F401 (re-exported)

CHUNK = 512  # records tokenized together (batched encoding), then written
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


def _example(record: Record, prompt: list[int], chosen: list[int], rejected: list[int]) -> bytes:
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


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
  chunk = []
  for r in records:
    chunk.append(r)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _token_ids(chunk: list[Record], vocabulary, template, *, max_prompt_tokens: int,
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


def _write_splits(tmp: str, records: Iterator[Record], vocabulary, template, *,
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

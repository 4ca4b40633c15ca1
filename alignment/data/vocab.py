"""Vocabularies: the environment's SentencePiece model (shipped), seqio bytes,
a SentencePiece model file or a Hugging Face tokenizer.json.

`get_vocabulary(name)` returns a seqio vocabulary with the package's token
conventions (PAD_ID 0, EOS_ID 1, UNK 2; no BOS, no extra ids):
  "sentencepiece"  alignment/data/assets/env.model, a word-level SentencePiece
                   model trained on the synthetic corpus: one piece per word of
                   `alignment.data.language` (SP_VOCAB_SIZE = 165 ids with the
                   specials), so token counts are word counts and tiny models
                   spend few parameters on embeddings. A word outside the
                   language encodes as UNK (a unigram or BPE model of this
                   corpus splits even frequent words, and byte fallback would
                   add 256 ids): for other text use "byte" or a model path;
  "byte"           seqio.ByteVocabulary: UTF-8 bytes shifted by 3 (259 ids);
  a path           any SentencePiece model file (e.g. T5's, for imported data);
  a .json path     a Hugging Face tokenizer.json (or a directory holding one,
                   e.g. a Llama 3 model's): `hf_vocab.HuggingFaceVocabulary`,
                   whose pad/eos/unk ids are the tokenizer's own.
A name is also what `vocabulary_name` writes into metadata and checkpoints
(paths made absolute), so a task records the vocabulary it was made with.

The shipped model is produced by `python -m alignment.data.vocab --build`,
deterministically (one training thread, fixed corpus); `--check` rebuilds it
in memory and compares bytes, and the tests do the same. Rebuild after any
change to the language.
"""
from __future__ import annotations

import argparse
import functools
import io
import os
import sys
from typing import Sequence

import numpy as np

from alignment import files
from alignment.data import batches
from alignment.data import language as lang

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
SP_MODEL_PATH = os.path.join(ASSETS, "env.model")
# Three specials, then one piece per word of the language.
SP_VOCAB_SIZE = 3 + len(lang.all_words())
UNK_ID = 2
NAMES = ("sentencepiece", "byte")


def training_corpus(num_examples: int = 4000) -> list[str]:
  """The text the model is trained on: every word once, then posts and digests.

  The posts are written in the environment's version-1.1 style (sentences,
  interleaved, up to 64 tokens), pinned here: the corpus only sets the pieces'
  frequencies and so their ids, and the shipped model (built from this corpus)
  keeps the ids every result so far was measured with, whatever the
  environment's defaults become.
  """
  from alignment.data import environment  # pylint: disable=g-import-not-at-top
  lines = [" ".join(lang.all_words())]
  env = environment.Environment(environment.EnvConfig(
      seed=1234, post_style="sentences", interleave_prob=1.0, max_prompt_tokens=64))
  for ex in env.examples("train", num_examples):
    lines += [ex["prompt"], ex["response_a"], ex["response_b"]]
  return lines


def build_sentencepiece(vocab_size: int = SP_VOCAB_SIZE) -> bytes:
  """Trains the environment's SentencePiece model; returns the serialised model."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(training_corpus()), model_writer=out,
      model_type="word", vocab_size=vocab_size, character_coverage=1.0,
      pad_id=batches.PAD_ID, eos_id=batches.EOS_ID, unk_id=UNK_ID, bos_id=-1,
      normalization_rule_name="nmt_nfkc", num_threads=1, shuffle_input_sentence=False,
      input_sentence_size=0, minloglevel=2)
  return out.getvalue()


def tokenizer_json(name: str) -> str | None:
  """The tokenizer.json a vocabulary name points at (the file or its directory), or None."""
  if name.endswith(".json"):
    return name
  if os.path.isdir(name) and os.path.exists(os.path.join(name, "tokenizer.json")):
    return os.path.join(name, "tokenizer.json")
  return None


@functools.lru_cache(maxsize=None)
def get_vocabulary(name: str = "sentencepiece"):
  """A seqio vocabulary by name ("sentencepiece", "byte"), SentencePiece model path or
  Hugging Face tokenizer.json path (module docstring)."""
  import seqio  # pylint: disable=g-import-not-at-top
  if name == "byte":
    return seqio.ByteVocabulary()
  hf_path = tokenizer_json(name)
  if hf_path is not None:
    if not os.path.exists(hf_path):
      raise ValueError(f"unknown vocabulary {name!r}: no such tokenizer.json")
    from alignment.data import hf_vocab  # pylint: disable=g-import-not-at-top
    return hf_vocab.HuggingFaceVocabulary(hf_path)
  path = SP_MODEL_PATH if name == "sentencepiece" else name
  if not os.path.exists(path):
    raise ValueError(f"unknown vocabulary {name!r}: use one of {NAMES}, a SentencePiece "
                     f"model file or a tokenizer.json" + (" (run `python -m alignment.data.vocab --build`)"
                                      if name == "sentencepiece" else ""))
  vocab = seqio.SentencePieceVocabulary(path, extra_ids=0)
  if (vocab.pad_id, vocab.eos_id, vocab.unk_id) != (batches.PAD_ID, batches.EOS_ID, UNK_ID):
    raise ValueError(f"{path}: pad/eos/unk ids are {vocab.pad_id}/{vocab.eos_id}/"
                     f"{vocab.unk_id}; the package needs 0/1/2")
  return vocab


def _is_hf(vocab) -> bool:
  from alignment.data import hf_vocab  # pylint: disable=g-import-not-at-top
  return isinstance(vocab, hf_vocab.HuggingFaceVocabulary)


def vocabulary_name(vocab) -> str:
  """Inverse of get_vocabulary, for metadata: "byte", "sentencepiece" or the model's
  (or tokenizer.json's) absolute path."""
  import seqio  # pylint: disable=g-import-not-at-top
  if isinstance(vocab, seqio.ByteVocabulary):
    return "byte"
  if _is_hf(vocab):
    return vocab.path
  path = os.path.abspath(vocab.sentencepiece_model_file)
  return "sentencepiece" if path == os.path.abspath(SP_MODEL_PATH) else path


def stop_ids(vocab) -> tuple[int, ...]:
  """Where a response of this vocabulary ends: its EOS, then its chat template's
  end-of-turn id where that is another token (`chat.end_of_turn_ids`: Gemma's
  <end_of_turn> beside <eos>; Llama 3 Instruct's <|eot_id|> is its EOS)."""
  eos = int(vocab.eos_id)
  if not _is_hf(vocab):
    return (eos,)
  from alignment.data import chat  # pylint: disable=g-import-not-at-top
  return (eos,) + tuple(i for i in chat.end_of_turn_ids(vocab) if i != eos)


def token_record(vocab) -> dict:
  """What an export keeps of its data's vocabulary (written as vocabulary.json beside
  the parameters; `alignment.models.export` puts the ids in the Hugging Face config
  and copies the tokenizer): its name and special ids, None where it has none. The
  EOS is a list where the vocabulary's responses end at more than one id (`stop_ids`:
  [EOS, end-of-turn]), so the export's generation_config.json stops there too."""
  hf = _is_hf(vocab)
  stops = stop_ids(vocab)
  return {"vocabulary": vocabulary_name(vocab), "vocab_size": int(vocab.vocab_size),
          "eos_token_id": stops[0] if len(stops) == 1 else list(stops),
          "pad_token_id": int(vocab.pad_id) if not hf or vocab.has_pad else None,
          "bos_token_id": vocab.bos_id if hf else None}


def encode_batch(vocab, texts: Sequence[str]) -> list[list[int]]:
  """Token ids of many texts at once (no EOS added)."""
  import seqio  # pylint: disable=g-import-not-at-top
  if isinstance(vocab, seqio.ByteVocabulary):
    return [[b + 3 for b in t.encode("utf-8")] for t in texts]
  if _is_hf(vocab):
    return vocab.encode_batch(texts)
  return vocab.tokenizer.encode(list(texts))


def decode_batch(vocab, rows: Sequence[Sequence[int]]) -> list[str]:
  """Texts of many id rows (no specials in them); out-of-vocabulary ids decode as UNK."""
  import seqio  # pylint: disable=g-import-not-at-top
  size = vocab.vocab_size
  if isinstance(vocab, seqio.ByteVocabulary):
    return [bytes(i - 3 if 3 <= i < 259 else 63 for i in r).decode("utf-8", "replace")
            for r in rows]
  if _is_hf(vocab):
    return vocab.decode_batch(rows)
  clean = [[int(i) if 0 <= i < size else UNK_ID for i in r] for r in rows]
  return vocab.tokenizer.decode(clean)


def cut_at_eos(ids_bl: np.ndarray, eos_id: int | tuple[int, ...] = batches.EOS_ID,
               pad_id: int | None = batches.PAD_ID) -> tuple[list[list[int]], np.ndarray]:
  """Rows up to (not incl.) the first EOS or PAD; and whether each row had an EOS there.

  A response that reaches its end, or a PAD, without an EOS is truncated. The ids
  are the vocabulary's (`sampling_ids`: eos_id a tuple where several ids end a
  response); pad_id None: the vocabulary has no PAD.
  """
  ids_bl = np.asarray(ids_bl)
  eos = np.asarray(eos_id if isinstance(eos_id, tuple) else (eos_id,))
  is_eos = np.isin(ids_bl, eos)
  stop = is_eos.copy()
  if pad_id is not None:
    stop |= ids_bl == pad_id
  has_stop = stop.any(axis=1)
  first = np.where(has_stop, stop.argmax(axis=1), ids_bl.shape[1])
  ended = has_stop & is_eos[np.arange(len(ids_bl)), np.minimum(first, ids_bl.shape[1] - 1)]
  return [r[:n].tolist() for r, n in zip(ids_bl, first)], ended


def strip_left_padding(ids_bl: np.ndarray, mask_bl: np.ndarray | None = None) -> list[list[int]]:
  ids_bl = np.asarray(ids_bl)
  keep = (ids_bl != batches.PAD_ID) if mask_bl is None else np.asarray(mask_bl).astype(bool)
  return [r[k].tolist() for r, k in zip(ids_bl, keep)]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description="Build or check the shipped SentencePiece model.")
  group = parser.add_mutually_exclusive_group(required=True)
  group.add_argument("--build", action="store_true", help=f"write {SP_MODEL_PATH}")
  group.add_argument("--check", action="store_true", help="exit 1 if the shipped model is stale")
  args = parser.parse_args(argv)
  model = build_sentencepiece()
  if args.build:
    os.makedirs(ASSETS, exist_ok=True)
    files.write_bytes(SP_MODEL_PATH, model)
    print(f"wrote {SP_MODEL_PATH} ({len(model)} bytes)")
    return 0
  with open(SP_MODEL_PATH, "rb") as f:
    same = f.read() == model
  print("shipped model is up to date" if same else "shipped model is STALE: run --build")
  return 0 if same else 1


if __name__ == "__main__":
  sys.exit(main())


def model_vocab_size(vocab, multiple: int = 128) -> int:
  """The vocabulary rounded up, so the embedding splits evenly over `tensor`."""
  return -(-vocab.vocab_size // multiple) * multiple


def check_model_vocab(model_ids: int, vocab, where: str) -> None:
  """Refuses a model whose embedding has fewer ids than the data's vocabulary.

  Such a model would index past its embedding table (XLA clamps gathers, so it
  would train on the wrong rows without a word).
  """
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  if model_ids < vocab.vocab_size:
    raise config_lib.ConfigError(
        f"{where}: the model has {model_ids} token ids, fewer than the "
        f"{vocab.vocab_size} of its data's vocabulary {vocabulary_name(vocab)}; set "
        f"config.model.vocab_size=0 (the data's) or at least {vocab.vocab_size}")


def sampling_ids(vocab) -> dict:
  """The sampler's stop and never-drawn ids of a vocabulary (`SamplingConfig`'s
  eos_id, pad_id): its EOS (a tuple with its chat template's end-of-turn id where
  that is another token: `stop_ids`), and its padding token unless it has none
  (Llama 3) or it is a stop id itself (tokenizers that pad with EOS)."""
  record = token_record(vocab)
  eos, pad = record["eos_token_id"], record["pad_token_id"]
  stops = tuple(eos) if isinstance(eos, list) else (eos,)
  return {"eos_id": stops if len(stops) > 1 else eos,
          "pad_id": None if pad in stops else pad}

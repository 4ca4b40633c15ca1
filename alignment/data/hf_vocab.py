"""A seqio vocabulary backed by a Hugging Face `tokenizer.json` (e.g. Llama 3's BPE).

`vocab.get_vocabulary("path/to/tokenizer.json")` (or a directory holding one)
returns a `HuggingFaceVocabulary`; its name in metadata and checkpoints is the
file's absolute path. Texts are encoded without special tokens (no BOS, no
EOS: seqio and `import_pairs` append EOS themselves).

Special ids come from the tokenizer, not from the package's conventions:
  eos_id  `eos_token` of the tokenizer_config.json beside the file, else the
          first of EOS_NAMES that is a token of the tokenizer; a tokenizer
          with neither is refused, naming the file;
  pad_id  `pad_token` of tokenizer_config.json, else the tokenizer's padding
          setting, else the first of PAD_NAMES present, else 0 (Llama 3 has no
          pad token; padding is masked everywhere, so its id is never read);
  unk_id  the model's unk token, or None (byte-level BPE has none);
  bos_id  `bos_token` of tokenizer_config.json if it is a token, else None
          (only an export's config.json carries it: texts are encoded
          without BOS).
The loops that sample (online, evaluation, the study's pair sets) stop at
this EOS and never draw this PAD (`vocab.sampling_ids`; a tokenizer without a
PAD, or padding with its EOS, keeps no id out), and an export carries the ids
and the tokenizer out (`vocab.token_record`, `alignment.models.export`).

seqio's tf paths (`encode_tf` on a scalar string, `decode_tf` on [L] or
[B, L] ids) run the same Python tokenizer through `tf.py_function`.

A file that is not a tokenizer.json is refused before `tokenizers` reads it
(`check_tokenizer_json`), in one line naming the file and field (a ValueError,
`validate.ModelFileError`): over `MAX_TOKENIZER_BYTES`, not JSON, not an object,
no `model` object, a model type `tokenizers` does not know, a vocabulary or
added token whose id is not an integer in [0, `validate.CEILINGS["vocab_size"]`),
merges that are not pairs of strings, a section of the wrong type; so is a
tokenizer_config.json beside it that is not a JSON object. What `tokenizers`
still refuses (or panics on) is one line too, and so is a tokenizer that cannot
encode `PROBE` (no piece for a character and no unk token). Ids need not be dense: the
vocabulary's size is one past its largest id, so the model's embedding holds
every id the tokenizer can give.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import seqio

from alignment.data.tf_setup import tf

# The largest tokenizer.json read (checked before parsing, which can take many times
# the file's size): twice Gemma 3's 33 MB, the largest released one we know of.
MAX_TOKENIZER_BYTES = 64 * 2 ** 20
MODEL_TYPES = ("BPE", "WordPiece", "WordLevel", "Unigram")
_SECTIONS = ("normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation",
             "padding")

EOS_NAMES = ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|eot_id|>", "<|im_end|>")
PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>")
CONFIG = "tokenizer_config.json"
# Encoded once on loading: letters, digits, accents, CJK, an emoji and a control
# character, which any usable tokenizer encodes (with its unk token if need be).
PROBE = "Aa 09 é 中 🙂 \x00"


def _token_name(value) -> str | None:
  """A tokenizer_config.json special token: a string or an AddedToken dict."""
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) and value else None


def _token_id(value, where: str, field: str) -> int:
  from alignment.models import validate  # pylint: disable=g-import-not-at-top
  top = validate.CEILINGS["vocab_size"]
  if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < top:
    raise validate.refuse(where, field, f"id {validate.show(value)} is not an integer in "
                          f"[0, {top}) (alignment.models.validate.CEILINGS['vocab_size'])")
  return value


def check_tokenizer_json(path: str) -> dict:
  """The parsed tokenizer.json at `path` if it has the shape `tokenizers` reads (module
  docstring), else `validate.ModelFileError` (a ValueError): `<file>: <field>: <why>`."""
  from alignment.models import validate  # pylint: disable=g-import-not-at-top
  tok = validate.read_json(path, MAX_TOKENIZER_BYTES,
                           "alignment.data.hf_vocab.MAX_TOKENIZER_BYTES")
  for section in _SECTIONS:
    if tok.get(section) is not None and not isinstance(tok[section], dict):
      raise validate.refuse(path, section, f"{validate.show(tok[section])} is not an object")
  model = tok.get("model")
  if not isinstance(model, dict):
    raise validate.refuse(path, "model", "missing" if model is None else
                          f"{validate.show(model)} is not an object")
  kind = model.get("type")
  if kind is not None and kind not in MODEL_TYPES:
    raise validate.refuse(path, "model.type", f"{validate.show(kind)} is not one of "
                          f"{', '.join(MODEL_TYPES)}")
  vocab = model.get("vocab")
  top = validate.CEILINGS["vocab_size"]
  if isinstance(vocab, list) and kind in (None, "Unigram"):
    if len(vocab) > top:
      raise validate.refuse(path, "model.vocab", f"{len(vocab)} pieces, more than {top}")
    for i, piece in enumerate(vocab):
      if (not isinstance(piece, list) or len(piece) != 2 or not isinstance(piece[0], str)
          or isinstance(piece[1], bool) or not isinstance(piece[1], (int, float))):
        raise validate.refuse(path, f"model.vocab[{i}]", f"{validate.show(piece)} is not a "
                              "[piece, score] pair")
  elif isinstance(vocab, dict):
    for token, token_id in vocab.items():
      _token_id(token_id, path, f"model.vocab[{validate.show(token, 40)}]")
  else:
    raise validate.refuse(path, "model.vocab", "missing" if vocab is None else
                          f"{validate.show(vocab)} is not a vocabulary of model type "
                          f"{validate.show(kind)}")
  merges = model.get("merges")
  if merges is not None and (not isinstance(merges, list) or not all(
      isinstance(m, str) or (isinstance(m, list) and len(m) == 2
                             and all(isinstance(x, str) for x in m)) for m in merges)):
    raise validate.refuse(path, "model.merges", "not a list of merges (strings \"a b\" or "
                          "pairs [\"a\", \"b\"])")
  added = tok.get("added_tokens")
  if added is not None and not isinstance(added, list):
    raise validate.refuse(path, "added_tokens", f"{validate.show(added)} is not a list")
  for i, token in enumerate(added or ()):
    if not isinstance(token, dict) or not isinstance(token.get("content"), str):
      raise validate.refuse(path, f"added_tokens[{i}]", f"{validate.show(token)} is not a "
                            "token (an object with a string content)")
    _token_id(token.get("id"), path, f"added_tokens[{i}]")
  return tok


def _from_file(path: str):
  """`tokenizers.Tokenizer.from_file`, its errors (a Rust panic too) as one line."""
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  from alignment.models import validate  # pylint: disable=g-import-not-at-top
  try:
    return Tokenizer.from_file(path)
  except (KeyboardInterrupt, SystemExit):
    raise
  except BaseException as e:  # pylint: disable=broad-except  (a pyo3 PanicException too)
    raise validate.ModelFileError(f"{path}: not a Hugging Face tokenizer.json "
                                  f"({validate.one_line(e)})") from None


class HuggingFaceVocabulary(seqio.Vocabulary):
  """seqio.Vocabulary over `tokenizers.Tokenizer.from_file(path)` (module docstring)."""

  def __init__(self, path: str):
    from alignment.models import validate  # pylint: disable=g-import-not-at-top
    super().__init__(extra_ids=0)
    self.path = os.path.abspath(path)
    check_tokenizer_json(self.path)
    self.tokenizer = _from_file(self.path)
    self.encode_batch([PROBE])  # a Unigram without unk_id, a WordLevel without [UNK]: refused
    # One past the largest id: ids need not be dense (module docstring).
    self._size = max([self.tokenizer.get_vocab_size(with_added_tokens=True) - 1,
                      *self.tokenizer.get_vocab(with_added_tokens=True).values()]) + 1
    config = {}
    config_path = os.path.join(os.path.dirname(self.path), CONFIG)
    if os.path.exists(config_path):
      config = validate.read_json(config_path)
    self.config = config  # the tokenizer_config.json beside it ({} if none)
    self._eos_id = self._special(config.get("eos_token"), EOS_NAMES, "eos_token")
    if self._eos_id is None:
      raise ValueError(f"{self.path}: the tokenizer has no EOS token (no eos_token in a "
                       f"{CONFIG} beside it, none of {', '.join(EOS_NAMES)} in its vocabulary)")
    pad = self._special(config.get("pad_token"), (), "pad_token")
    if pad is None and self.tokenizer.padding:
      pad = self.tokenizer.padding.get("pad_id")
      if pad is not None and not 0 <= pad < self._size:
        raise validate.refuse(self.path, "padding.pad_id", f"{pad} is past the tokenizer's "
                              f"{self._size} ids")
    if pad is None:
      pad = self._special(None, PAD_NAMES, "pad_token")
    self.has_pad = pad is not None
    self._pad_id = 0 if pad is None else int(pad)
    bos = _token_name(config.get("bos_token"))  # only an export reads it: never refused
    self._bos_id = None if bos is None else self.tokenizer.token_to_id(bos)
    unk = getattr(self.tokenizer.model, "unk_token", None)
    self._unk_id = self.tokenizer.token_to_id(unk) if unk else None

  def _special(self, configured, names: Sequence[str], key: str) -> int | None:
    name = _token_name(configured)
    if name is not None:
      token_id = self.tokenizer.token_to_id(name)
      if token_id is None:
        raise ValueError(f"{self.path}: {CONFIG} names {key} {name[:80]!r}, which is not a "
                         "token of the tokenizer")
      return token_id
    for candidate in names:
      token_id = self.tokenizer.token_to_id(candidate)
      if token_id is not None:
        return token_id
    return None

  @property
  def eos_id(self) -> int:
    return self._eos_id

  @property
  def bos_id(self) -> int | None:
    return self._bos_id

  @property
  def pad_id(self) -> int:
    return self._pad_id

  @property
  def unk_id(self) -> int | None:
    return self._unk_id

  @property
  def _base_vocab_size(self) -> int:
    return self._size

  # -- Python ------------------------------------------------------------------

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of texts; a tokenizer that cannot encode one (a character it has no
    piece for and no unk token) is a ValueError naming the file."""
    try:
      encoded = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    except (KeyboardInterrupt, SystemExit):
      raise
    except BaseException as e:  # pylint: disable=broad-except  (a pyo3 PanicException too)
      from alignment.models import validate  # pylint: disable=g-import-not-at-top
      raise validate.ModelFileError(f"{self.path}: cannot encode text "
                                    f"({validate.one_line(e)})") from None
    return [e.ids for e in encoded]

  def decode_batch(self, rows: Sequence[Sequence[int]]) -> list[str]:
    """Texts of id rows; special tokens are dropped, ids outside the vocabulary too
    (or read as UNK where the tokenizer has one)."""
    size = self._base_vocab_size
    clean = []
    for row in rows:
      ids = [int(i) for i in row]
      clean.append([i if 0 <= i < size else self._unk_id for i in ids
                    if 0 <= i < size or self._unk_id is not None])
    return self.tokenizer.decode_batch(clean, skip_special_tokens=True)

  def _encode(self, s: str) -> list[int]:
    return self.encode_batch([s])[0]

  def _decode(self, ids) -> str:
    return self.decode_batch([ids])[0]

  # -- TensorFlow (seqio's preprocessors and decode_tf) --------------------------

  def _encode_tf(self, s):
    """A scalar string -> int32 [L]."""
    def encode(x):
      return np.asarray(self._encode(x.numpy().decode("utf-8")), np.int32)
    ids = tf.py_function(encode, [s], tf.int32)
    ids.set_shape([None])
    return ids

  def decode_tf(self, ids):
    """[L] -> a scalar string, [B, L] -> [B] strings, each up to its first EOS.

    Overrides seqio's, which replaces the ids after EOS with pad_id before
    decoding: here pad_id may be a real token (0 when the tokenizer has none).
    """
    def decode(x):
      rows = np.atleast_2d(x.numpy())
      texts = []
      for row in rows.tolist():
        if self._eos_id in row:
          row = row[:row.index(self._eos_id)]
        texts.append(self._decode(row).encode("utf-8"))
      return np.asarray(texts if x.shape.rank == 2 else texts[0], dtype=object)
    out = tf.py_function(decode, [ids], tf.string)
    out.set_shape(ids.shape[:-1])
    return out

  def _decode_tf(self, ids):
    return self.decode_tf(ids)

  def __eq__(self, other):
    return isinstance(other, HuggingFaceVocabulary) and self.path == other.path

  def __hash__(self):
    return hash(self.path)

  def __str__(self) -> str:
    return (f"HuggingFaceVocabulary({self.path}, size={self.vocab_size}, eos={self._eos_id}, "
            f"pad={self._pad_id})")

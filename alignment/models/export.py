"""Zoo language model -> Hugging Face directory (config.json, model.safetensors, tokenizer).

    python -m alignment.models.export --params=EXPORT --output=DIR [--dtype=float32]
        [--tokenizer=VOCABULARY]

reads a params export (EXPORT/model_config.json + EXPORT/params, what every
training loop writes to <workdir>/export and `alignment.models.convert`
writes) and writes DIR/config.json, generation_config.json,
model.safetensors and the tokenizer's files, which `transformers` loads with
`from_pretrained` (and `AutoTokenizer.from_pretrained`):

- T5 -> `T5ForConditionalGeneration` (gated-GELU as T5 v1.1 / FLAN-T5, or
  original T5's ReLU; relative-position buckets as configured;
  `tie_word_embeddings: false` for an untied lm_head without the
  d_model**-0.5 scaling, true for v1.0's tied and scaled output);
- decoder -> `LlamaForCausalLM` (default or llama3 RoPE; with q/k/v and
  output biases as `attention_bias`), or `Qwen2ForCausalLM` when only q, k, v
  have biases.

The tensor names and reshapes are `alignment.models.convert`'s table read
backwards (`convert.params_to_hf`), so import and export cannot drift apart.
Token ids and the tokenizer come from, in this order: `--tokenizer` (a
tokenizer.json, a SentencePiece model, "sentencepiece" or "byte"); the
export's vocabulary.json (every loop records its data's vocabulary there, and
`convert` the source's ids and tokenizer.json; `--tokenizer=none` keeps its
ids and writes no tokenizer); else the package's conventions (PAD 0, EOS 1,
no BOS), said on the output line. The ids go into
config.json and generation_config.json (T5's decoder start stays 0: the model
starts every response with it), and the tokenizer is written beside the
weights so that `AutoTokenizer.from_pretrained(DIR)` reads it: a
tokenizer.json with its tokenizer_config.json and the chat template
(chat_template.jinja beside the source's tokenizer.json, or the
"chat_template" of its tokenizer_config.json), and every EOS id of the
record (a list stays a list) in generation_config.json, so that
`apply_chat_template` + `generate` stop where our sampler does; a SentencePiece model as
spiece.model for `T5Tokenizer`; the byte vocabulary as `ByT5Tokenizer`.
An export that cannot be what it says is refused in one line before any
parameter is read: a model_config.json with sizes that are not positive
integers under `validate.CEILINGS` (or other fields of the wrong type), or
one whose shapes disagree with the parameters beside it.
Training checkpoints (<workdir>/checkpoints) are not accepted:
they do not record the model config, only its name; use the run's export.
Only language models export: a preference or reward model's head has no
Hugging Face counterpart here and is refused. The output appears at once,
complete (written beside it, then renamed).
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Optional

import numpy as np

from alignment.data.batches import EOS_ID, PAD_ID
from alignment.models import convert, validate
from alignment.models.decoder import DecoderConfig
from alignment.models.t5 import T5Config


class ExportError(ValueError):
  pass


PACKAGE_TOKENS = {"vocabulary": None, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID,
                  "bos_token_id": None}
TOKEN_KEYS = ("eos_token_id", "pad_token_id", "bos_token_id")


def t5_config_to_hf(cfg: T5Config) -> dict[str, Any]:
  return {
      "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
      "vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "d_kv": cfg.head_dim,
      "d_ff": cfg.d_ff, "num_heads": cfg.num_heads, "num_layers": cfg.num_encoder_layers,
      "num_decoder_layers": cfg.num_decoder_layers,
      "relative_attention_num_buckets": cfg.relative_buckets,
      "relative_attention_max_distance": cfg.relative_max_distance,
      "layer_norm_epsilon": cfg.norm_eps, "feed_forward_proj": cfg.feed_forward,
      "dense_act_fn": convert.T5_FEED_FORWARD[cfg.feed_forward][0],
      "is_gated_act": convert.T5_FEED_FORWARD[cfg.feed_forward][1],
      # false: untied lm_head, no d_model**-0.5 (v1.1); true: tied and scaled (v1.0).
      "tie_word_embeddings": cfg.tie_embeddings, "is_encoder_decoder": True,
      "dropout_rate": 0.0, "decoder_start_token_id": PAD_ID, "pad_token_id": PAD_ID,
      "eos_token_id": EOS_ID}


def decoder_config_to_hf(cfg: DecoderConfig) -> dict[str, Any]:
  if cfg.out_bias and not cfg.qkv_bias:
    raise ExportError("out_bias without qkv_bias has no Hugging Face architecture "
                      "(Llama's attention_bias puts biases on q, k, v and o)")
  qwen2 = cfg.qkv_bias and not cfg.out_bias
  rope: dict[str, Any] = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
  max_positions = 8192  # not part of the zoo's config; RoPE has no hard limit
  if cfg.rope_type == "llama3":
    rope.update(factor=cfg.rope_factor, low_freq_factor=cfg.rope_low_freq_factor,
                high_freq_factor=cfg.rope_high_freq_factor,
                original_max_position_embeddings=cfg.rope_original_max_positions)
    max_positions = int(cfg.rope_original_max_positions * cfg.rope_factor)
  out = {
      "architectures": ["Qwen2ForCausalLM" if qwen2 else "LlamaForCausalLM"],
      "model_type": "qwen2" if qwen2 else "llama",
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
      "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim, "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps,
      "tie_word_embeddings": cfg.tie_embeddings, "rope_parameters": rope,
      "max_position_embeddings": max_positions, "attention_dropout": 0.0,
      "bos_token_id": None, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
  if qwen2:
    out.update(use_sliding_window=False, sliding_window=None)
  else:
    out.update(attention_bias=cfg.out_bias, mlp_bias=False)
  return out


def config_to_hf(cfg, tokens: Optional[dict] = None) -> dict[str, Any]:
  """The Hugging Face config.json of a zoo config, with `tokens`' special ids
  (`resolve_tokens`; default: the package's PAD 0 / EOS 1)."""
  if isinstance(cfg, T5Config):
    out = t5_config_to_hf(cfg)
  elif isinstance(cfg, DecoderConfig):
    out = decoder_config_to_hf(cfg)
  else:
    raise ExportError(f"no Hugging Face architecture for {type(cfg).__name__}")
  out.update({k: (tokens or PACKAGE_TOKENS).get(k) for k in TOKEN_KEYS})
  if isinstance(cfg, T5Config) and out["pad_token_id"] is None:
    out["pad_token_id"] = PAD_ID  # the model pads, and starts its decoder, with 0
  return out


def generation_config(hf_config: dict[str, Any]) -> dict[str, Any]:
  keys = TOKEN_KEYS + (("decoder_start_token_id",) if hf_config.get("is_encoder_decoder") else ())
  return {k: hf_config[k] for k in keys if hf_config.get(k) is not None}


def _ids(value) -> list:
  return value if isinstance(value, list) else [] if value is None else [value]


def resolve_tokens(params_dir: str, tokenizer: str = "") -> tuple[dict, Any]:
  """(token record, vocabulary or None) of an export: `--tokenizer` over the
  export's vocabulary.json over the package's conventions (module docstring)."""
  from alignment import checkpoint  # pylint: disable=g-import-not-at-top
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  if tokenizer and tokenizer != "none":
    try:
      vocab = vocab_lib.get_vocabulary(tokenizer)
    except Exception as e:  # pylint: disable=broad-except  (protobuf, TF, tokenizers errors)
      raise ExportError(f"--tokenizer={tokenizer}: not a vocabulary: "
                        f"{_one_line(e)}") from None
    return dict(vocab_lib.token_record(vocab), source="--tokenizer"), vocab
  try:
    record = checkpoint.load_tokens(params_dir)
  except checkpoint.CheckpointError as e:
    raise ExportError(str(e)) from None
  if record is None:
    return dict(PACKAGE_TOKENS, source="the package's conventions"), None
  where = os.path.join(params_dir, checkpoint.TOKENS_FILE)
  for key in TOKEN_KEYS:
    if record.get(key) is not None and not convert.is_token_ids(record.get(key)):
      raise ExportError(f"{where}: {key} must be a token id, a list of them or null, "
                        f"not {record.get(key)!r}")
  vocab = None
  name = record.get("vocabulary") if tokenizer != "none" else None
  if name:
    try:
      vocab = vocab_lib.get_vocabulary(name)
    except Exception as e:  # pylint: disable=broad-except
      raise ExportError(f"{where}: its vocabulary {name!r} cannot be read "
                        f"({_one_line(e)}); pass --tokenizer=PATH, or --tokenizer=none "
                        "to write its ids without a tokenizer") from None
  return dict({k: record.get(k) for k in TOKEN_KEYS}, vocabulary=name, source=where), vocab


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split()) or type(e).__name__
  return text if len(text) <= 300 else text[:300] + "..."


def check_tokens(cfg, tokens: dict, vocab) -> None:
  """Refuses ids, or a tokenizer, the model's embedding cannot hold."""
  if vocab is not None and vocab.vocab_size > cfg.vocab_size:
    raise ExportError(f"{tokens['source']}: the vocabulary {tokens['vocabulary']} has "
                      f"{vocab.vocab_size} tokens, more than the model's {cfg.vocab_size}")
  for key in TOKEN_KEYS:
    for i in _ids(tokens.get(key)):
      if i >= cfg.vocab_size:
        raise ExportError(f"{tokens['source']}: {key} {i} is past the model's "
                          f"{cfg.vocab_size} token ids")


def _token_text(vocab, token_id):
  return None if token_id is None else vocab.tokenizer.id_to_token(token_id)


def write_tokenizer(vocab, out) -> str:
  """Writes the tokenizer files `AutoTokenizer` reads into `out`; says which."""
  import seqio  # pylint: disable=g-import-not-at-top
  from alignment.data import hf_vocab  # pylint: disable=g-import-not-at-top
  from alignment import files  # pylint: disable=g-import-not-at-top
  if vocab is None:
    return "no tokenizer (pass --tokenizer=PATH to write one)"
  if isinstance(vocab, hf_vocab.HuggingFaceVocabulary):
    shutil.copyfile(vocab.path, os.path.join(out, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast",
              "eos_token": _token_text(vocab, vocab.eos_id),
              "pad_token": _token_text(vocab, vocab.pad_id) if vocab.has_pad else None,
              "bos_token": _token_text(vocab, vocab.bos_id)}
    own = vocab.config  # the tokenizer's own tokenizer_config.json (class, chat template, ...)
    if "tokenizer_class" in own:
      del config["tokenizer_class"]
    config = dict(own, **{k: v for k, v in config.items() if v is not None})
    files.write_json(os.path.join(out, hf_vocab.CONFIG),
                     {k: v for k, v in config.items() if v is not None})
    # The chat template travels too: transformers 5 keeps it in chat_template.jinja
    # beside tokenizer.json (tokenizer_config.json's "chat_template" came with `own`).
    template = os.path.join(os.path.dirname(vocab.path), "chat_template.jinja")
    if os.path.exists(template):
      shutil.copyfile(template, os.path.join(out, "chat_template.jinja"))
      return "tokenizer.json, chat_template.jinja"
    return "tokenizer.json" + (", its chat template" if own.get("chat_template") else "")
  if isinstance(vocab, seqio.ByteVocabulary):
    files.write_json(os.path.join(out, hf_vocab.CONFIG),
                     {"tokenizer_class": "ByT5Tokenizer", "extra_ids": 0})
    return "ByT5Tokenizer"
  shutil.copyfile(vocab.sentencepiece_model_file, os.path.join(out, "spiece.model"))
  files.write_json(os.path.join(out, hf_vocab.CONFIG),
                   {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "eos_token": "</s>",
                    "pad_token": "<pad>", "unk_token": "<unk>"})
  return "spiece.model (T5Tokenizer)"


def read_lm_as_numpy(path: str):
  """(zoo config, LanguageModel params as float32 numpy on the host) of a params export.

  Not `zoo.load_export`, which restores any head's params sharded over a mesh:
  a Hugging Face file wants one host's float32 arrays, and only a language model's."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from alignment import checkpoint, sharding  # pylint: disable=g-import-not-at-top
  from alignment.models import zoo  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(path, checkpoint.MODEL_CONFIG_FILE)
  if not os.path.isdir(path):
    raise ExportError(f"{path}: no such directory")
  if not os.path.exists(config_path):
    raise ExportError(f"{path}: not a params export (no model_config.json); pass a run's "
                      "<workdir>/export, not its checkpoints")
  try:
    cfg = zoo.load_model_config(config_path)  # its sizes checked: validate.check_model_config
  except checkpoint.CheckpointError as e:
    raise ExportError(str(e)) from None
  try:  # orbax reads absolute paths only (a relative one ends in "'NoneType' ... 'tree'")
    saved = ocp.PyTreeCheckpointer().metadata(
        os.path.join(checkpoint.absolute(path), "params")).item_metadata.tree
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many types)
    raise ExportError(f"{path}: unreadable export: {_one_line(e)}") from None
  abstract = sharding.strip_boxes(zoo.abstract_params(cfg, "lm"))
  saved_shapes = {jax.tree_util.keystr(p): getattr(m, "shape", None)
                  for p, m in jax.tree_util.tree_leaves_with_path(saved)}
  extra = sorted(set(saved_shapes) - {jax.tree_util.keystr(p)
                                      for p, _ in jax.tree_util.tree_leaves_with_path(abstract)})
  if extra:
    raise ExportError(f"{path}: parameters a language model does not have: {extra[:4]} "
                      "(a preference or reward model? only language models export)")
  for p, x in jax.tree_util.tree_leaves_with_path(abstract):
    shape = saved_shapes.get(jax.tree_util.keystr(p))
    if shape is not None and tuple(shape) != tuple(x.shape):  # before anything is read
      name = "/".join(str(getattr(k, "key", k)) for k in p)
      raise ExportError(f"{config_path}: {name}: the config implies shape {list(x.shape)}, "
                        f"{os.path.join(path, 'params')} holds {list(shape)}: model_config.json "
                        "does not describe these parameters")
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, np.float32, sharding=device),
                        abstract)
  try:
    params = checkpoint.load_params(path, target)
  except checkpoint.CheckpointError as e:
    raise ExportError(str(e)) from None
  return cfg, jax.tree.map(np.asarray, params)


def write_hf_dir(cfg, params, output: str, dtype: str = "float32",
                 tokens: Optional[dict] = None, vocab=None) -> str:
  """Writes output/config.json, generation_config.json, model.safetensors and the
  tokenizer (`vocab`'s, if any); output must not exist. Returns what tokenizer
  it wrote."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
  from alignment import files  # pylint: disable=g-import-not-at-top
  np_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[dtype]
  out = epath.Path(output)
  if out.exists():
    raise ExportError(f"{output}: already exists; choose a new --output")
  tokens = tokens or dict(PACKAGE_TOKENS, source="the package's conventions")
  check_tokens(cfg, tokens, vocab)
  hf_config = dict(config_to_hf(cfg, tokens), dtype=dtype)
  try:
    tensors = convert.params_to_hf(params, cfg)
  except convert.ConversionError as e:
    raise ExportError(str(e)) from None
  blob = save({k: v.astype(np_dtype) for k, v in tensors.items()}, metadata={"format": "pt"})
  tmp = epath.Path(f"{str(output).rstrip('/')}.tmp{os.getpid()}")
  if tmp.exists():
    tmp.rmtree()
  try:
    tmp.mkdir(parents=True)
    files.write_bytes(str(tmp / "model.safetensors"), blob)
    files.write_json(str(tmp / "config.json"), hf_config)
    files.write_json(str(tmp / "generation_config.json"), generation_config(hf_config))
    tokenizer = write_tokenizer(vocab, str(tmp))
    tmp.rename(out)
  except BaseException as e:
    if tmp.exists():
      tmp.rmtree()
    if isinstance(e, OSError):  # a full disk, a tokenizer file gone since it was read
      raise ExportError(f"cannot write {output}: {_one_line(e)}; nothing was written") from None
    raise
  return tokenizer


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      epilog="Accepts params exports only (a run's <workdir>/export, or the output of "
             "alignment.models.convert), not training checkpoints.")
  parser.add_argument("--params", required=True,
                      help="params export directory (model_config.json + params)")
  parser.add_argument("--output", required=True, help="new directory to write")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--tokenizer", default="",
                      help="the vocabulary the model was trained with (tokenizer.json, a "
                           "SentencePiece model, 'sentencepiece' or 'byte'; 'none': the "
                           "record's ids, no tokenizer); default: the export's "
                           "vocabulary.json")
  args = parser.parse_args(argv)
  try:
    if os.path.exists(args.output):  # before the (slow) read of the parameters
      raise ExportError(f"{args.output}: already exists; choose a new --output")
    tokens, vocab = resolve_tokens(args.params, args.tokenizer)
    cfg, params = read_lm_as_numpy(args.params)
    tokenizer = write_hf_dir(cfg, params, args.output, args.dtype, tokens, vocab)
  except (ExportError, validate.ModelFileError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  ids = ", ".join(f"{k.split('_')[0].upper()} {tokens[k]}" for k in TOKEN_KEYS
                  if tokens.get(k) is not None)
  print(f"wrote {args.output}: {config_to_hf(cfg)['architectures'][0]} "
        f"d_model={cfg.d_model} vocab={cfg.vocab_size} ({args.dtype}); token ids {ids} "
        f"from {tokens['source']}; {tokenizer}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Zoo language model -> Hugging Face directory (config.json + model.safetensors).

    python -m alignment.models.export --params=EXPORT --output=DIR [--dtype=float32]

reads a params export (EXPORT/model_config.json + EXPORT/params, what every
training loop writes to <workdir>/export and `alignment.models.convert`
writes) and writes DIR/config.json and DIR/model.safetensors, which
`transformers` loads with `from_pretrained`:

- T5 -> `T5ForConditionalGeneration` (gated-GELU as T5 v1.1 / FLAN-T5, or
  original T5's ReLU; relative-position buckets as configured;
  `tie_word_embeddings: false` for an untied lm_head without the
  d_model**-0.5 scaling, true for v1.0's tied and scaled output);
- decoder -> `LlamaForCausalLM` (default or llama3 RoPE; with q/k/v and
  output biases as `attention_bias`), or `Qwen2ForCausalLM` when only q, k, v
  have biases.

The tensor names and reshapes are `alignment.models.convert`'s table read
backwards (`convert.params_to_hf`), so import and export cannot drift apart.
Token ids follow the project's vocabularies: pad (and T5's decoder start) 0,
EOS 1, no BOS. Training checkpoints (<workdir>/checkpoints) are not accepted:
they do not record the model config, only its name; use the run's export.
Only language models export: a preference or reward model's head has no
Hugging Face counterpart here and is refused. The output appears at once,
complete (written beside it, then renamed).
"""
from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from alignment.data.batches import EOS_ID, PAD_ID
from alignment.models import convert
from alignment.models.decoder import DecoderConfig
from alignment.models.t5 import T5Config


class ExportError(ValueError):
  pass


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


def config_to_hf(cfg) -> dict[str, Any]:
  if isinstance(cfg, T5Config):
    return t5_config_to_hf(cfg)
  if isinstance(cfg, DecoderConfig):
    return decoder_config_to_hf(cfg)
  raise ExportError(f"no Hugging Face architecture for {type(cfg).__name__}")


def load_export(path: str):
  """(zoo config, LanguageModel params as float32 numpy) of a params export."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from alignment import checkpoint, sharding  # pylint: disable=g-import-not-at-top
  from alignment.models import zoo  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(path, "model_config.json")
  if not os.path.isdir(path):
    raise ExportError(f"{path}: no such directory")
  if not os.path.exists(config_path):
    raise ExportError(f"{path}: not a params export (no model_config.json); pass a run's "
                      "<workdir>/export, not its checkpoints")
  try:
    cfg = checkpoint.load_model_config(config_path)
    saved = ocp.PyTreeCheckpointer().metadata(
        os.path.join(path, "params")).item_metadata.tree
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many types)
    raise ExportError(f"{path}: unreadable export: {e}") from None
  abstract = sharding.strip_boxes(zoo.abstract_params(cfg, "lm"))
  extra = sorted({jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(saved)}
                 - {jax.tree_util.keystr(p)
                    for p, _ in jax.tree_util.tree_leaves_with_path(abstract)})
  if extra:
    raise ExportError(f"{path}: parameters a language model does not have: {extra[:4]} "
                      "(a preference or reward model? only language models export)")
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, np.float32, sharding=device),
                        abstract)
  try:
    params = checkpoint.load_params(path, target)
  except checkpoint.CheckpointError as e:
    raise ExportError(str(e)) from None
  return cfg, jax.tree.map(np.asarray, params)


def write_hf_dir(cfg, params, output: str, dtype: str = "float32") -> None:
  """Writes output/config.json + output/model.safetensors; output must not exist."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
  from alignment import files  # pylint: disable=g-import-not-at-top
  np_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[dtype]
  out = epath.Path(output)
  if out.exists():
    raise ExportError(f"{output}: already exists; choose a new --output")
  hf_config = dict(config_to_hf(cfg), dtype=dtype)
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
    tmp.rename(out)
  except BaseException:
    if tmp.exists():
      tmp.rmtree()
    raise


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
  args = parser.parse_args(argv)
  try:
    if os.path.exists(args.output):  # before the (slow) read of the parameters
      raise ExportError(f"{args.output}: already exists; choose a new --output")
    cfg, params = load_export(args.params)
    write_hf_dir(cfg, params, args.output, args.dtype)
  except ExportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.output}: {config_to_hf(cfg)['architectures'][0]} "
        f"d_model={cfg.d_model} vocab={cfg.vocab_size} ({args.dtype})")
  return 0


if __name__ == "__main__":
  sys.exit(main())

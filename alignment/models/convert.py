"""Hugging Face safetensors -> zoo parameters.

Supports `T5ForConditionalGeneration` in its v1.1 form (gated-GELU; untied or
tied embeddings) and `LlamaForCausalLM` (default RoPE, no biases). The output
is the parameter tree of `heads.LanguageModel` plus the zoo config.

    python -m alignment.models.convert --hf_dir=DIR --output=OUT [--dtype=float32]

reads DIR/config.json and DIR/model.safetensors (or the shards named by
model.safetensors.index.json) and writes an orbax checkpoint of the parameters
to OUT/params and the model config to OUT/model_config.json. Anything this
module cannot represent exactly (another activation, rope scaling, biases)
stops the conversion with a message naming the config key.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Mapping

import numpy as np

from alignment.models.decoder import DecoderConfig
from alignment.models.t5 import T5Config


class ConversionError(ValueError):
  pass


def _need(hf: Mapping[str, Any], key: str, where: str):
  if key not in hf:
    raise ConversionError(f"{where}: config.json has no {key!r}")
  return hf[key]


def t5_config_from_hf(hf: Mapping[str, Any], where: str = "config.json") -> T5Config:
  proj = hf.get("feed_forward_proj", "relu")
  if proj not in ("gated-gelu",):
    raise ConversionError(f"{where}: feed_forward_proj={proj!r}; only T5 v1.1's "
                          "'gated-gelu' is supported")
  return T5Config(
      vocab_size=_need(hf, "vocab_size", where), d_model=_need(hf, "d_model", where),
      num_heads=_need(hf, "num_heads", where), head_dim=_need(hf, "d_kv", where),
      d_ff=_need(hf, "d_ff", where), num_encoder_layers=_need(hf, "num_layers", where),
      num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
      relative_buckets=hf.get("relative_attention_num_buckets", 32),
      relative_max_distance=hf.get("relative_attention_max_distance", 128),
      norm_eps=hf.get("layer_norm_epsilon", 1e-6),
      tie_embeddings=_t5_scales_logits(hf))


def _t5_scales_logits(hf: Mapping[str, Any]) -> bool:
  """T5 v1.0 ties the output projection and rescales by d_model**-0.5; v1.1 does not.

  transformers < 5 wrote v1.1 as `tie_word_embeddings: false`; transformers 5
  writes `scale_decoder_outputs: false` and ties the lm_head of freshly built
  models to `shared` (so its tensor may be absent or equal to `shared`).
  """
  if "scale_decoder_outputs" in hf:
    return bool(hf["scale_decoder_outputs"])
  return hf.get("tie_word_embeddings", True) is not False


def decoder_config_from_hf(hf: Mapping[str, Any], where: str = "config.json") -> DecoderConfig:
  for key, ok in (("hidden_act", "silu"),):
    if hf.get(key, ok) != ok:
      raise ConversionError(f"{where}: {key}={hf[key]!r}; only {ok!r} is supported")
  for key in ("attention_bias", "mlp_bias"):
    if hf.get(key):
      raise ConversionError(f"{where}: {key}=true is not supported (zoo layers have no biases)")
  scaling = hf.get("rope_scaling")
  if scaling and (scaling.get("rope_type", scaling.get("type")) not in (None, "default")):
    raise ConversionError(f"{where}: rope_scaling={scaling!r} is not supported; "
                          "only default RoPE")
  d = _need(hf, "hidden_size", where)
  heads = _need(hf, "num_attention_heads", where)
  theta = hf.get("rope_theta")
  if theta is None:
    theta = (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
  return DecoderConfig(
      vocab_size=_need(hf, "vocab_size", where), d_model=d, num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or d // heads,
      d_ff=_need(hf, "intermediate_size", where), num_layers=_need(hf, "num_hidden_layers", where),
      rope_theta=float(theta), norm_eps=hf.get("rms_norm_eps", 1e-6),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def config_from_hf(hf: Mapping[str, Any], where: str = "config.json"):
  archs = hf.get("architectures") or []
  model_type = hf.get("model_type")
  if model_type == "t5" or "T5ForConditionalGeneration" in archs:
    return t5_config_from_hf(hf, where)
  if model_type == "llama" or "LlamaForCausalLM" in archs:
    return decoder_config_from_hf(hf, where)
  raise ConversionError(f"{where}: model_type={model_type!r} architectures={archs!r}; "
                        "supported: T5ForConditionalGeneration (v1.1), LlamaForCausalLM")


class _Weights:
  """Reads named tensors, remembering which were used, so leftovers are reported."""

  def __init__(self, tensors: Mapping[str, np.ndarray], where: str):
    self.tensors = dict(tensors)
    self.used: set[str] = set()
    self.where = where

  def __call__(self, name: str) -> np.ndarray:
    if name not in self.tensors:
      raise ConversionError(f"{self.where}: missing tensor {name!r}")
    self.used.add(name)
    return np.asarray(self.tensors[name], dtype=np.float32)

  def check_all_used(self, ignore=()):
    left = sorted(k for k in self.tensors if k not in self.used and k not in ignore)
    if left:
      raise ConversionError(f"{self.where}: tensors not understood: {left[:8]}"
                            f"{' ...' if len(left) > 8 else ''}")


def _attn(w, prefix, heads, kv_heads, head_dim, names=("q", "k", "v", "o")):
  q, k, v, o = (w(f"{prefix}.{n}.weight") for n in names)
  d = q.shape[1]
  return {"query": q.T.reshape(d, heads, head_dim),
          "key": k.T.reshape(d, kv_heads, head_dim),
          "value": v.T.reshape(d, kv_heads, head_dim),
          "out": o.T.reshape(heads, head_dim, d)}


def _norm(w, name):
  return {"scale": w(name)}


def t5_params_from_hf(tensors: Mapping[str, np.ndarray], cfg: T5Config, where="weights"):
  w = _Weights(tensors, where)
  h, k = cfg.num_heads, cfg.head_dim
  bb: dict[str, Any] = {
      "token_embed": {"embedding": w("shared.weight")},
      "encoder_relpos": {"rel_embedding": w(
          "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")},
      "decoder_relpos": {"rel_embedding": w(
          "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")},
      "encoder_norm": _norm(w, "encoder.final_layer_norm.weight"),
      "decoder_norm": _norm(w, "decoder.final_layer_norm.weight"),
  }
  for i in range(cfg.num_encoder_layers):
    p = f"encoder.block.{i}.layer"
    bb[f"encoder_layer_{i}"] = {
        "pre_attention_norm": _norm(w, f"{p}.0.layer_norm.weight"),
        "attention": _attn(w, f"{p}.0.SelfAttention", h, h, k),
        "pre_mlp_norm": _norm(w, f"{p}.1.layer_norm.weight"),
        "mlp": {"wi_0": w(f"{p}.1.DenseReluDense.wi_0.weight").T,
                "wi_1": w(f"{p}.1.DenseReluDense.wi_1.weight").T,
                "wo": w(f"{p}.1.DenseReluDense.wo.weight").T}}
  for i in range(cfg.num_decoder_layers):
    p = f"decoder.block.{i}.layer"
    bb[f"decoder_layer_{i}"] = {
        "pre_self_attention_norm": _norm(w, f"{p}.0.layer_norm.weight"),
        "self_attention": _attn(w, f"{p}.0.SelfAttention", h, h, k),
        "pre_cross_attention_norm": _norm(w, f"{p}.1.layer_norm.weight"),
        "encoder_decoder_attention": _attn(w, f"{p}.1.EncDecAttention", h, h, k),
        "pre_mlp_norm": _norm(w, f"{p}.2.layer_norm.weight"),
        "mlp": {"wi_0": w(f"{p}.2.DenseReluDense.wi_0.weight").T,
                "wi_1": w(f"{p}.2.DenseReluDense.wi_1.weight").T,
                "wo": w(f"{p}.2.DenseReluDense.wo.weight").T}}
  params: dict[str, Any] = {"backbone": bb}
  if not cfg.tie_embeddings:
    head = "lm_head.weight" if "lm_head.weight" in tensors else "shared.weight"
    params["lm_head"] = {"kernel": w(head).T}
  # Copies of `shared` that Hugging Face may also store.
  w.check_all_used(ignore={"encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                           "lm_head.weight" if cfg.tie_embeddings else ""})
  return params


def decoder_params_from_hf(tensors: Mapping[str, np.ndarray], cfg: DecoderConfig,
                           where="weights"):
  w = _Weights(tensors, where)
  bb: dict[str, Any] = {"token_embed": {"embedding": w("model.embed_tokens.weight")},
                        "final_norm": _norm(w, "model.norm.weight")}
  for i in range(cfg.num_layers):
    p = f"model.layers.{i}"
    bb[f"layer_{i}"] = {
        "pre_attention_norm": _norm(w, f"{p}.input_layernorm.weight"),
        "attention": _attn(w, f"{p}.self_attn", cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                           names=("q_proj", "k_proj", "v_proj", "o_proj")),
        "pre_mlp_norm": _norm(w, f"{p}.post_attention_layernorm.weight"),
        "mlp": {"wi_0": w(f"{p}.mlp.gate_proj.weight").T,
                "wi_1": w(f"{p}.mlp.up_proj.weight").T,
                "wo": w(f"{p}.mlp.down_proj.weight").T}}
  params: dict[str, Any] = {"backbone": bb}
  if not cfg.tie_embeddings:
    params["lm_head"] = {"kernel": w("lm_head.weight").T}
  w.check_all_used(ignore={"lm_head.weight"} if cfg.tie_embeddings else set())
  return params


def params_from_hf(tensors, cfg, where="weights"):
  if isinstance(cfg, T5Config):
    return t5_params_from_hf(tensors, cfg, where)
  return decoder_params_from_hf(tensors, cfg, where)


def load_safetensors_dir(hf_dir: str) -> dict[str, np.ndarray]:
  """All tensors of a Hugging Face model directory (single file or shards)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  single = os.path.join(hf_dir, "model.safetensors")
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  if os.path.exists(single):
    files = [single]
  elif os.path.exists(index):
    with open(index) as f:
      files = sorted({os.path.join(hf_dir, v) for v in json.load(f)["weight_map"].values()})
  else:
    raise ConversionError(f"{hf_dir}: neither model.safetensors nor "
                          "model.safetensors.index.json")
  tensors: dict[str, np.ndarray] = {}
  for path in files:
    try:
      tensors.update(_load_any_dtype(path, load_file))
    except Exception as e:  # safetensors raises several types for corrupt files
      raise ConversionError(f"{path}: cannot read safetensors: {e}") from None
  return tensors


def _load_any_dtype(path, load_file):
  try:
    return load_file(path)
  except TypeError:  # bfloat16 has no numpy dtype in safetensors.numpy: go through torch
    from safetensors.torch import load_file as load_torch  # pylint: disable=g-import-not-at-top
    return {k: v.float().numpy() for k, v in load_torch(path).items()}


def convert_dir(hf_dir: str):
  """(zoo config, LanguageModel params as numpy) of a Hugging Face directory."""
  config_path = os.path.join(hf_dir, "config.json")
  try:
    with open(config_path) as f:
      hf = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConversionError(f"{config_path}: {e}") from None
  cfg = config_from_hf(hf, config_path)
  return cfg, params_from_hf(load_safetensors_dir(hf_dir), cfg, hf_dir)


def save(params, cfg, output: str, dtype: str = "float32"):
  """Writes a params export (OUT/params + OUT/model_config.json), atomically."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  from alignment import checkpoint  # pylint: disable=g-import-not-at-top
  if os.path.exists(output):
    raise ConversionError(f"{output}: already exists; choose a new --output")
  np_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[dtype]
  params = jax.tree.map(lambda x: np.asarray(x, np_dtype), params)
  checkpoint.export_params(params, dataclasses.replace(cfg, param_dtype=dtype), output)


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--hf_dir", required=True, help="directory with config.json + safetensors")
  parser.add_argument("--output", required=True, help="new directory to write")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = parser.parse_args(argv)
  try:
    cfg, params = convert_dir(args.hf_dir)
    save(params, cfg, args.output, args.dtype)
  except ConversionError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.output}: {cfg.architecture} d_model={cfg.d_model} "
        f"vocab={cfg.vocab_size}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

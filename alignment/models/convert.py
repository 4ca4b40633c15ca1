"""Hugging Face safetensors -> zoo parameters (and, through the same table, back).

Supports `T5ForConditionalGeneration` in its v1.1 / FLAN-T5 form (gated-GELU;
untied, or tied with v1.0's d_model**-0.5 logit scaling) and original form
(ReLU MLPs, tied and scaled), `LlamaForCausalLM`
(default or Llama 3.1 "llama3" RoPE; `attention_bias`) and `Qwen2ForCausalLM`
(biases on q, k, v; full attention). The output is the parameter tree of
`heads.LanguageModel` plus the zoo config.

    python -m alignment.models.convert --hf_dir=DIR --output=OUT [--dtype=float32]

reads DIR/config.json and DIR/model.safetensors (or the shards named by
model.safetensors.index.json) and writes an orbax checkpoint of the parameters
to OUT/params and the model config to OUT/model_config.json. Anything this
module cannot represent exactly (another activation, another RoPE type,
sliding windows, MLP biases) stops the conversion with a message naming the
config key.

One table (`t5_rows`, `decoder_rows`) names every tensor with its zoo path
and the reshapes of both directions; `alignment.models.export` writes it
back out with `params_to_hf`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Callable, Mapping, Optional

import numpy as np

from alignment.models.decoder import DecoderConfig
from alignment.models.t5 import T5Config


class ConversionError(ValueError):
  pass


def _need(hf: Mapping[str, Any], key: str, where: str):
  if key not in hf:
    raise ConversionError(f"{where}: config.json has no {key!r}")
  return hf[key]


# feed_forward_proj -> (dense_act_fn, is_gated_act) as transformers derives them.
T5_FEED_FORWARD = {"gated-gelu": ("gelu_new", True), "relu": ("relu", False)}


def t5_config_from_hf(hf: Mapping[str, Any], where: str = "config.json") -> T5Config:
  proj = hf.get("feed_forward_proj", "relu")
  if proj not in T5_FEED_FORWARD:
    raise ConversionError(f"{where}: feed_forward_proj={proj!r}; only 'gated-gelu' (T5 v1.1, "
                          "FLAN-T5) and 'relu' (original T5) are supported")
  # transformers derives dense_act_fn from feed_forward_proj ("gelu_new", the tanh
  # approximation, for gated-gelu) but lets config.json override it.
  act, gated = T5_FEED_FORWARD[proj]
  for key, ok in (("dense_act_fn", act), ("is_gated_act", gated)):
    if hf.get(key, ok) != ok:
      raise ConversionError(f"{where}: {key}={hf[key]!r}; with feed_forward_proj={proj!r} "
                            f"only {ok!r} is supported")
  return T5Config(
      vocab_size=_need(hf, "vocab_size", where), d_model=_need(hf, "d_model", where),
      num_heads=_need(hf, "num_heads", where), head_dim=_need(hf, "d_kv", where),
      d_ff=_need(hf, "d_ff", where), num_encoder_layers=_need(hf, "num_layers", where),
      num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
      relative_buckets=hf.get("relative_attention_num_buckets", 32),
      relative_max_distance=hf.get("relative_attention_max_distance", 128),
      norm_eps=hf.get("layer_norm_epsilon", 1e-6),
      tie_embeddings=_t5_scales_logits(hf), feed_forward=proj)


def _t5_scales_logits(hf: Mapping[str, Any]) -> bool:
  """T5 v1.0 ties the output projection and rescales by d_model**-0.5; v1.1 does not.

  transformers < 5 wrote v1.1 as `tie_word_embeddings: false`; transformers 5
  writes `scale_decoder_outputs: false` and ties the lm_head of freshly built
  models to `shared` (so its tensor may be absent or equal to `shared`).
  """
  if "scale_decoder_outputs" in hf:
    return bool(hf["scale_decoder_outputs"])
  return hf.get("tie_word_embeddings", True) is not False


# Keys of a RoPE dictionary (`rope_parameters` in transformers 5, `rope_scaling`
# before) that this module implements; any other key is refused.
_ROPE_KEYS = {"rope_type", "type", "rope_theta", "factor", "low_freq_factor", "high_freq_factor",
              "original_max_position_embeddings", "partial_rotary_factor"}
_LLAMA3_FIELDS = {"factor": "rope_factor", "low_freq_factor": "rope_low_freq_factor",
                  "high_freq_factor": "rope_high_freq_factor"}


def _rope_from_hf(hf: Mapping[str, Any], where: str) -> dict[str, Any]:
  """DecoderConfig's RoPE fields from `rope_parameters` and/or `rope_scaling`.

  Only "default" and "llama3" RoPE are implemented; any other type, any
  unknown key or partial rotation is refused, naming the key.
  """
  if hf.get("partial_rotary_factor", 1.0) != 1.0:
    raise ConversionError(f"{where}: partial_rotary_factor={hf['partial_rotary_factor']!r}; "
                          "only 1.0 (full rotation) is supported")
  rope: dict[str, Any] = {}
  kinds = {}
  for key in ("rope_scaling", "rope_parameters"):  # the newer key wins where both say
    d = hf.get(key)
    if not d:
      continue
    if not isinstance(d, Mapping):
      raise ConversionError(f"{where}: {key}={d!r} is not a dictionary")
    unknown = sorted(set(d) - _ROPE_KEYS)
    if unknown:
      raise ConversionError(f"{where}: {key} has {unknown}: not supported (only default and "
                            "llama3 RoPE, one for all layers)")
    if d.get("partial_rotary_factor", 1.0) != 1.0:
      raise ConversionError(f"{where}: {key}.partial_rotary_factor="
                            f"{d['partial_rotary_factor']!r}; only 1.0 is supported")
    kind = d.get("rope_type", d.get("type", "default"))
    if kind not in ("default", "llama3"):
      raise ConversionError(f"{where}: {key}.rope_type={kind!r} is not supported; only "
                            "'default' and 'llama3' RoPE")
    kinds[key] = kind
    rope.update(d)
  if len(set(kinds.values())) > 1:
    raise ConversionError(f"{where}: rope_scaling and rope_parameters disagree on the RoPE "
                          f"type ({kinds})")
  theta = rope.get("rope_theta", hf.get("rope_theta")) or 10000.0
  out: dict[str, Any] = {"rope_theta": float(theta)}
  if "llama3" in kinds.values():
    key = "rope_parameters" if "rope_parameters" in kinds else "rope_scaling"
    for name, field in _LLAMA3_FIELDS.items():
      if name not in rope:
        raise ConversionError(f"{where}: {key} of rope_type 'llama3' has no {name!r}")
      out[field] = float(rope[name])
    # As transformers: a top-level original_max_position_embeddings comes first.
    original = (hf.get("original_max_position_embeddings")
                or rope.get("original_max_position_embeddings")
                or _need(hf, "max_position_embeddings", where))
    out.update(rope_type="llama3", rope_original_max_positions=int(original))
  return out


def decoder_config_from_hf(hf: Mapping[str, Any], where: str = "config.json") -> DecoderConfig:
  """Llama (default or llama3 RoPE, optional attention_bias) and Qwen2 (q/k/v biases)."""
  for key, ok in (("hidden_act", "silu"),):
    if hf.get(key, ok) != ok:
      raise ConversionError(f"{where}: {key}={hf[key]!r}; only {ok!r} is supported")
  if hf.get("mlp_bias"):
    raise ConversionError(f"{where}: mlp_bias=true is not supported (zoo MLPs have no biases)")
  if hf.get("use_sliding_window"):
    raise ConversionError(f"{where}: use_sliding_window=true is not supported (full "
                          "attention only)")
  layer_types = set(hf.get("layer_types") or ()) - {"full_attention"}
  if layer_types:
    raise ConversionError(f"{where}: layer_types has {sorted(layer_types)}; only "
                          "'full_attention' is supported")
  qwen2 = hf.get("model_type") == "qwen2" or "Qwen2ForCausalLM" in (hf.get("architectures") or [])
  llama_bias = bool(hf.get("attention_bias")) and not qwen2
  d = _need(hf, "hidden_size", where)
  heads = _need(hf, "num_attention_heads", where)
  return DecoderConfig(
      vocab_size=_need(hf, "vocab_size", where), d_model=d, num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or d // heads,
      d_ff=_need(hf, "intermediate_size", where), num_layers=_need(hf, "num_hidden_layers", where),
      norm_eps=hf.get("rms_norm_eps", 1e-6),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=qwen2 or llama_bias, out_bias=llama_bias, **_rope_from_hf(hf, where))


def config_from_hf(hf: Mapping[str, Any], where: str = "config.json"):
  archs = hf.get("architectures") or []
  model_type = hf.get("model_type")
  if model_type == "t5" or "T5ForConditionalGeneration" in archs:
    return t5_config_from_hf(hf, where)
  if (model_type in ("llama", "qwen2") or "LlamaForCausalLM" in archs
      or "Qwen2ForCausalLM" in archs):
    return decoder_config_from_hf(hf, where)
  raise ConversionError(f"{where}: model_type={model_type!r} architectures={archs!r}; "
                        "supported: T5ForConditionalGeneration (T5, v1.1, FLAN-T5), "
                        "LlamaForCausalLM, Qwen2ForCausalLM")


# --------------------------------------------------------------------------
# The tensor table: one row per Hugging Face tensor, read in both directions
# (`params_from_hf` here, `params_to_hf` for `alignment.models.export`).
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
  """One Hugging Face tensor `hf` <-> the zoo parameter at path `zoo`."""
  hf: str
  zoo: tuple[str, ...]
  to_zoo: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]
  fallback: Optional[str] = None  # read this tensor when `hf` is absent


def _same(hf, zoo, **kw):
  return Row(hf, zoo, lambda x: x, lambda x: x, **kw)


def _linear(hf, zoo, **kw):
  """torch Linear [out, in] <-> zoo kernel [in, out]."""
  return Row(hf, zoo, lambda x: x.T, lambda x: x.T, **kw)


def _heads_in(hf, zoo, heads, head_dim):
  """[H * K, D] <-> [D, H, K] (q, k, v projections)."""
  return Row(hf, zoo, lambda x: x.T.reshape(x.shape[1], heads, head_dim),
             lambda x: x.reshape(x.shape[0], heads * head_dim).T)


def _heads_out(hf, zoo, heads, head_dim):
  """[D, H * K] <-> [H, K, D] (output projection)."""
  return Row(hf, zoo, lambda x: x.T.reshape(heads, head_dim, x.shape[0]),
             lambda x: x.reshape(heads * head_dim, x.shape[2]).T)


def _head_bias(hf, zoo, heads, head_dim):
  """[H * K] <-> [H, K]."""
  return Row(hf, zoo, lambda x: x.reshape(heads, head_dim), lambda x: x.reshape(-1))


def _attention_rows(hf, zoo, names, heads, kv_heads, head_dim, qkv_bias=False,
                    out_bias=False):
  q, k, v, o = (f"{hf}.{n}" for n in names)
  rows = [_heads_in(f"{q}.weight", zoo + ("query",), heads, head_dim),
          _heads_in(f"{k}.weight", zoo + ("key",), kv_heads, head_dim),
          _heads_in(f"{v}.weight", zoo + ("value",), kv_heads, head_dim),
          _heads_out(f"{o}.weight", zoo + ("out",), heads, head_dim)]
  if qkv_bias:
    rows += [_head_bias(f"{q}.bias", zoo + ("query_bias",), heads, head_dim),
             _head_bias(f"{k}.bias", zoo + ("key_bias",), kv_heads, head_dim),
             _head_bias(f"{v}.bias", zoo + ("value_bias",), kv_heads, head_dim)]
  if out_bias:
    rows.append(_same(f"{o}.bias", zoo + ("out_bias",)))
  return rows


def _mlp_rows(hf, zoo, names=("wi_0", "wi_1", "wo"), zoo_names=("wi_0", "wi_1", "wo")):
  return [_linear(f"{hf}.{n}.weight", zoo + (z,)) for n, z in zip(names, zoo_names)]


def _t5_mlp_rows(cfg: T5Config, hf, zoo):
  names = ("wi", "wo") if cfg.feed_forward == "relu" else ("wi_0", "wi_1", "wo")
  return _mlp_rows(f"{hf}.DenseReluDense", zoo + ("mlp",), names, names)


def _norm(hf, zoo):
  return _same(hf, zoo + ("scale",))


def t5_rows(cfg: T5Config) -> list[Row]:
  h, k = cfg.num_heads, cfg.head_dim
  bb = ("backbone",)
  rows = [_same("shared.weight", bb + ("token_embed", "embedding")),
          _same("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                bb + ("encoder_relpos", "rel_embedding")),
          _same("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                bb + ("decoder_relpos", "rel_embedding")),
          _norm("encoder.final_layer_norm.weight", bb + ("encoder_norm",)),
          _norm("decoder.final_layer_norm.weight", bb + ("decoder_norm",))]
  for i in range(cfg.num_encoder_layers):
    p, z = f"encoder.block.{i}.layer", bb + (f"encoder_layer_{i}",)
    rows += [_norm(f"{p}.0.layer_norm.weight", z + ("pre_attention_norm",)),
             *_attention_rows(f"{p}.0.SelfAttention", z + ("attention",), "qkvo", h, h, k),
             _norm(f"{p}.1.layer_norm.weight", z + ("pre_mlp_norm",)),
             *_t5_mlp_rows(cfg, f"{p}.1", z)]
  for i in range(cfg.num_decoder_layers):
    p, z = f"decoder.block.{i}.layer", bb + (f"decoder_layer_{i}",)
    rows += [_norm(f"{p}.0.layer_norm.weight", z + ("pre_self_attention_norm",)),
             *_attention_rows(f"{p}.0.SelfAttention", z + ("self_attention",), "qkvo", h, h, k),
             _norm(f"{p}.1.layer_norm.weight", z + ("pre_cross_attention_norm",)),
             *_attention_rows(f"{p}.1.EncDecAttention", z + ("encoder_decoder_attention",),
                              "qkvo", h, h, k),
             _norm(f"{p}.2.layer_norm.weight", z + ("pre_mlp_norm",)),
             *_t5_mlp_rows(cfg, f"{p}.2", z)]
  if not cfg.tie_embeddings:
    # transformers 5 may leave out an lm_head equal to `shared`.
    rows.append(_linear("lm_head.weight", ("lm_head", "kernel"), fallback="shared.weight"))
  return rows


def decoder_rows(cfg: DecoderConfig) -> list[Row]:
  bb = ("backbone",)
  rows = [_same("model.embed_tokens.weight", bb + ("token_embed", "embedding")),
          _norm("model.norm.weight", bb + ("final_norm",))]
  for i in range(cfg.num_layers):
    p, z = f"model.layers.{i}", bb + (f"layer_{i}",)
    rows += [_norm(f"{p}.input_layernorm.weight", z + ("pre_attention_norm",)),
             *_attention_rows(f"{p}.self_attn", z + ("attention",),
                              ("q_proj", "k_proj", "v_proj", "o_proj"), cfg.num_heads,
                              cfg.num_kv_heads, cfg.head_dim, cfg.qkv_bias, cfg.out_bias),
             _norm(f"{p}.post_attention_layernorm.weight", z + ("pre_mlp_norm",)),
             *_mlp_rows(f"{p}.mlp", z + ("mlp",), ("gate_proj", "up_proj", "down_proj"))]
  if not cfg.tie_embeddings:
    rows.append(_linear("lm_head.weight", ("lm_head", "kernel")))
  return rows


def rows_of(cfg) -> list[Row]:
  return t5_rows(cfg) if isinstance(cfg, T5Config) else decoder_rows(cfg)


def _copies(cfg) -> set[str]:
  """Tensors Hugging Face may store as copies of another (tied embeddings)."""
  tied = {"lm_head.weight"} if cfg.tie_embeddings else set()
  if isinstance(cfg, T5Config):
    tied |= {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
  return tied


class _Weights:
  """Reads named tensors, remembering which were used, so leftovers are reported."""

  def __init__(self, tensors: Mapping[str, np.ndarray], where: str):
    self.tensors = dict(tensors)
    self.used: set[str] = set()
    self.where = where

  def __call__(self, name: str, fallback: Optional[str] = None) -> np.ndarray:
    if name not in self.tensors and fallback in self.tensors:
      name = fallback
    if name not in self.tensors:
      raise ConversionError(f"{self.where}: missing tensor {name!r}")
    self.used.add(name)
    return np.asarray(self.tensors[name], dtype=np.float32)

  def check_all_used(self, ignore=()):
    left = sorted(k for k in self.tensors if k not in self.used and k not in ignore)
    if left:
      raise ConversionError(f"{self.where}: tensors not understood: {left[:8]}"
                            f"{' ...' if len(left) > 8 else ''}")


def params_from_hf(tensors: Mapping[str, np.ndarray], cfg, where="weights"):
  """LanguageModel params (nested dicts of float32 numpy) from HF tensors."""
  w = _Weights(tensors, where)
  params: dict[str, Any] = {}
  for row in rows_of(cfg):
    *parents, leaf = row.zoo
    node = params
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = row.to_zoo(w(row.hf, row.fallback))
  w.check_all_used(ignore=_copies(cfg))
  return params


def params_to_hf(params: Mapping[str, Any], cfg, where="params") -> dict[str, np.ndarray]:
  """The inverse of `params_from_hf`: HF tensor name -> float32 numpy array.

  Every parameter must be in the table: a preference model's or value head's
  extra parameters are refused by name.
  """
  import jax  # pylint: disable=g-import-not-at-top
  leaves = {tuple(getattr(k, "key", k) for k in path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  tensors = {}
  for row in rows_of(cfg):
    if row.zoo not in leaves:
      raise ConversionError(f"{where}: no parameter {'/'.join(row.zoo)}")
    tensors[row.hf] = np.ascontiguousarray(row.to_hf(np.asarray(leaves.pop(row.zoo),
                                                                np.float32)))
  if leaves:
    left = sorted("/".join(map(str, k)) for k in leaves)
    raise ConversionError(f"{where}: parameters with no Hugging Face name (not a language "
                          f"model's?): {left[:8]}")
  return tensors


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


def is_token_ids(value) -> bool:
  """A token id (an int >= 0, not a bool) or a non-empty list of them."""
  one = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0
  return one(value) or (isinstance(value, list) and bool(value) and all(map(one, value)))


def hf_tokens(hf_dir: str) -> dict:
  """The special ids of a Hugging Face directory (generation_config.json over
  config.json; a list of EOS ids kept as it is; a negative id, as older Llama
  configs' `pad_token_id: -1`, means none) and its tokenizer.json if it has
  one: the record an export of the converted model carries back out."""
  record: dict[str, Any] = {}
  for name in ("config.json", "generation_config.json"):
    path = os.path.join(hf_dir, name)
    if not os.path.exists(path):
      continue
    try:
      with open(path) as f:
        hf = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ConversionError(f"{path}: {e}") from None
    for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
      value = hf.get(key) if isinstance(hf, dict) else None
      if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        value = None
      if value is not None:
        if not is_token_ids(value):
          raise ConversionError(f"{path}: {key} must be a token id or a list of them, "
                                f"not {value!r}")
        record[key] = value
  tokenizer = os.path.join(hf_dir, "tokenizer.json")
  record["vocabulary"] = os.path.abspath(tokenizer) if os.path.exists(tokenizer) else None
  return record


def save(params, cfg, output: str, dtype: str = "float32", tokens: dict | None = None):
  """Writes a params export (OUT/params + OUT/model_config.json, and the source's
  token ids as OUT/vocabulary.json: `hf_tokens`), atomically."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  from alignment import checkpoint  # pylint: disable=g-import-not-at-top
  if os.path.exists(output):
    raise ConversionError(f"{output}: already exists; choose a new --output")
  np_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[dtype]
  params = jax.tree.map(lambda x: np.asarray(x, np_dtype), params)
  checkpoint.export_params(params, dataclasses.replace(cfg, param_dtype=dtype), output,
                           tokens=tokens)


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--hf_dir", required=True, help="directory with config.json + safetensors")
  parser.add_argument("--output", required=True, help="new directory to write")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = parser.parse_args(argv)
  try:
    cfg, params = convert_dir(args.hf_dir)
    save(params, cfg, args.output, args.dtype, tokens=hf_tokens(args.hf_dir))
  except ConversionError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.output}: {cfg.architecture} d_model={cfg.d_model} "
        f"vocab={cfg.vocab_size}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

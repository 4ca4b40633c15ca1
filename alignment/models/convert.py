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
config key. So does a directory that cannot be what it says
(`alignment.models.validate`): a size that is not a positive integer under its
ceiling, heads that do not divide the width, a safetensors header whose
offsets lie outside the file or overlap, a tensor of another shape or dtype
than config.json implies, a missing or an unexpected tensor; all of it is
checked from config.json and the headers before any tensor is read. Each
refusal is one line, `error: <file>: <field>: <what is wrong>`, and exit
status 2; from Python, a `validate.ModelFileError` (a ValueError;
`ConversionError` is one).

One table (`t5_rows`, `decoder_rows`) names every tensor with its zoo path
and the reshapes of both directions; `alignment.models.export` writes it
back out with `params_to_hf`.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable, Mapping, Optional

import numpy as np

from alignment.models import validate
from alignment.models.decoder import DecoderConfig
from alignment.models.t5 import T5Config


class ConversionError(validate.ModelFileError):
  """What this module cannot represent, or a directory that is not what it says."""


def _size(hf: Mapping[str, Any], key: str, kind: str, where: str,
          default: Any = validate.REQUIRED, low: int = 1) -> int:
  """config.json's `key`: an integer in [low, validate.CEILINGS[kind]]; `default`
  where it is absent or null (as transformers reads it)."""
  return validate.integer(validate.get(hf, key, where, default), where, key, kind, low)


def _flag(hf: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
  return validate.flag(validate.get(hf, key, where, default), where, key)


def _eps(hf: Mapping[str, Any], key: str, where: str, default: float) -> float:
  return validate.number(validate.get(hf, key, where, default), where, key, 0.0, 1.0,
                         low_open=False)


# feed_forward_proj -> (dense_act_fn, is_gated_act) as transformers derives them.
T5_FEED_FORWARD = {"gated-gelu": ("gelu_new", True), "relu": ("relu", False)}


def t5_config_from_hf(hf: Mapping[str, Any], where: str = "config.json") -> T5Config:
  proj = validate.text(validate.get(hf, "feed_forward_proj", where, "relu"), where,
                       "feed_forward_proj")
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
  layers = _size(hf, "num_layers", "layers", where)
  return T5Config(
      vocab_size=_size(hf, "vocab_size", "vocab_size", where),
      d_model=_size(hf, "d_model", "d_model", where),
      num_heads=_size(hf, "num_heads", "heads", where),
      head_dim=_size(hf, "d_kv", "head_dim", where), d_ff=_size(hf, "d_ff", "d_ff", where),
      num_encoder_layers=layers,
      num_decoder_layers=_size(hf, "num_decoder_layers", "layers", where, layers),
      relative_buckets=_size(hf, "relative_attention_num_buckets", "relative_buckets", where,
                             32, low=2),
      relative_max_distance=_size(hf, "relative_attention_max_distance", "positions", where,
                                  128),
      norm_eps=_eps(hf, "layer_norm_epsilon", where, 1e-6),
      tie_embeddings=_t5_scales_logits(hf, where), feed_forward=proj)


def _t5_scales_logits(hf: Mapping[str, Any], where: str = "config.json") -> bool:
  """T5 v1.0 ties the output projection and rescales by d_model**-0.5; v1.1 does not.

  transformers < 5 wrote v1.1 as `tie_word_embeddings: false`; transformers 5
  writes `scale_decoder_outputs: false` and ties the lm_head of freshly built
  models to `shared` (so its tensor may be absent or equal to `shared`).
  """
  if hf.get("scale_decoder_outputs") is not None:
    return _flag(hf, "scale_decoder_outputs", where, True)
  return _flag(hf, "tie_word_embeddings", where, True)


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
  theta_key = next((f"{k}.rope_theta" for k in ("rope_parameters", "rope_scaling")
                    if "rope_theta" in (hf.get(k) or {})), "rope_theta")
  theta = rope.get("rope_theta", hf.get("rope_theta")) or 10000.0
  out: dict[str, Any] = {"rope_theta": validate.number(theta, where, theta_key)}
  if "llama3" in kinds.values():
    key = "rope_parameters" if "rope_parameters" in kinds else "rope_scaling"
    for name, field in _LLAMA3_FIELDS.items():
      if name not in rope:
        raise ConversionError(f"{where}: {key} of rope_type 'llama3' has no {name!r}")
      out[field] = validate.number(rope[name], where, f"{key}.{name}")
    if not out["rope_high_freq_factor"] > out["rope_low_freq_factor"]:
      raise validate.refuse(where, f"{key}.high_freq_factor", f"{out['rope_high_freq_factor']}"
                            f" is not above low_freq_factor {out['rope_low_freq_factor']}")
    # As transformers: a top-level original_max_position_embeddings comes first.
    name, original = "original_max_position_embeddings", hf.get("original_max_position_embeddings")
    if not original:
      name, original = f"{key}.{name}", rope.get(name)
    if not original:
      name = "max_position_embeddings"
      original = validate.get(hf, name, where)
    out.update(rope_type="llama3", rope_original_max_positions=validate.integer(
        original, where, name, "positions"))
  return out


def decoder_config_from_hf(hf: Mapping[str, Any], where: str = "config.json") -> DecoderConfig:
  """Llama (default or llama3 RoPE, optional attention_bias) and Qwen2 (q/k/v biases)."""
  for key, ok in (("hidden_act", "silu"),):
    if hf.get(key, ok) != ok:
      raise ConversionError(f"{where}: {key}={hf[key]!r}; only {ok!r} is supported")
  if _flag(hf, "mlp_bias", where, False):
    raise ConversionError(f"{where}: mlp_bias=true is not supported (zoo MLPs have no biases)")
  if _flag(hf, "use_sliding_window", where, False):
    raise ConversionError(f"{where}: use_sliding_window=true is not supported (full "
                          "attention only)")
  layer_types = validate.get(hf, "layer_types", where, [])
  if not isinstance(layer_types, list) or not all(isinstance(t, str) for t in layer_types):
    raise validate.refuse(where, "layer_types", f"{validate.show(layer_types)} is not a list "
                          "of strings")
  layer_types = set(layer_types) - {"full_attention"}
  if layer_types:
    raise ConversionError(f"{where}: layer_types has {sorted(layer_types)}; only "
                          "'full_attention' is supported")
  qwen2 = hf.get("model_type") == "qwen2" or "Qwen2ForCausalLM" in (hf.get("architectures") or [])
  llama_bias = _flag(hf, "attention_bias", where, False) and not qwen2
  vocab = _size(hf, "vocab_size", "vocab_size", where)
  d = _size(hf, "hidden_size", "d_model", where)
  heads = _size(hf, "num_attention_heads", "heads", where)
  kv_heads = _size(hf, "num_key_value_heads", "heads", where, heads)
  if heads % kv_heads:
    raise validate.refuse(where, "num_key_value_heads", f"{kv_heads} does not divide "
                          f"num_attention_heads {heads}")
  if hf.get("head_dim") is None and d % heads:
    raise validate.refuse(where, "num_attention_heads", f"{heads} does not divide hidden_size "
                          f"{d} (and there is no head_dim to say the heads' width)")
  return DecoderConfig(
      vocab_size=vocab, d_model=d, num_heads=heads, num_kv_heads=kv_heads,
      head_dim=_size(hf, "head_dim", "head_dim", where, d // heads),
      d_ff=_size(hf, "intermediate_size", "d_ff", where),
      num_layers=_size(hf, "num_hidden_layers", "layers", where),
      norm_eps=_eps(hf, "rms_norm_eps", where, 1e-6),
      tie_embeddings=_flag(hf, "tie_word_embeddings", where, False),
      qkv_bias=qwen2 or llama_bias, out_bias=llama_bias, **_rope_from_hf(hf, where))


def config_from_hf(hf: Mapping[str, Any], where: str = "config.json"):
  """The zoo config of a Hugging Face config.json (a dictionary), every size checked
  (module docstring); ConversionError naming the key otherwise."""
  if not isinstance(hf, Mapping):
    raise ConversionError(f"{where}: not a JSON object (a {type(hf).__name__})")
  archs = validate.get(hf, "architectures", where, [])
  if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
    raise validate.refuse(where, "architectures", f"{validate.show(archs)} is not a list of "
                          "strings")
  model_type = hf.get("model_type")
  if model_type is not None:
    validate.text(model_type, where, "model_type")
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
  """One Hugging Face tensor `hf`, of shape `shape`, <-> the zoo parameter at path `zoo`."""
  hf: str
  zoo: tuple[str, ...]
  to_zoo: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]
  shape: tuple[int, ...]
  fallback: Optional[str] = None  # read this tensor when `hf` is absent


def _same(hf, zoo, shape, **kw):
  return Row(hf, zoo, lambda x: x, lambda x: x, tuple(shape), **kw)


def _linear(hf, zoo, out, inp, **kw):
  """torch Linear [out, in] <-> zoo kernel [in, out]."""
  return Row(hf, zoo, lambda x: x.T, lambda x: x.T, (out, inp), **kw)


def _heads_in(hf, zoo, d, heads, head_dim):
  """[H * K, D] <-> [D, H, K] (q, k, v projections)."""
  return Row(hf, zoo, lambda x: x.T.reshape(x.shape[1], heads, head_dim),
             lambda x: x.reshape(x.shape[0], heads * head_dim).T, (heads * head_dim, d))


def _heads_out(hf, zoo, d, heads, head_dim):
  """[D, H * K] <-> [H, K, D] (output projection)."""
  return Row(hf, zoo, lambda x: x.T.reshape(heads, head_dim, x.shape[0]),
             lambda x: x.reshape(heads * head_dim, x.shape[2]).T, (d, heads * head_dim))


def _head_bias(hf, zoo, heads, head_dim):
  """[H * K] <-> [H, K]."""
  return Row(hf, zoo, lambda x: x.reshape(heads, head_dim), lambda x: x.reshape(-1),
             (heads * head_dim,))


def _attention_rows(hf, zoo, names, d, heads, kv_heads, head_dim, qkv_bias=False,
                    out_bias=False):
  q, k, v, o = (f"{hf}.{n}" for n in names)
  rows = [_heads_in(f"{q}.weight", zoo + ("query",), d, heads, head_dim),
          _heads_in(f"{k}.weight", zoo + ("key",), d, kv_heads, head_dim),
          _heads_in(f"{v}.weight", zoo + ("value",), d, kv_heads, head_dim),
          _heads_out(f"{o}.weight", zoo + ("out",), d, heads, head_dim)]
  if qkv_bias:
    rows += [_head_bias(f"{q}.bias", zoo + ("query_bias",), heads, head_dim),
             _head_bias(f"{k}.bias", zoo + ("key_bias",), kv_heads, head_dim),
             _head_bias(f"{v}.bias", zoo + ("value_bias",), kv_heads, head_dim)]
  if out_bias:
    rows.append(_same(f"{o}.bias", zoo + ("out_bias",), (d,)))
  return rows


def _mlp_rows(hf, zoo, d, d_ff, names=("wi_0", "wi_1", "wo"), zoo_names=("wi_0", "wi_1", "wo")):
  """Every projection [F, D] but the last, [D, F]."""
  return [_linear(f"{hf}.{n}.weight", zoo + (z,), *((d, d_ff) if n == names[-1] else (d_ff, d)))
          for n, z in zip(names, zoo_names)]


def _t5_mlp_rows(cfg: T5Config, hf, zoo):
  names = ("wi", "wo") if cfg.feed_forward == "relu" else ("wi_0", "wi_1", "wo")
  return _mlp_rows(f"{hf}.DenseReluDense", zoo + ("mlp",), cfg.d_model, cfg.d_ff, names, names)


def _norm(hf, zoo, d):
  return _same(hf, zoo + ("scale",), (d,))


def t5_rows(cfg: T5Config) -> list[Row]:
  d, h, k = cfg.d_model, cfg.num_heads, cfg.head_dim
  bb = ("backbone",)
  relpos = (cfg.relative_buckets, h)
  rows = [_same("shared.weight", bb + ("token_embed", "embedding"), (cfg.vocab_size, d)),
          _same("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                bb + ("encoder_relpos", "rel_embedding"), relpos),
          _same("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                bb + ("decoder_relpos", "rel_embedding"), relpos),
          _norm("encoder.final_layer_norm.weight", bb + ("encoder_norm",), d),
          _norm("decoder.final_layer_norm.weight", bb + ("decoder_norm",), d)]
  for i in range(cfg.num_encoder_layers):
    p, z = f"encoder.block.{i}.layer", bb + (f"encoder_layer_{i}",)
    rows += [_norm(f"{p}.0.layer_norm.weight", z + ("pre_attention_norm",), d),
             *_attention_rows(f"{p}.0.SelfAttention", z + ("attention",), "qkvo", d, h, h, k),
             _norm(f"{p}.1.layer_norm.weight", z + ("pre_mlp_norm",), d),
             *_t5_mlp_rows(cfg, f"{p}.1", z)]
  for i in range(cfg.num_decoder_layers):
    p, z = f"decoder.block.{i}.layer", bb + (f"decoder_layer_{i}",)
    rows += [_norm(f"{p}.0.layer_norm.weight", z + ("pre_self_attention_norm",), d),
             *_attention_rows(f"{p}.0.SelfAttention", z + ("self_attention",), "qkvo", d, h,
                              h, k),
             _norm(f"{p}.1.layer_norm.weight", z + ("pre_cross_attention_norm",), d),
             *_attention_rows(f"{p}.1.EncDecAttention", z + ("encoder_decoder_attention",),
                              "qkvo", d, h, h, k),
             _norm(f"{p}.2.layer_norm.weight", z + ("pre_mlp_norm",), d),
             *_t5_mlp_rows(cfg, f"{p}.2", z)]
  if not cfg.tie_embeddings:
    # transformers 5 may leave out an lm_head equal to `shared`.
    rows.append(_linear("lm_head.weight", ("lm_head", "kernel"), cfg.vocab_size, d,
                        fallback="shared.weight"))
  return rows


def decoder_rows(cfg: DecoderConfig) -> list[Row]:
  d = cfg.d_model
  bb = ("backbone",)
  rows = [_same("model.embed_tokens.weight", bb + ("token_embed", "embedding"),
                (cfg.vocab_size, d)),
          _norm("model.norm.weight", bb + ("final_norm",), d)]
  for i in range(cfg.num_layers):
    p, z = f"model.layers.{i}", bb + (f"layer_{i}",)
    rows += [_norm(f"{p}.input_layernorm.weight", z + ("pre_attention_norm",), d),
             *_attention_rows(f"{p}.self_attn", z + ("attention",),
                              ("q_proj", "k_proj", "v_proj", "o_proj"), d, cfg.num_heads,
                              cfg.num_kv_heads, cfg.head_dim, cfg.qkv_bias, cfg.out_bias),
             _norm(f"{p}.post_attention_layernorm.weight", z + ("pre_mlp_norm",), d),
             *_mlp_rows(f"{p}.mlp", z + ("mlp",), d, cfg.d_ff,
                        ("gate_proj", "up_proj", "down_proj"))]
  if not cfg.tie_embeddings:
    rows.append(_linear("lm_head.weight", ("lm_head", "kernel"), cfg.vocab_size, d))
  return rows


def rows_of(cfg) -> list[Row]:
  return t5_rows(cfg) if isinstance(cfg, T5Config) else decoder_rows(cfg)


def _copies(cfg) -> dict[str, tuple[int, ...]]:
  """Tensors Hugging Face may store as copies of another (tied embeddings): their shapes."""
  embedding = (cfg.vocab_size, cfg.d_model)
  tied = {"lm_head.weight": embedding} if cfg.tie_embeddings else {}
  if isinstance(cfg, T5Config):
    tied.update({"encoder.embed_tokens.weight": embedding,
                 "decoder.embed_tokens.weight": embedding})
  return tied


class _Weights:
  """Reads named tensors, checking each one's shape against its row and remembering
  which were used, so leftovers are reported."""

  def __init__(self, tensors: Mapping[str, np.ndarray], where: str):
    self.tensors = dict(tensors)
    self.used: set[str] = set()
    self.where = where

  def __call__(self, row: Row) -> np.ndarray:
    name = row.hf
    if name not in self.tensors and row.fallback in self.tensors:
      name = row.fallback
    if name not in self.tensors:
      raise ConversionError(f"{self.where}: missing tensor {name!r}")
    self.used.add(name)
    x = np.asarray(self.tensors[name], dtype=np.float32)
    if x.shape != row.shape:
      raise validate.refuse(self.where, name, f"shape {list(x.shape)}, but the config "
                            f"implies {list(row.shape)}")
    return x

  def check_all_used(self, ignore=()):
    left = sorted(k for k in self.tensors if k not in self.used and k not in ignore)
    if left:
      raise ConversionError(f"{self.where}: tensors not understood: {left[:8]}"
                            f"{' ...' if len(left) > 8 else ''}")


def params_from_hf(tensors: Mapping[str, np.ndarray], cfg, where="weights"):
  """LanguageModel params (nested dicts of float32 numpy) from HF tensors, each of
  the shape the config implies (`validate.ModelFileError` naming the tensor)."""
  w = _Weights(tensors, where)
  params: dict[str, Any] = {}
  for row in rows_of(cfg):
    *parents, leaf = row.zoo
    node = params
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = row.to_zoo(w(row))
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


def safetensors_files(hf_dir: str) -> list[str]:
  """The safetensors files of a Hugging Face directory: model.safetensors, or the
  shards model.safetensors.index.json names (plain names inside the directory)."""
  from alignment import files as files_lib  # pylint: disable=g-import-not-at-top
  single = os.path.join(hf_dir, "model.safetensors")
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  if os.path.exists(single):
    return [single]
  if not os.path.exists(index):
    raise ConversionError(f"{hf_dir}: neither model.safetensors nor "
                          "model.safetensors.index.json")
  weight_map = validate.read_json(index).get("weight_map")
  if not isinstance(weight_map, dict) or not weight_map:
    raise validate.refuse(index, "weight_map", f"{validate.show(weight_map)} is not an object "
                          "naming each tensor's file")
  shards = set()
  for name, shard in weight_map.items():
    try:  # a shard is a file beside the index, never ../ or /elsewhere
      shards.add(files_lib.check_name(shard, f"weight_map.{name}"))
    except files_lib.BadName as e:
      raise validate.ModelFileError(f"{index}: {e}") from None
  return sorted(os.path.join(hf_dir, shard) for shard in shards)


def safetensors_headers(hf_dir: str) -> dict[str, validate.Tensor]:
  """Every tensor the directory's safetensors files declare, their headers checked
  (`validate.safetensors_header`); a tensor in two shards is refused."""
  found: dict[str, validate.Tensor] = {}
  for path in safetensors_files(hf_dir):
    if not os.path.isfile(path):
      raise ConversionError(f"{path}: missing (named by model.safetensors.index.json)")
    for name, t in validate.safetensors_header(path).items():
      if name in found:
        raise validate.refuse(path, name, f"also in {found[name].path}")
      found[name] = t
  return found


def load_safetensors_dir(hf_dir: str, cfg=None) -> dict[str, np.ndarray]:
  """All tensors of a Hugging Face directory (single file or shards), as float32.

  Every header is checked first; with `cfg`, so are the tensors' names, shapes and
  dtypes against what the config implies (`validate.check_tensors`), before any
  tensor's bytes are read."""
  found = safetensors_headers(hf_dir)
  if cfg is not None:
    rows = rows_of(cfg)
    validate.check_tensors(found, {r.hf: r.shape for r in rows}, _copies(cfg),
                           {r.hf: r.fallback for r in rows if r.fallback}, "config.json",
                           hf_dir)
  return {name: validate.read_tensor(t) for name, t in found.items()}


def convert_dir(hf_dir: str):
  """(zoo config, LanguageModel params as numpy) of a Hugging Face directory."""
  config_path = os.path.join(hf_dir, "config.json")
  cfg = config_from_hf(validate.read_json(config_path), config_path)
  return cfg, params_from_hf(load_safetensors_dir(hf_dir, cfg), cfg, hf_dir)


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
    hf = validate.read_json(path)  # bounded, one line if not a JSON object
    for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
      value = hf.get(key)
      if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        value = None
      if value is not None:
        if not is_token_ids(value):
          raise ConversionError(f"{path}: {key} must be a token id or a list of them, "
                                f"not {validate.show(value)}")
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
  except validate.ModelFileError as e:  # ConversionError is one
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.output}: {cfg.architecture} d_model={cfg.d_model} "
        f"vocab={cfg.vocab_size}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

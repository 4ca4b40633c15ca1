"""Shared layers of the model zoo: one set of blocks for both architectures.

Einsum letters used in names and equations throughout `alignment.models`:

  B  batch                      L  query length      S  key length
  D  model width ("embed")      H  query heads       G  key/value heads
  R  query heads per kv head    K  head width        F  MLP hidden width
  V  vocabulary                 N  relative-position buckets

A name such as `q_blgrk` says the array's axes in order. Every parameter is
created with logical axis names (`nn.with_logical_partitioning`) and every
large activation is constrained with logical names
(`nn.with_logical_constraint`); `alignment.sharding` maps those names onto the
`data`, `fsdp` and `tensor` mesh axes from one rules table in the config.

Attention takes an optional explicit key/value cache (`KVCache`) instead of
flax's mutable "cache" collection, so that the sampler's loop carries it as an
ordinary pytree with its own sharding.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
DType = Any

# Logical names of activations. Parameters use the short names ("embed", ...).
BATCH = "activation_batch"
LENGTH = "activation_length"
EMBED = "activation_embed"
HEADS = "activation_heads"
KV = "activation_kv"
HIDDEN = "activation_mlp"
VOCAB = "activation_vocab"

NEG_INF = -1e30  # Finite so that fully masked rows give a uniform, not NaN, softmax.


def constrain(x: Array, names: tuple[Optional[str], ...]) -> Array:
  """Sharding hint for an activation; a no-op outside a mesh context."""
  return nn.with_logical_constraint(x, names)


def param_with_axes(init: Callable, names: tuple[Optional[str], ...]) -> Callable:
  return nn.with_logical_partitioning(init, names)


def _fan_in_normal(scale: float, fan_in_axes: tuple[int, ...]) -> Callable:
  """Truncation-free normal init with std = sqrt(scale / fan_in)."""

  def init(key, shape, dtype=jnp.float32):
    fan_in = int(np.prod([shape[i] for i in fan_in_axes]))
    std = np.sqrt(scale / max(fan_in, 1))
    return (jax.random.normal(key, shape, jnp.float32) * std).astype(dtype)

  return init


class RMSNorm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * scale, computed in float32 (T5 and Llama)."""

  eps: float = 1e-6
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x_bld: Array) -> Array:
    scale = self.param(
        "scale", param_with_axes(nn.initializers.ones, ("embed",)),
        (x_bld.shape[-1],), self.param_dtype)
    x = x_bld.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    return (x * scale.astype(jnp.float32)).astype(self.dtype)


class Embed(nn.Module):
  """Token embedding table [V, D]."""

  vocab_size: int
  features: int
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def setup(self):
    self.embedding = self.param(
        "embedding",
        param_with_axes(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
        (self.vocab_size, self.features), self.param_dtype)

  def __call__(self, tokens_bl: Array) -> Array:
    table = self.embedding.astype(self.dtype)
    x_bld = jnp.take(table, tokens_bl, axis=0)
    return constrain(x_bld, (BATCH, LENGTH, EMBED))

  def attend(self, x_bld: Array) -> Array:
    """Logits against the (tied) embedding table."""
    logits = jnp.einsum("bld,vd->blv", x_bld, self.embedding.astype(self.dtype))
    return constrain(logits, (BATCH, LENGTH, VOCAB))


class Unembed(nn.Module):
  """Untied output projection [D, V] (T5.1.1's lm_head, Llama's lm_head)."""

  vocab_size: int
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x_bld: Array) -> Array:
    kernel = self.param(
        "kernel", param_with_axes(_fan_in_normal(1.0, (0,)), ("embed", "vocab")),
        (x_bld.shape[-1], self.vocab_size), self.param_dtype)
    logits = jnp.einsum("bld,dv->blv", x_bld, kernel.astype(self.dtype))
    return constrain(logits, (BATCH, LENGTH, VOCAB))


class MLP(nn.Module):
  """Gated MLP: wo(act(wi_0 x) * wi_1 x); gelu (tanh) for T5.1.1, silu for Llama.
  Ungated (`gated=False`): wo(act(wi x)), original T5's relu MLP."""

  hidden: int
  activation: str = "gelu"
  gated: bool = True
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x_bld: Array) -> Array:
    d = x_bld.shape[-1]
    init = _fan_in_normal(1.0, (0,))
    # Parameters are created in a fixed order (wi_0, wi_1, wo): it sets their
    # initial values.
    wi_names = ("wi_0", "wi_1") if self.gated else ("wi",)
    wis = [self.param(name, param_with_axes(init, ("embed", "mlp")), (d, self.hidden),
                      self.param_dtype) for name in wi_names]
    wo = self.param("wo", param_with_axes(init, ("mlp", "embed")),
                    (self.hidden, d), self.param_dtype)
    act = {"gelu": lambda v: jax.nn.gelu(v, approximate=True),
           "silu": jax.nn.silu, "relu": jax.nn.relu}[self.activation]
    h_blf = act(jnp.einsum("bld,df->blf", x_bld, wis[0].astype(self.dtype)))
    if self.gated:
      h_blf = h_blf * jnp.einsum("bld,df->blf", x_bld, wis[1].astype(self.dtype))
    h_blf = constrain(h_blf, (BATCH, LENGTH, HIDDEN))
    out_bld = jnp.einsum("blf,fd->bld", h_blf, wo.astype(self.dtype))
    return constrain(out_bld, (BATCH, LENGTH, EMBED))


# --------------------------------------------------------------------------
# Positions
# --------------------------------------------------------------------------


def relative_position_bucket(relative_position: Array, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> Array:
  """T5's log-spaced relative-position buckets (memory position - query position)."""
  buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets += (relative_position > 0).astype(relative_position.dtype) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  # Guard log(0): the small branch is selected there anyway.
  log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
  large = max_exact + (log_ratio / np.log(max_distance / max_exact) *
                       (num_buckets - max_exact)).astype(relative_position.dtype)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
  """Learned per-head bias over T5 relative-position buckets: [N, H] table."""

  num_buckets: int
  max_distance: int
  num_heads: int
  bidirectional: bool
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, q_pos_bl: Array, k_pos_bs: Array) -> Array:
    """Returns bias [B, H, L, S] for query and key positions.

    Positions that are the same for every row should come with B = 1: the
    gather (and its gradient, a scatter-add) then runs once, not per row, and
    attention broadcasts the bias over the batch.
    """
    table = self.param(
        "rel_embedding",
        param_with_axes(nn.initializers.normal(stddev=1.0),
                        ("relpos_buckets", "heads")),
        (self.num_buckets, self.num_heads), self.param_dtype)
    relative = k_pos_bs[:, None, :] - q_pos_bl[:, :, None]
    bucket_bls = relative_position_bucket(relative, self.bidirectional,
                                          self.num_buckets, self.max_distance)
    bias_blsh = jnp.take(table.astype(self.dtype), bucket_bls, axis=0)
    return jnp.transpose(bias_blsh, (0, 3, 1, 2))


def rope_inv_freq(head_dim: int, theta: float,
                  llama3: Optional[tuple[float, float, float, float]] = None) -> Array:
  """RoPE's inverse frequencies [K / 2]; `llama3` = (factor, low_freq_factor,
  high_freq_factor, original_max_positions) applies Llama 3.1's scaling
  (transformers' `_compute_llama3_parameters`): wavelengths longer than
  original / low_freq_factor are stretched by `factor`, shorter than original /
  high_freq_factor kept, and those between interpolated smoothly."""
  k = head_dim
  inv_freq = 1.0 / (theta ** (jnp.arange(0, k, 2, dtype=jnp.float32) / k))
  if llama3 is None:
    return inv_freq
  factor, low, high, original = llama3
  wavelen = 2 * np.pi / inv_freq
  scaled = jnp.where(wavelen > original / low, inv_freq / factor, inv_freq)
  smooth = (original / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= original / high) & (wavelen <= original / low)
  return jnp.where(medium, smoothed, scaled)


def apply_rope(x_blhk: Array, pos_bl: Array, theta: float,
               llama3: Optional[tuple[float, float, float, float]] = None) -> Array:
  """Rotary embedding in Hugging Face Llama's rotate-half layout."""
  k = x_blhk.shape[-1]
  inv_freq = rope_inv_freq(k, theta, llama3)
  freqs_blk = pos_bl.astype(jnp.float32)[..., None] * inv_freq
  angles = jnp.concatenate([freqs_blk, freqs_blk], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x = x_blhk.astype(jnp.float32)
  half = k // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return (x * cos + rotated * sin).astype(x_blhk.dtype)


# --------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------


@flax.struct.dataclass
class KVCache:
  """Static-shape key/value cache of one attention layer.

  k_bgsk, v_bgsk: [B, G, S, K], S the cache capacity; entries past the write
  index are zero and masked by the caller's key mask. Heads come before
  length because attention's batched dots take (B, G) as leading batch
  dimensions: in this layout XLA reads the cache in place instead of
  transposing all of it at every decoding step.
  """
  k_bgsk: Array
  v_bgsk: Array

  @classmethod
  def zeros(cls, batch: int, length: int, kv_heads: int, head_dim: int,
            dtype: DType) -> "KVCache":
    shape = (batch, kv_heads, length, head_dim)
    return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


CACHE_AXES = ("cache_batch", "cache_heads", "cache_length", "cache_kv")


def constrain_cache(cache: KVCache) -> KVCache:
  return KVCache(constrain(cache.k_bgsk, CACHE_AXES), constrain(cache.v_bgsk, CACHE_AXES))


def to_cache_layout(x_bsgk: Array) -> Array:
  return jnp.transpose(x_bsgk, (0, 2, 1, 3))


def dot_product_attention(q_blhk: Array, k_bsgk: Array, v_bsgk: Array,
                          mask_bls: Optional[Array], bias_bhls: Optional[Array],
                          scale: float) -> Array:
  """Grouped-query attention; softmax in float32. Returns [B, L, H, K]."""
  b, l, h, k = q_blhk.shape
  g = k_bsgk.shape[2]
  q_blgrk = q_blhk.reshape(b, l, g, h // g, k)
  scores = jnp.einsum("blgrk,bsgk->bgrls", q_blgrk, k_bsgk).astype(jnp.float32)
  scores = scores * scale
  if bias_bhls is not None:
    s = bias_bhls.shape
    scores = scores + bias_bhls.reshape(s[0], g, h // g, s[2], s[3]).astype(jnp.float32)
  if mask_bls is not None:
    scores = jnp.where(mask_bls[:, None, None, :, :], scores, NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_bsgk.dtype)
  out_blgrk = jnp.einsum("bgrls,bsgk->blgrk", probs, v_bsgk)
  return out_blgrk.reshape(b, l, h, k)


def cached_attention(q_blhk: Array, k_bgsk: Array, v_bgsk: Array,
                     mask_bls: Optional[Array], bias_bhls: Optional[Array],
                     scale: float) -> Array:
  """`dot_product_attention` over keys/values in the cache layout [B, G, S, K]."""
  b, l, h, k = q_blhk.shape
  g = k_bgsk.shape[1]
  q_bglrk = jnp.transpose(q_blhk.reshape(b, l, g, h // g, k), (0, 2, 1, 3, 4))
  scores = jnp.einsum("bglrk,bgsk->bgrls", q_bglrk, k_bgsk).astype(jnp.float32)
  scores = scores * scale
  if bias_bhls is not None:
    s = bias_bhls.shape
    scores = scores + bias_bhls.reshape(s[0], g, h // g, s[2], s[3]).astype(jnp.float32)
  if mask_bls is not None:
    scores = jnp.where(mask_bls[:, None, None, :, :], scores, NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_bgsk.dtype)
  out_bgrlk = jnp.einsum("bgrls,bgsk->bgrlk", probs, v_bgsk)
  return jnp.transpose(out_bgrlk, (0, 3, 1, 2, 4)).reshape(b, l, h, k)


class Attention(nn.Module):
  """Multi-head / grouped-query attention with an optional explicit KV cache.

  T5 uses no query scaling (it is folded into the initialisation) and additive
  relative-position biases; Llama scales by 1/sqrt(K) and rotates q and k
  (`rope_llama3`: Llama 3.1's frequency scaling, see `rope_inv_freq`). Qwen2
  adds biases to the q, k and v projections (`qkv_bias`), Llama's
  `attention_bias` to the output projection too (`out_bias`).
  Parameters are declared in `setup` (hence the explicit `features`, the
  model width D) so that `project_kv` can run on its own: the sampler
  computes T5's cross-attention keys/values once per prompt.
  """

  num_heads: int
  num_kv_heads: int
  head_dim: int
  features: int
  scale_queries: bool = True
  rope_theta: Optional[float] = None
  rope_llama3: Optional[tuple[float, float, float, float]] = None
  qkv_bias: bool = False
  out_bias: bool = False
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def setup(self):
    def proj(name, heads, scale=1.0):
      head_axis = "heads" if heads == self.num_heads else "kv_heads"
      return self.param(name, param_with_axes(_fan_in_normal(scale, (0,)),
                                              ("embed", head_axis, "kv")),
                        (self.features, heads, self.head_dim), self.param_dtype)

    # Without query scaling (T5) the 1/sqrt(K) lives in the query's initialisation,
    # as in T5X (query kernel init divided by sqrt(head_dim)): variance / K.
    q_scale = 1.0 if self.scale_queries else 1.0 / self.head_dim
    self.query = proj("query", self.num_heads, q_scale)
    self.key = proj("key", self.num_kv_heads)
    self.value = proj("value", self.num_kv_heads)
    self.out = self.param("out", param_with_axes(_fan_in_normal(1.0, (0, 1)),
                                                 ("heads", "kv", "embed")),
                          (self.num_heads, self.head_dim, self.features), self.param_dtype)

    def bias(name, shape, axes):
      return self.param(name, param_with_axes(nn.initializers.zeros, axes), shape,
                        self.param_dtype)

    if self.qkv_bias:
      self.query_bias = bias("query_bias", (self.num_heads, self.head_dim), ("heads", "kv"))
      self.key_bias = bias("key_bias", (self.num_kv_heads, self.head_dim), ("kv_heads", "kv"))
      self.value_bias = bias("value_bias", (self.num_kv_heads, self.head_dim),
                             ("kv_heads", "kv"))
    if self.out_bias:
      self.out_bias_d = bias("out_bias", (self.features,), ("embed",))

  def _project(self, w_dhk, x_bld, b_hk=None):
    y = jnp.einsum("bld,dhk->blhk", x_bld, w_dhk.astype(self.dtype))
    if b_hk is not None:
      y = y + b_hk.astype(self.dtype)
    return constrain(y, (BATCH, LENGTH, HEADS, KV))

  def _biases(self):
    if not self.qkv_bias:
      return None, None, None
    return self.query_bias, self.key_bias, self.value_bias

  def __call__(self, x_bld: Array, kv_source_bsd: Optional[Array] = None, *,
               mask_bls: Optional[Array] = None, bias_bhls: Optional[Array] = None,
               q_pos_bl: Optional[Array] = None,
               cache: Optional[KVCache] = None, cache_index: Optional[Array] = None,
               precomputed_kv: Optional[KVCache] = None):
    """Self-attention when kv_source is None, else cross-attention.

    With `cache`, the new keys/values are written at `cache_index` (a scalar:
    the same slot for the whole batch) and attention runs over the cache;
    `mask_bls` must then be over the cache's S slots. `precomputed_kv` gives
    cross-attention keys/values computed once (the T5 encoder output).
    Returns (out_bld, new_cache or None).
    """
    q_bias, k_bias, v_bias = self._biases()
    q = self._project(self.query, x_bld, q_bias)
    scale = 1.0 / np.sqrt(self.head_dim) if self.scale_queries else 1.0
    new_cache = None
    if precomputed_kv is not None:
      out_blhk = cached_attention(q, precomputed_kv.k_bgsk.astype(self.dtype),
                                  precomputed_kv.v_bgsk.astype(self.dtype), mask_bls,
                                  bias_bhls, scale)
    else:
      source = x_bld if kv_source_bsd is None else kv_source_bsd
      k = self._project(self.key, source, k_bias)
      v = self._project(self.value, source, v_bias)
      if self.rope_theta is not None:  # Self-attention only: keys are the query tokens.
        q = apply_rope(q, q_pos_bl, self.rope_theta, self.rope_llama3)
        k = apply_rope(k, q_pos_bl, self.rope_theta, self.rope_llama3)
      if cache is None:
        out_blhk = dot_product_attention(q, k, v, mask_bls, bias_bhls, scale)
      else:
        write = lambda buf, x: jax.lax.dynamic_update_slice_in_dim(
            buf, to_cache_layout(x).astype(buf.dtype), cache_index, axis=2)
        new_cache = constrain_cache(KVCache(write(cache.k_bgsk, k), write(cache.v_bgsk, v)))
        out_blhk = cached_attention(q, new_cache.k_bgsk.astype(self.dtype),
                                    new_cache.v_bgsk.astype(self.dtype), mask_bls, bias_bhls,
                                    scale)
    out_blhk = constrain(out_blhk, (BATCH, LENGTH, HEADS, KV))
    out_bld = jnp.einsum("blhk,hkd->bld", out_blhk, self.out.astype(self.dtype))
    if self.out_bias:
      out_bld = out_bld + self.out_bias_d.astype(self.dtype)
    return constrain(out_bld, (BATCH, LENGTH, EMBED)), new_cache

  def project_kv(self, source_bsd: Array) -> KVCache:
    """Keys and values of a fixed source (cross-attention), computed once."""
    _, k_bias, v_bias = self._biases()
    return KVCache(to_cache_layout(self._project(self.key, source_bsd, k_bias)),
                   to_cache_layout(self._project(self.value, source_bsd, v_bias)))


def causal_mask(q_idx_bl: Array, k_idx_bs: Array) -> Array:
  """[B, L, S] True where key index <= query index."""
  return k_idx_bs[:, None, :] <= q_idx_bl[:, :, None]


def key_mask(k_valid_bs: Array, query_length: int) -> Array:
  """[B, L, S] True where the key is a real token (queries are not masked)."""
  k = k_valid_bs.astype(bool)[:, None, :]
  return jnp.broadcast_to(k, (k.shape[0], query_length, k.shape[2]))


def dtype_from_name(name: str) -> DType:
  try:
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
            "float16": jnp.float16}[name]
  except KeyError:
    raise ValueError(f"unknown dtype {name!r}: use float32, bfloat16 or float16") from None


def replace(config, **changes):
  return dataclasses.replace(config, **changes)

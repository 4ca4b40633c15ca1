"""T5.1.1-style encoder-decoder backbone.

Shapes use the legend of `alignment.models.layers` (B batch, L length, D model
width, H heads, K head width, F MLP width, V vocabulary). As in T5.1.1: RMSNorm
before every sub-layer, relative-position buckets shared across the layers of a
stack (computed by the first layer, as Hugging Face does), gated-GELU MLPs, no
biases, no query scaling, and untied input and output embeddings (the output
projection lives in `heads.LanguageModel`). For imported original T5 models:
ungated ReLU MLPs (`feed_forward="relu"`) and a tied output scaled by
d_model**-0.5 (`tie_embeddings=True`).

The backbone maps (prompt, response) to the decoder's final hidden states at
every response position: the decoder reads the response shifted right by one
(start token 0), so position t predicts response token t.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from alignment.models import layers as L

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class T5Config:
  vocab_size: int = 32128
  d_model: int = 512
  num_heads: int = 6
  head_dim: int = 64
  d_ff: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  relative_buckets: int = 32
  relative_max_distance: int = 128
  norm_eps: float = 1e-6
  tie_embeddings: bool = False  # T5.1.1 unties them; True means T5 v1.0 scaling.
  feed_forward: str = "gated-gelu"  # T5.1.1; "relu": original T5's ungated MLP
  dtype: str = "float32"        # activations
  param_dtype: str = "float32"
  remat: bool = False           # rematerialise each layer in the backward pass
  architecture: str = dataclasses.field(default="t5", init=False)

  def __post_init__(self):
    if self.feed_forward not in ("gated-gelu", "relu"):
      raise ValueError(f"feed_forward={self.feed_forward!r}: use 'gated-gelu' or 'relu'")

  @property
  def num_kv_heads(self) -> int:
    return self.num_heads

  @property
  def num_layers(self) -> int:
    return self.num_encoder_layers + self.num_decoder_layers


def _dtypes(cfg: T5Config):
  return dict(dtype=L.dtype_from_name(cfg.dtype),
              param_dtype=L.dtype_from_name(cfg.param_dtype))


def _mlp(cfg: T5Config, **kw):
  if cfg.feed_forward == "relu":
    return L.MLP(cfg.d_ff, "relu", gated=False, **kw, **_dtypes(cfg))
  return L.MLP(cfg.d_ff, "gelu", **kw, **_dtypes(cfg))


class EncoderLayer(nn.Module):
  cfg: T5Config

  @nn.compact
  def __call__(self, x_bld, mask_bls, bias_bhls):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    h = L.RMSNorm(cfg.norm_eps, name="pre_attention_norm", **dt)(x_bld)
    h, _ = L.Attention(cfg.num_heads, cfg.num_heads, cfg.head_dim, cfg.d_model,
                       scale_queries=False, name="attention", **dt)(
                           h, mask_bls=mask_bls, bias_bhls=bias_bhls)
    x_bld = x_bld + h
    h = L.RMSNorm(cfg.norm_eps, name="pre_mlp_norm", **dt)(x_bld)
    x_bld = x_bld + _mlp(cfg, name="mlp")(h)
    return L.constrain(x_bld, (L.BATCH, L.LENGTH, L.EMBED))


class DecoderLayer(nn.Module):
  cfg: T5Config

  def setup(self):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    self.pre_self_attention_norm = L.RMSNorm(cfg.norm_eps, **dt)
    self.self_attention = L.Attention(cfg.num_heads, cfg.num_heads, cfg.head_dim, cfg.d_model,
                                      scale_queries=False, **dt)
    self.pre_cross_attention_norm = L.RMSNorm(cfg.norm_eps, **dt)
    self.encoder_decoder_attention = L.Attention(cfg.num_heads, cfg.num_heads, cfg.head_dim,
                                                 cfg.d_model, scale_queries=False, **dt)
    self.pre_mlp_norm = L.RMSNorm(cfg.norm_eps, **dt)
    self.mlp = _mlp(cfg)

  def __call__(self, y_bld, enc_bsd, self_mask_bls, self_bias_bhls, cross_mask_bls,
               cache: Optional[L.KVCache] = None, cache_index=None,
               cross_kv: Optional[L.KVCache] = None):
    h = self.pre_self_attention_norm(y_bld)
    h, new_cache = self.self_attention(h, mask_bls=self_mask_bls, bias_bhls=self_bias_bhls,
                                       cache=cache, cache_index=cache_index)
    y_bld = y_bld + h
    h = self.pre_cross_attention_norm(y_bld)
    h, _ = self.encoder_decoder_attention(h, enc_bsd, mask_bls=cross_mask_bls,
                                          precomputed_kv=cross_kv)
    y_bld = y_bld + h
    y_bld = y_bld + self.mlp(self.pre_mlp_norm(y_bld))
    return L.constrain(y_bld, (L.BATCH, L.LENGTH, L.EMBED)), new_cache

  def cross_kv(self, enc_bsd):
    return L.constrain_cache(self.encoder_decoder_attention.project_kv(enc_bsd))


@flax.struct.dataclass
class T5DecodeState:
  """What the sampler carries between steps.

  self_caches: one KVCache [B, H, T, K] per decoder layer (T = max new tokens);
  cross_kv: per-layer encoder keys/values [B, H, Lp, K], computed once;
  prompt_mask: [B, Lp] (left or right padded, 1 = real token).
  """
  self_caches: tuple
  cross_kv: tuple
  prompt_mask: Array


class T5Backbone(nn.Module):
  """Encoder-decoder; `__call__` gives decoder hidden states over the response."""

  cfg: T5Config

  def setup(self):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    self.token_embed = L.Embed(cfg.vocab_size, cfg.d_model, **dt)
    self.encoder_relpos = L.RelativePositionBias(cfg.relative_buckets, cfg.relative_max_distance,
                                                 cfg.num_heads, bidirectional=True, **dt)
    self.decoder_relpos = L.RelativePositionBias(cfg.relative_buckets, cfg.relative_max_distance,
                                                 cfg.num_heads, bidirectional=False, **dt)
    enc_layer = nn.remat(EncoderLayer) if cfg.remat else EncoderLayer
    dec_layer = nn.remat(DecoderLayer) if cfg.remat else DecoderLayer
    self.encoder_layers = [enc_layer(cfg, name=f"encoder_layer_{i}")
                           for i in range(cfg.num_encoder_layers)]
    self.encoder_norm = L.RMSNorm(cfg.norm_eps, **dt)
    self.decoder_layers = [dec_layer(cfg, name=f"decoder_layer_{i}")
                           for i in range(cfg.num_decoder_layers)]
    self.decoder_norm = L.RMSNorm(cfg.norm_eps, **dt)

  # -- encoder -------------------------------------------------------------
  def encode(self, prompt_bl: Array, prompt_mask_bl: Array, extra_bld=None) -> Array:
    """Encoder states [B, L, D]; `extra_bld` (e.g. segment embeddings) is added to the
    token embeddings."""
    l = prompt_bl.shape[1]
    idx_1l = jnp.arange(l)[None]
    bias = self.encoder_relpos(idx_1l, idx_1l)  # [1, H, L, L]: the same for every row
    mask = L.key_mask(prompt_mask_bl, l)
    x = self.token_embed(prompt_bl)
    if extra_bld is not None:
      x = x + extra_bld.astype(x.dtype)
    for layer in self.encoder_layers:
      x = layer(x, mask, bias)
    return self.encoder_norm(x)

  # -- decoder -------------------------------------------------------------
  def __call__(self, prompt_bl, prompt_mask_bl, response_bl, response_mask_bl):
    """Decoder hidden states [B, Lr, D]; position t has read response[:t]."""
    enc = self.encode(prompt_bl, prompt_mask_bl)
    return self._decode_teacher_forced(response_bl, response_mask_bl, prompt_mask_bl, enc=enc)

  def read_encoded(self, tokens_bl: Array, mask_bl: Array, extra_bld=None) -> Array:
    """Encodes a whole input, then runs the decoder's first position (start token
    only): [B, D], the state a T5 classifier reads its answer from (as T5X's
    preference models read the token they emit)."""
    enc = self.encode(tokens_bl, mask_bl, extra_bld)
    b = tokens_bl.shape[0]
    start = jnp.zeros((b, 1), jnp.int32)
    h = self._decode_teacher_forced(start, jnp.ones((b, 1), jnp.int32), mask_bl, enc=enc)
    return h[:, 0]

  def shared_prompt(self, prompt_bl, prompt_mask_bl, response_bl, response_mask_bl):
    """`__call__` for c responses per prompt, the prompt encoded once.

    response_bl: [c * B, Lr], row j * B + i is response j of prompt i (the
    order of concatenating c response batches). Equals `__call__` on the
    prompts repeated c times (up to float rounding), but the encoder and the
    cross-attention keys/values run on B rows, not c * B: for a preference
    pair that is a quarter of the step's FLOPs at T5.1.1-small shapes.
    """
    b = prompt_bl.shape[0]
    copies, rem = divmod(response_bl.shape[0], b)
    if rem or not copies:
      raise ValueError(f"responses {response_bl.shape} are not a multiple of the "
                       f"{b} prompts")
    enc = self.encode(prompt_bl, prompt_mask_bl)
    tile = lambda x: jnp.concatenate([x] * copies, axis=0)
    cross = tuple(L.constrain_cache(jax.tree.map(tile, layer.cross_kv(enc)))
                  for layer in self.decoder_layers)
    return self._decode_teacher_forced(response_bl, response_mask_bl, tile(prompt_mask_bl),
                                       cross_kv=cross)

  def _decode_teacher_forced(self, response_bl, response_mask_bl, prompt_mask_bl, enc=None,
                             cross_kv=None):
    lr = response_bl.shape[1]
    dec_in = jnp.pad(response_bl, ((0, 0), (1, 0)))[:, :-1]  # shift right, start = 0
    dec_valid = jnp.pad(response_mask_bl, ((0, 0), (1, 0)), constant_values=1)[:, :-1]
    idx_1l = jnp.arange(lr)[None]
    self_mask = L.causal_mask(idx_1l, idx_1l) & L.key_mask(dec_valid, lr)
    bias = self.decoder_relpos(idx_1l, idx_1l)  # [1, H, Lr, Lr]
    cross_mask = L.key_mask(prompt_mask_bl, lr)
    y = self.token_embed(dec_in)
    for i, layer in enumerate(self.decoder_layers):
      y, _ = layer(y, enc, self_mask, bias, cross_mask,
                   cross_kv=None if cross_kv is None else cross_kv[i])
    return self.decoder_norm(y)

  # -- incremental decoding (the sampler) ----------------------------------
  def start_decode(self, prompt_bl, prompt_mask_bl, max_new_tokens: int,
                   cache_dtype=jnp.float32):
    """Encodes the prompt once; returns (hidden [B, 1, D] predicting token 0, state)."""
    cfg = self.cfg
    enc = self.encode(prompt_bl, prompt_mask_bl)
    b = prompt_bl.shape[0]
    cross = tuple(layer.cross_kv(enc) for layer in self.decoder_layers)
    caches = tuple(L.KVCache.zeros(b, max_new_tokens, cfg.num_heads, cfg.head_dim, cache_dtype)
                   for _ in self.decoder_layers)
    state = T5DecodeState(caches, cross, prompt_mask_bl)
    start = jnp.zeros((b,), jnp.int32)
    return self._decode_one(state, start, jnp.asarray(0, jnp.int32))

  def decode_step(self, state: T5DecodeState, token_b: Array, t: Array):
    """Feeds response token t; returns (hidden predicting token t + 1, state)."""
    return self._decode_one(state, token_b, t + 1)

  def _decode_one(self, state: T5DecodeState, token_b, index):
    b = token_b.shape[0]
    capacity = state.self_caches[0].k_bgsk.shape[2]
    q_idx = jnp.full((1, 1), index, jnp.int32)
    k_idx = jnp.arange(capacity)[None]
    self_mask = jnp.broadcast_to(L.causal_mask(q_idx, k_idx), (b, 1, capacity))
    bias = self.decoder_relpos(q_idx, k_idx)  # [1, H, 1, T]
    cross_mask = L.key_mask(state.prompt_mask, 1)
    y = self.token_embed(token_b[:, None])
    new_caches = []
    for layer, cache, cross in zip(self.decoder_layers, state.self_caches, state.cross_kv):
      y, cache = layer(y, None, self_mask, bias, cross_mask, cache=cache, cache_index=index,
                       cross_kv=cross)
      new_caches.append(cache)
    return self.decoder_norm(y), state.replace(self_caches=tuple(new_caches))

  def embed_table(self):
    return self.token_embed

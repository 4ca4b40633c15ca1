"""Llama-style decoder-only backbone.

Shapes use the legend of `alignment.models.layers`. As in Llama: RMSNorm before
each sub-layer, rotary position embeddings (Hugging Face's rotate-half layout),
SwiGLU MLPs, grouped-query attention (G key/value heads shared by H query
heads), no biases; the output projection (tied or not) is in `heads`. Options
for imported models: Llama 3.1's RoPE frequency scaling (`rope_type="llama3"`),
Qwen2's biases on the q, k, v projections (`qkv_bias`) and Llama's
`attention_bias` (q, k, v and output: `qkv_bias` and `out_bias`).

Prompt and response share one sequence: [prompt (left padded) | response
(right padded)]. Positions count real tokens only (cumsum of the mask), so the
left padding changes nothing for the model; the hidden state at index
Lp - 1 + t has read the prompt and response[:t] and predicts response token t.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from alignment.models import layers as L

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  vocab_size: int = 32000
  d_model: int = 4096
  num_heads: int = 32
  num_kv_heads: int = 8
  head_dim: int = 128
  d_ff: int = 14336
  num_layers: int = 32
  rope_theta: float = 500000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = False
  # RoPE: "default", or "llama3" with the four parameters below (Llama 3.1's
  # `rope_scaling`; ignored by "default").
  rope_type: str = "default"
  rope_factor: float = 8.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_positions: int = 8192
  qkv_bias: bool = False  # biases on the q, k, v projections (Qwen2)
  out_bias: bool = False  # and on the output projection (Llama's attention_bias)
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False
  architecture: str = dataclasses.field(default="decoder", init=False)

  def __post_init__(self):
    if self.rope_type not in ("default", "llama3"):
      raise ValueError(f"rope_type={self.rope_type!r}: use 'default' or 'llama3'")

  @property
  def rope_llama3(self):
    """(factor, low, high, original max positions) for `layers.apply_rope`, or None."""
    if self.rope_type != "llama3":
      return None
    return (float(self.rope_factor), float(self.rope_low_freq_factor),
            float(self.rope_high_freq_factor), float(self.rope_original_max_positions))


def _dtypes(cfg: DecoderConfig):
  return dict(dtype=L.dtype_from_name(cfg.dtype),
              param_dtype=L.dtype_from_name(cfg.param_dtype))


class Block(nn.Module):
  cfg: DecoderConfig

  @nn.compact
  def __call__(self, x_bld, mask_bls, pos_bl, cache=None, cache_index=None):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    h = L.RMSNorm(cfg.norm_eps, name="pre_attention_norm", **dt)(x_bld)
    h, cache = L.Attention(cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model,
                           scale_queries=True, rope_theta=cfg.rope_theta,
                           rope_llama3=cfg.rope_llama3, qkv_bias=cfg.qkv_bias,
                           out_bias=cfg.out_bias, name="attention", **dt)(
                               h, mask_bls=mask_bls, q_pos_bl=pos_bl, cache=cache,
                               cache_index=cache_index)
    x_bld = x_bld + h
    h = L.RMSNorm(cfg.norm_eps, name="pre_mlp_norm", **dt)(x_bld)
    x_bld = x_bld + L.MLP(cfg.d_ff, "silu", name="mlp", **dt)(h)
    return L.constrain(x_bld, (L.BATCH, L.LENGTH, L.EMBED)), cache


def positions_from_mask(mask_bl: Array) -> Array:
  """Position of each token among the real tokens of its row (pads repeat)."""
  return jnp.maximum(jnp.cumsum(mask_bl.astype(jnp.int32), axis=-1) - 1, 0)


@flax.struct.dataclass
class DecoderDecodeState:
  """What the sampler carries between steps.

  caches: one KVCache [B, G, Lp + T, K] per layer; key_valid: [B, Lp + T], the
  prompt mask followed by ones (slots past the write index are masked by
  causality); prompt_len: [B] real prompt tokens; prompt_width: Lp (static).
  """
  caches: tuple
  key_valid: Array
  prompt_len: Array
  prompt_width: int = flax.struct.field(pytree_node=False)


class DecoderBackbone(nn.Module):
  cfg: DecoderConfig

  def setup(self):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    self.token_embed = L.Embed(cfg.vocab_size, cfg.d_model, **dt)
    block = nn.remat(Block) if cfg.remat else Block
    self.layers = [block(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
    self.final_norm = L.RMSNorm(cfg.norm_eps, **dt)

  def hidden(self, tokens_bl, mask_bl):
    """Final hidden states [B, L, D] of a (left-padded) causal sequence."""
    b, l = tokens_bl.shape
    idx = jnp.broadcast_to(jnp.arange(l), (b, l))
    attn_mask = L.causal_mask(idx, idx) & L.key_mask(mask_bl, l)
    pos = positions_from_mask(mask_bl)
    x = self.token_embed(tokens_bl)
    for layer in self.layers:
      x, _ = layer(x, attn_mask, pos)
    return self.final_norm(x)

  def __call__(self, prompt_bl, prompt_mask_bl, response_bl, response_mask_bl):
    """Hidden states [B, Lr, D]; position t has read prompt + response[:t]."""
    lp, lr = prompt_bl.shape[1], response_bl.shape[1]
    tokens = jnp.concatenate([prompt_bl, response_bl], axis=1)
    mask = jnp.concatenate([prompt_mask_bl, response_mask_bl], axis=1)
    h = self.hidden(tokens, mask)
    return h[:, lp - 1: lp - 1 + lr]

  def shared_prompt(self, prompt_bl, prompt_mask_bl, response_bl, response_mask_bl):
    """`__call__` for c responses per prompt (rows j * B + i: response j of prompt i).

    A causal pass cannot share the prompt's positions between responses, so
    the prompt is simply repeated (T5's encoder, in contrast, runs once).
    """
    copies = response_bl.shape[0] // prompt_bl.shape[0]
    tile = lambda x: jnp.concatenate([x] * copies, axis=0)
    return self(tile(prompt_bl), tile(prompt_mask_bl), response_bl, response_mask_bl)

  # -- incremental decoding (the sampler) ----------------------------------
  def start_decode(self, prompt_bl, prompt_mask_bl, max_new_tokens: int,
                   cache_dtype=jnp.float32):
    """Prefills the prompt; returns (hidden [B, 1, D] predicting token 0, state)."""
    cfg = self.cfg
    b, lp = prompt_bl.shape
    capacity = lp + max_new_tokens
    caches = [L.KVCache.zeros(b, capacity, cfg.num_kv_heads, cfg.head_dim, cache_dtype)
              for _ in self.layers]
    key_valid = jnp.concatenate(
        [prompt_mask_bl.astype(bool), jnp.ones((b, max_new_tokens), bool)], axis=1)
    q_idx = jnp.broadcast_to(jnp.arange(lp), (b, lp))
    k_idx = jnp.broadcast_to(jnp.arange(capacity), (b, capacity))
    mask = L.causal_mask(q_idx, k_idx) & L.key_mask(key_valid, lp)
    pos = positions_from_mask(prompt_mask_bl)
    x = self.token_embed(prompt_bl)
    new_caches = []
    for layer, cache in zip(self.layers, caches):
      x, cache = layer(x, mask, pos, cache=cache, cache_index=0)
      new_caches.append(cache)
    h = self.final_norm(x[:, -1:])
    prompt_len = jnp.sum(prompt_mask_bl.astype(jnp.int32), axis=1)
    return h, DecoderDecodeState(tuple(new_caches), key_valid, prompt_len, lp)

  def decode_step(self, state: DecoderDecodeState, token_b: Array, t: Array):
    """Feeds response token t; returns (hidden predicting token t + 1, state)."""
    b = token_b.shape[0]
    index = state.prompt_width + t
    capacity = state.key_valid.shape[1]
    q_idx = jnp.full((b, 1), index)
    k_idx = jnp.broadcast_to(jnp.arange(capacity), (b, capacity))
    mask = L.causal_mask(q_idx, k_idx) & L.key_mask(state.key_valid, 1)
    pos = (state.prompt_len + t)[:, None]
    x = self.token_embed(token_b[:, None])
    new_caches = []
    for layer, cache in zip(self.layers, state.caches):
      x, cache = layer(x, mask, pos, cache=cache, cache_index=index)
      new_caches.append(cache)
    return self.final_norm(x), state.replace(caches=tuple(new_caches))

  def embed_table(self):
    return self.token_embed

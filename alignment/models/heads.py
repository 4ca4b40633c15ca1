"""The three heads every backbone of the zoo can carry.

- `LanguageModel` (the policy and the reference): logits [B, Lr, V] over the
  response, position t predicting response token t.
- `PairwisePreferenceModel`: (x, y1, y2) -> logit of P(y1 beats y2).
  T5: the whole comparison is the encoder's input, [x | y1 | y2] (each part
  padded to its slot; a learned segment embedding tells the three parts
  apart; it starts random at the token embeddings' scale, because at zero
  the model is symmetric in y1 and y2 and learns to break that slowly: on
  the tiny test task 80 steps ranked 0.38 of held-out pairs from zero and
  0.81 from the random start), so every token of either response attends to
  the post and to the other response in both directions; the logit is read
  from the decoder's first position, as T5 classifiers read their answer
  token. On the environment's SFT-sample pairs this ranks better than reading
  the responses causally in the decoder (held-out agreement 0.700 against
  0.683 with the same data and steps; README, "Choosing the default scale").
  Decoder-only: [x | y1 | y2] is one causal sequence and the logit is read just
  after y2's last real token, which has read x, y1 and all of y2.
- `RewardModel`: (x, y) -> scalar r(x, y), read just after y's last real token.

Why "just after": the backbone reads the response shifted right (position t
sees tokens < t), so the state AT the last real token has not read that token.
The decoder read-outs therefore append one padding column and read at index
length-of-the-real-prefix, whose input is the last real token.

All three keep the backbone's parameters under "backbone", so a preference
model can start from the SFT policy's weights (as the paper's PMs start from
fine-tuned T5 checkpoints): copy the subtree, initialise the small head.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alignment.models import layers as L
from alignment.models.decoder import DecoderBackbone, DecoderConfig
from alignment.models.t5 import T5Backbone, T5Config

Array = jax.Array


def make_backbone(cfg, name="backbone"):
  if isinstance(cfg, T5Config):
    return T5Backbone(cfg, name=name)
  if isinstance(cfg, DecoderConfig):
    return DecoderBackbone(cfg, name=name)
  raise TypeError(f"not a zoo backbone config: {type(cfg).__name__}")


class LanguageModel(nn.Module):
  """Policy / reference head: backbone + output projection (tied or untied)."""

  cfg: T5Config | DecoderConfig

  def setup(self):
    self.backbone = make_backbone(self.cfg)
    if not self.cfg.tie_embeddings:
      dt = dict(dtype=L.dtype_from_name(self.cfg.dtype),
                param_dtype=L.dtype_from_name(self.cfg.param_dtype))
      self.lm_head = L.Unembed(self.cfg.vocab_size, **dt)

  def logits_from_hidden(self, h_bld: Array) -> Array:
    if self.cfg.tie_embeddings:
      if self.cfg.architecture == "t5":  # T5 v1.0 rescales before the tied projection.
        h_bld = h_bld * (self.cfg.d_model ** -0.5)
      return self.backbone.token_embed.attend(h_bld)
    return self.lm_head(h_bld)

  def __call__(self, prompt_bl, prompt_mask_bl, response_bl, response_mask_bl):
    h = self.backbone(prompt_bl, prompt_mask_bl, response_bl, response_mask_bl)
    return self.logits_from_hidden(h)

  def shared_prompt_logits(self, prompt_bl, prompt_mask_bl, response_bl, response_mask_bl):
    """Logits [c * B, Lr, V] of c responses per prompt (rows j * B + i: response j of
    prompt i); T5 encodes each prompt once (`T5Backbone.shared_prompt`)."""
    h = self.backbone.shared_prompt(prompt_bl, prompt_mask_bl, response_bl, response_mask_bl)
    return self.logits_from_hidden(h)

  def start_decode(self, prompt_bl, prompt_mask_bl, max_new_tokens: int,
                   cache_dtype=jnp.float32):
    h, state = self.backbone.start_decode(prompt_bl, prompt_mask_bl, max_new_tokens,
                                          cache_dtype)
    return self.logits_from_hidden(h)[:, 0], state

  def decode_step(self, state, token_b, t):
    h, state = self.backbone.decode_step(state, token_b, t)
    return self.logits_from_hidden(h)[:, 0], state


def read_out_index(mask_bl: Array) -> Array:
  """Where a scalar head reads: one past the last real token (0 for an empty row).

  Under the shift-right of the backbones, the hidden state there is the first
  whose input is the last real token, so it has read every real token.
  """
  l = mask_bl.shape[1]
  idx = jnp.where(mask_bl.astype(bool), jnp.arange(l)[None, :], -1)
  return jnp.max(idx, axis=1) + 1


class _ScalarHead(nn.Module):
  """Backbone + Dense(D -> 1) read just after the last real response token."""

  cfg: T5Config | DecoderConfig

  def setup(self):
    self.backbone = make_backbone(self.cfg)
    self.score_head = nn.Dense(
        1, kernel_init=L.param_with_axes(nn.initializers.normal(stddev=0.01), ("embed", None)),
        bias_init=L.param_with_axes(nn.initializers.zeros, (None,)),
        dtype=jnp.float32, param_dtype=L.dtype_from_name(self.cfg.param_dtype))

  def score(self, prompt_bl, prompt_mask_bl, response_bl, response_mask_bl) -> Array:
    # One padding column, so that a response filling its slot has a position after it.
    pad = lambda x: jnp.pad(x, ((0, 0), (0, 1)))
    h = self.backbone(prompt_bl, prompt_mask_bl, pad(response_bl), pad(response_mask_bl))
    idx = read_out_index(response_mask_bl)
    h_bd = jnp.take_along_axis(h, idx[:, None, None], axis=1)[:, 0]
    return self.score_head(h_bd.astype(jnp.float32))[:, 0]


class RewardModel(_ScalarHead):
  """r(x, y): a scalar per (prompt, response)."""

  def __call__(self, prompt_bl, prompt_mask_bl, response_bl, response_mask_bl) -> Array:
    return self.score(prompt_bl, prompt_mask_bl, response_bl, response_mask_bl)


def pack_pair(y1_bl, m1_bl, y2_bl, m2_bl):
  """[y1 | y2] side by side, each keeping its own right padding."""
  return (jnp.concatenate([y1_bl, y2_bl], axis=1),
          jnp.concatenate([m1_bl, m2_bl], axis=1))


class PairwisePreferenceModel(_ScalarHead):
  """Logit of P(y1 beats y2 | x); not symmetric by construction (see judges)."""

  def setup(self):
    super().setup()
    if self.cfg.architecture == "t5":
      self.segment_embed = self.param(
          "segment_embed", L.param_with_axes(nn.initializers.normal(stddev=1.0),
                                             (None, "embed")),
          (3, self.cfg.d_model), L.dtype_from_name(self.cfg.param_dtype))

  def __call__(self, prompt_bl, prompt_mask_bl, y1_bl, m1_bl, y2_bl, m2_bl) -> Array:
    if self.cfg.architecture != "t5":
      pair, pair_mask = pack_pair(y1_bl, m1_bl, y2_bl, m2_bl)
      return self.score(prompt_bl, prompt_mask_bl, pair, pair_mask)
    tokens = jnp.concatenate([prompt_bl, y1_bl, y2_bl], axis=1)
    mask = jnp.concatenate([prompt_mask_bl, m1_bl, m2_bl], axis=1)
    segment_l = jnp.concatenate([jnp.full((prompt_bl.shape[1],), 0, jnp.int32),
                                 jnp.full((y1_bl.shape[1],), 1, jnp.int32),
                                 jnp.full((y2_bl.shape[1],), 2, jnp.int32)])
    extra_1ld = jnp.take(self.segment_embed, segment_l, axis=0)[None]
    h_bd = self.backbone.read_encoded(tokens, mask, extra_1ld)
    return self.score_head(h_bd.astype(jnp.float32))[:, 0]


HEADS = {"lm": LanguageModel, "pairwise": PairwisePreferenceModel, "reward": RewardModel}


def make_model(cfg, head: str = "lm") -> nn.Module:
  try:
    return HEADS[head](cfg)
  except KeyError:
    raise ValueError(f"unknown head {head!r}: choose one of {sorted(HEADS)}") from None


def dummy_inputs(model: nn.Module, prompt_len: int, response_len: int) -> tuple:
  """One row of zeros in the head's argument order: all `model.init` needs (shapes)."""
  p = np.zeros((1, prompt_len), np.int32)
  r = np.zeros((1, response_len), np.int32)
  return (p, p, r, r, r, r) if isinstance(model, PairwisePreferenceModel) else (p, p, r, r)


def init_fn(model: nn.Module, prompt_len: int, response_len: int):
  """rng -> the model's boxed parameters (logical axes kept), from dummy inputs."""
  args = dummy_inputs(model, prompt_len, response_len)
  return lambda rng: model.init(rng, *args)["params"]

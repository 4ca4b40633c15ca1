"""The environment's golden judge on token ids, in batches.

Training loops hold token ids (`alignment.data.batches` layouts): prompts left
padded, responses right padded and EOS-ended when they fit. `GoldenJudge`
decodes them and applies the text-level judge of `alignment.data.environment`:
  score(prompt [B, Lp], response [B, Lr])        -> g [B] float32
  preference(prompt, response_1, response_2)     -> P(y1 beats y2) [B] float32
  verdict(prompt, response_1, response_2)        -> 1 where y1 wins, else 0 (int32 [B])
A response is read up to its first EOS; one with no EOS before the first PAD or
its end was cut off by the length limit and is charged as truncated. Ids the
vocabulary does not have (a model's output layer may be wider than the
vocabulary) decode as UNK, a word that states nothing, so they cost verbosity.

Each distinct prompt is parsed once per call (online steps score two responses
per prompt). Inputs may be numpy or jax arrays; outputs are numpy.
"""
from __future__ import annotations

import numpy as np

from alignment.data import environment as env_lib
from alignment.data import vocab as vocab_lib


class GoldenJudge:
  """The programmatic golden judge g(x, y) of the embedded environment."""

  def __init__(self, vocab="sentencepiece", cfg: env_lib.EnvConfig | None = None):
    self.vocab = vocab_lib.get_vocabulary(vocab) if isinstance(vocab, str) else vocab
    self.cfg = cfg or env_lib.env_config(vocab if isinstance(vocab, str) and vocab in
                                         vocab_lib.NAMES else "sentencepiece")
    self._stop_ids = vocab_lib.sampling_ids(self.vocab)  # where a response ends (its EOS, PAD)

  def decode_prompts(self, prompt_bl, prompt_mask_bl=None) -> list[str]:
    rows = vocab_lib.strip_left_padding(np.asarray(prompt_bl), prompt_mask_bl)
    return vocab_lib.decode_batch(self.vocab, rows)

  def decode_responses(self, response_bl) -> tuple[list[str], np.ndarray]:
    """(texts up to EOS, truncated [B] bool)."""
    rows, ended = vocab_lib.cut_at_eos(np.asarray(response_bl), **self._stop_ids)
    return vocab_lib.decode_batch(self.vocab, rows), ~ended

  def score_texts(self, posts: list[str], digests: list[str],
                  truncated=None) -> np.ndarray:
    truncated = np.zeros(len(digests), bool) if truncated is None else truncated
    parsed = {}
    out = np.empty(len(digests), np.float32)
    for i, (post, digest) in enumerate(zip(posts, digests)):
      if post not in parsed:
        parsed[post] = env_lib.parse_post(post)
      out[i] = env_lib.score_digest(parsed[post], digest, bool(truncated[i]),
                                    self.cfg.weights).total
    return out

  def score(self, prompt_bl, response_bl, prompt_mask_bl=None) -> np.ndarray:
    """Golden score g [B] of each (prompt, response) row."""
    posts = self.decode_prompts(prompt_bl, prompt_mask_bl)
    digests, truncated = self.decode_responses(response_bl)
    return self.score_texts(posts, digests, truncated)

  def preference(self, prompt_bl, response_1_bl, response_2_bl,
                 prompt_mask_bl=None) -> np.ndarray:
    """P(y1 beats y2) = sigmoid((g1 - g2) / tau), [B] float32."""
    b = np.asarray(prompt_bl).shape[0]
    both = np.concatenate([np.asarray(response_1_bl), np.asarray(response_2_bl)])
    prompts = np.concatenate([np.asarray(prompt_bl)] * 2)
    masks = None if prompt_mask_bl is None else np.concatenate([np.asarray(prompt_mask_bl)] * 2)
    g = self.score(prompts, both, masks)
    return env_lib.golden_preference(g[:b], g[b:], self.cfg.tau).astype(np.float32)

  def verdict(self, prompt_bl, response_1_bl, response_2_bl, prompt_mask_bl=None) -> np.ndarray:
    """1 where y1 is preferred (P > 1/2), else 0; ties go to y2. int32 [B]."""
    p = self.preference(prompt_bl, response_1_bl, response_2_bl, prompt_mask_bl)
    return (p > 0.5).astype(np.int32)

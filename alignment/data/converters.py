"""seqio FeatureConverters: task features -> the model batches of `batches.py`.

Every model head of the zoo takes (prompt, prompt_mask, response,
response_mask) and lays them out itself, so one batch layout serves both
architectures (the converters need no architecture argument):

  prompt    [B, Lp]  LEFT padded; prompt_mask 1 on real tokens
  response  [B, Lr]  RIGHT padded, ends with EOS (seqio appended it)

  T5 (encoder_decoder): the prompt is the encoder input (padding masked, so its
    side does not matter); the response is the decoder target, read shifted
    right by one with start token 0.
  decoder-only: the model concatenates [prompt | response] into [B, Lp + Lr];
    because prompts are left padded and responses right padded, the real
    tokens are contiguous (pad.. x_1..x_n y_1..y_m ..pad) with positions
    counted from the first real token (`decoder.positions_from_mask`), and
    the loss is masked to the response. `concatenate_for_decoder` builds that
    view for code outside the zoo.

Pairs are never packed: a preference example's two responses must stay beside
their own prompt, one row each. Features longer than the requested lengths fail
seqio's length check instead of being cut silently (imported data is trimmed,
by policy, when it is imported).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import seqio

from alignment.data import batches
from alignment.data.tf_setup import tf

_Spec = seqio.FeatureConverter.FeatureSpec


def left_pad_tf(x: tf.Tensor, length: int) -> tuple[tf.Tensor, tf.Tensor]:
  """[n] -> ([length] left padded, mask). n <= length (checked by seqio)."""
  x = tf.cast(x[-length:], tf.int32)
  pad = length - tf.shape(x)[0]
  out = tf.concat([tf.fill([pad], batches.PAD_ID), x], 0)
  mask = tf.concat([tf.zeros([pad], tf.int32), tf.ones_like(x)], 0)
  out.set_shape([length])
  mask.set_shape([length])
  return out, mask


def right_pad_tf(x: tf.Tensor, length: int) -> tuple[tf.Tensor, tf.Tensor]:
  x = tf.cast(x[:length], tf.int32)
  pad = length - tf.shape(x)[0]
  out = tf.concat([x, tf.fill([pad], batches.PAD_ID)], 0)
  mask = tf.concat([tf.ones_like(x), tf.zeros([pad], tf.int32)], 0)
  out.set_shape([length])
  mask.set_shape([length])
  return out, mask


class _PaddingConverter(seqio.FeatureConverter):
  """Pads each task feature to its length: prompts on the left, responses on the right."""

  LEFT: tuple[str, ...] = ("prompt",)
  RIGHT: tuple[str, ...] = ()
  BATCH_CLS = None

  def __init__(self, pack: bool = False,
               passthrough_features: Mapping[str, _Spec] | None = None, **kwargs):
    if pack:
      raise ValueError(f"{type(self).__name__} does not pack: each row is one example")
    super().__init__(pack=False, passthrough_features=passthrough_features, **kwargs)

  def _convert_features(self, ds, task_feature_lengths):
    left, right = self.LEFT, self.RIGHT
    passthrough = tuple(self._passthrough_features)

    def convert(ex):
      out = {}
      for name in left:
        out[name], out[name + "_mask"] = left_pad_tf(ex[name], task_feature_lengths[name])
      for name in right:
        out[name], out[name + "_mask"] = right_pad_tf(ex[name], task_feature_lengths[name])
      for name in passthrough:
        out[name] = ex[name]
      return out

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def get_model_feature_lengths(self, task_feature_lengths):
    out = {}
    for name in self.LEFT + self.RIGHT:
      out[name] = out[name + "_mask"] = task_feature_lengths[name]
    for name in self._passthrough_features:
      out[name] = task_feature_lengths[name]
    return out


def _specs(names):
  return {n: _Spec(dtype=tf.int32) for n in names}


def _model_specs(names):
  return {k: _Spec(dtype=tf.int32) for n in names for k in (n, n + "_mask")}


class PromptFeatureConverter(_PaddingConverter):
  """{prompt} -> PromptBatch fields."""
  TASK_FEATURES = _specs(["prompt"])
  MODEL_FEATURES = _model_specs(["prompt"])
  BATCH_CLS = batches.PromptBatch


class SFTFeatureConverter(_PaddingConverter):
  """{prompt, response} -> SFTBatch fields."""
  RIGHT = ("response",)
  TASK_FEATURES = _specs(["prompt", "response"])
  MODEL_FEATURES = _model_specs(["prompt", "response"])
  BATCH_CLS = batches.SFTBatch


class PreferenceFeatureConverter(_PaddingConverter):
  """{prompt, chosen, rejected} -> PreferenceBatch fields (never packed)."""
  RIGHT = ("chosen", "rejected")
  TASK_FEATURES = _specs(["prompt", "chosen", "rejected"])
  MODEL_FEATURES = _model_specs(["prompt", "chosen", "rejected"])
  BATCH_CLS = batches.PreferenceBatch


CONVERTERS = {"prompts": PromptFeatureConverter, "sft": SFTFeatureConverter,
              "pairs": PreferenceFeatureConverter}


def task_feature_lengths(kind: str, prompt_length: int, response_length: int) -> dict[str, int]:
  names = CONVERTERS[kind].TASK_FEATURES
  return {n: prompt_length if n == "prompt" else response_length for n in names}


def concatenate_for_decoder(prompt_bl, prompt_mask_bl, response_bl, response_mask_bl):
  """The decoder-only view: tokens, mask, positions and loss mask over [B, Lp + Lr].

  Real tokens are contiguous; positions count from each row's first real token;
  loss_mask is 1 on response tokens only.
  """
  tokens = np.concatenate([prompt_bl, response_bl], axis=1)
  mask = np.concatenate([prompt_mask_bl, response_mask_bl], axis=1)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0) * mask
  loss_mask = np.concatenate([np.zeros_like(prompt_mask_bl), response_mask_bl], axis=1)
  return {"tokens": tokens, "mask": mask, "positions": positions, "loss_mask": loss_mask}

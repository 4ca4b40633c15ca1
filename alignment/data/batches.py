"""Typed, frozen batches: what every loop, the sampler and the judges exchange.

Token conventions (shared by the whole package; seqio's and T5's):
  PAD_ID = 0 (padding, and T5's decoder start token), EOS_ID = 1.
Layouts:
  prompts are LEFT padded to Lp, so that [prompt | response] is contiguous
  for decoder-only models (T5 reads either padding side: its attention is
  masked and its relative positions do not change under padding);
  responses are RIGHT padded to Lr and end with EOS when it fits.
Masks are int32 1 for a real token, 0 for padding. All arrays are numpy on
the host side and global jax.Arrays (batch split over `data` x `fsdp`) inside
jitted steps.
"""
from __future__ import annotations

import flax.struct
import jax
import numpy as np

PAD_ID = 0
EOS_ID = 1

Array = jax.Array | np.ndarray


@flax.struct.dataclass
class PromptBatch:
  """prompt [B, Lp] int32, left padded; prompt_mask [B, Lp]."""
  prompt: Array
  prompt_mask: Array


@flax.struct.dataclass
class SFTBatch:
  """prompt [B, Lp] left padded; response [B, Lr] right padded, ends with EOS."""
  prompt: Array
  prompt_mask: Array
  response: Array
  response_mask: Array


@flax.struct.dataclass
class PreferenceBatch:
  """A preference pair per prompt.

  prompt [B, Lp] left padded; chosen/rejected [B, Lr] right padded (EOS-ended);
  *_mask the matching masks.
  """
  prompt: Array
  prompt_mask: Array
  chosen: Array
  chosen_mask: Array
  rejected: Array
  rejected_mask: Array


@flax.struct.dataclass
class SampledPairs:
  """Two sampled responses per prompt, in sampling order (not yet judged).

  prompt [B, Lp] left padded; response_1/response_2 [B, Lr] right padded;
  *_mask the matching masks. The judge reads it, the D_online stream stores it
  with the verdict, and the verdict turns it into a PreferenceBatch.
  """
  prompt: Array
  prompt_mask: Array
  response_1: Array
  response_1_mask: Array
  response_2: Array
  response_2_mask: Array

  @property
  def prompts(self) -> PromptBatch:
    return PromptBatch(self.prompt, self.prompt_mask)

  @property
  def responses(self) -> tuple[Array, Array, Array, Array]:
    """(y1, m1, y2, m2), the judges' argument order."""
    return self.response_1, self.response_1_mask, self.response_2, self.response_2_mask


def left_pad(rows: list[list[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
  """Token lists -> ([N, length] left padded, mask). Rows longer than length are an error."""
  out = np.full((len(rows), length), PAD_ID, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    if len(r) > length:
      raise ValueError(f"row {i}: {len(r)} tokens exceed the length {length}")
    if r:
      out[i, length - len(r):] = r
      mask[i, length - len(r):] = 1
  return out, mask


def right_pad(rows: list[list[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
  """Token lists -> ([N, length] right padded, mask). Rows longer than length are an error."""
  out = np.full((len(rows), length), PAD_ID, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    if len(r) > length:
      raise ValueError(f"row {i}: {len(r)} tokens exceed the length {length}")
    out[i, :len(r)] = r
    mask[i, :len(r)] = 1
  return out, mask


def first_rows(batch, n: int = 1):
  """The first n rows of every leaf: an example for model.init."""
  return jax.tree.map(lambda x: np.asarray(x)[:n], batch)

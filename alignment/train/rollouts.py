"""Who runs an online step's phases, and when: on policy, or with parameters k steps old.

An online step is three phases (`Phases`: sample, judge, update), built by
`online.make_phases`; the judge phase hands the update a typed judgement,
`JudgedPairs` (contrastive) or `JudgedRewards` (policy gradient). `Rollouts`
runs the phases in turn, or, with `rl.staleness` = k >= 1, samples with the
parameters of k steps before (`StaleParams`) and may dispatch the next step's
sampling and judging ahead of this step's update (`rl.overlap`). The online
loop (`alignment.train.online`) and `python -m alignment.bench online` both
drive their steps through `Rollouts.step`.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from alignment import algorithms, checkpoint, sampling
from alignment.data import batches as B

log = logging.getLogger(__name__)


@flax.struct.dataclass
class JudgedPairs:
  """What the contrastive judge phase hands the update: the two samples of each
  prompt, typed (`SampledPairs` [B, ...]), and the judge's verdict on them."""
  sampled: B.SampledPairs
  verdict: algorithms.Comparison


@flax.struct.dataclass
class JudgedRewards:
  """What the policy-gradient judge phase hands the update: the sampler's k samples
  per prompt (rows i * k + j) and one reward each ([B x k] float32)."""
  out: sampling.SampleOutput
  rewards: jax.Array


Judged = JudgedPairs | JudgedRewards


@dataclasses.dataclass(frozen=True)
class Phases:
  """One online step in its three phases; the loop runs them in turn and the
  benchmark (`python -m alignment.bench online`) times each.

  sample(params, prompts, step) -> SampleOutput: rl.samples responses per prompt.
  judge(prompts, out, step) -> Judged: contrastive, `JudgedPairs` (the two samples
    of each prompt and the verdict); rloo/grpo, `JudgedRewards` (a reward per
    sample). A model judge on its own mesh is resharded to.
  update(state, judged) -> (state, metrics, batch statistics): the train step(s)
    (policy and frozen reference in one program), vetoed when a verdict or reward
    is not finite.
  """
  sample: Callable[..., sampling.SampleOutput]
  judge: Callable[..., Judged]
  update: Callable[..., tuple]


class StaleParams:
  """The policy's parameters `k` steps old, for sampling (`rl.staleness` = k).

  `record(t, params)` keeps a copy of step t's parameters (the train step
  donates its state, so they are copied) and `at(t)` hands out those of step
  max(t - k, first recorded step); the last k + 1 are kept. k = 0 keeps no copy:
  `at` hands back the recorded parameters themselves, the on-policy loop
  unchanged. `needed(t)` is what a run resumed at step t still needs of them (the
  sets of steps t - k to t - 1; a checkpoint of t saves it) and `restore` puts it
  back, so a resumed stale run samples with the parameters of an uninterrupted one.
  """

  def __init__(self, k: int):
    self.k = k
    self.history: collections.deque = collections.deque()

  def record(self, step: int, params):
    if self.k == 0:
      self.history = collections.deque([(step, params)])
      return
    self.history.append((step, jax.tree.map(jnp.copy, params)))
    while len(self.history) > self.k + 1:
      self.history.popleft()

  def at(self, step: int):
    """(parameters to sample step `step` with, the step they are from)."""
    for s, params in self.history:
      if s >= step - self.k:
        return params, s
    raise ValueError(f"step {step}: parameters of step >= {step - self.k} were not recorded")

  def needed(self, step: int) -> tuple[list[int], list]:
    """(steps, parameter sets) recorded before `step` that sampling from `step` on
    still reads: those of steps >= step - k."""
    kept = [(s, p) for s, p in self.history if step - self.k <= s < step]
    return [s for s, _ in kept], [p for _, p in kept]

  def restore(self, entries: list[tuple[int, object]]):
    """The history of a resumed run: `needed`'s entries, as a checkpoint kept them."""
    self.history = collections.deque(entries)


@dataclasses.dataclass
class Rollout:
  """One step's prompts, samples and judgement (None until judged), and how long the
  loop waited for them."""
  step: int
  batch: B.PromptBatch
  out: sampling.SampleOutput
  sampling_step: int
  judged: Judged | None = None
  waited_sample: float = 0.0
  waited_judge: float = 0.0


class Rollouts:
  """Sampling and judging for the online loop, one step ahead when it may be.

  On policy (`rl.staleness` = 0) step t samples with the parameters step t's
  update starts from, so it waits for step t - 1's update. With staleness k >= 1
  step t + 1's parameters (those of step t + 1 - k) exist before step t's update
  runs; with `rl.overlap` the loop then dispatches step t + 1's sampling before
  step t's update and its judging right after: a device runs its programs in
  turn, but a judge on its own mesh (`roles.proxy_pm`) or on the host (the
  golden judge) works on step t + 1 while the policy's devices run step t's
  update, and the host's bookkeeping of step t (metrics, D_online, checkpoint
  saves) runs while the device samples. The samples, verdicts and updates are
  those of the loop without the overlap, bit for bit (the same parameters,
  prompts and keys; tests/train/test_train.py).

  `step(t, state, num_steps)` runs step t in that order (the loop and `bench
  online` both call it); `data_state()` -> the prompt iterator's position after
  step t's batch (what a checkpoint at t + 1 must resume from, whatever was
  drawn ahead).
  """

  def __init__(self, phases: Phases, prompts, staleness: int, overlap: bool):
    self.phases, self.prompts = phases, prompts
    self.stale = StaleParams(staleness)
    self.overlap = overlap and staleness > 0
    self._ahead: Rollout | None = None
    self._data_state = None

  def step(self, step: int, state, num_steps: int):
    """Step `step`: its rollout (sampled and judged now, or ahead), the next step's
    sampling dispatched (with the overlap), the update, the next step's judging.
    Returns (Rollout, state, metrics, batch statistics)."""
    r = self._current(step, state.params)
    if self.overlap and step + 1 < num_steps:  # before this update
      self._ahead = self._draw(step + 1)
    state, metrics, batch_stats = self.phases.update(state, r.judged)
    if self._ahead is not None:
      self._ahead.judged = self.phases.judge(self._ahead.batch, self._ahead.out,
                                             self._ahead.step)
    return r, state, metrics, batch_stats

  def data_state(self) -> dict:
    return self._data_state

  def _draw(self, step: int) -> Rollout:
    """The next batch, its sampling dispatched with step `step`'s parameters."""
    batch = next(self.prompts)
    sample_params, sampling_step = self.stale.at(step)
    return Rollout(step, batch, self.phases.sample(sample_params, batch, step), sampling_step)

  def _current(self, step: int, params) -> Rollout:
    t0 = time.perf_counter()
    self.stale.record(step, params)
    ahead, self._ahead = self._ahead, None
    r = ahead if ahead is not None and ahead.step == step else self._draw(step)
    self._data_state = self.prompts.get_state()
    jax.block_until_ready(r.out.tokens)
    t1 = time.perf_counter()
    if r.judged is None:
      r.judged = self.phases.judge(r.batch, r.out, step)
    jax.block_until_ready(r.judged)
    r.waited_sample, r.waited_judge = t1 - t0, time.perf_counter() - t1
    return r


def restore_stale_params(stale: StaleParams, ckpt, start: int, params) -> None:
  """The parameter history of the checkpoint a stale run resumes from (step `start`),
  restored into the sharding of `params`. A checkpoint saved without one (by an
  earlier version) resumes as before, with a warning: its first k steps sample with
  the resumed, fresher parameters."""
  entries = ckpt.restore_history(start, checkpoint.abstract_like(params))
  if entries is None:
    log.warning("%s/%d holds no parameter history (saved before stale runs kept one): "
                "steps %d to %d sample with fresher parameters than an uninterrupted run",
                ckpt.directory, start, start, start + stale.k - 1)
    return
  stale.restore(entries)

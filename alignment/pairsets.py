"""Pair sets a study trains and evaluates on, written as pair-set directories.

A pair-set directory has the D_online stream's format (`alignment.data.stream`:
prompt, response_1, response_2, verdict = 1 where response_1 is the golden
winner, golden scores as extras), so the offline loop replays it
(`data.replay_dir`), the preference-model loop trains on it (`data.replay_dir`)
and evaluation reads held-out pairs from it (`eval.pairs_dir`). Kinds:

  sft     two samples of the SFT policy per prompt (temperature 1), labelled by
          the golden judge: D_golden as the paper describes it, "SFT vs SFT"
  writer  the environment's writer pairs (its train split): responses no policy
          of the study wrote (an ablation: a proxy trained only on them cannot
          rank the policy's own samples)
  mixed   one SFT sample and one writer response per prompt
  policy  two samples of another policy (H2: the online policy at its peak or end)
  gap     the half of a pair set whose two golden scores differ most (section 6)

A written pair set can be read back (`read`) and RELABELLED by a preference
model (`Maker.relabelled`: the attribution's offline arm, D_golden's SFT samples
with the proxy PM's verdicts); its golden scores stay as they were, so the
summary says how often the new labels agree with the golden judge.

Labels (`labels`): "argmax" makes the response with the higher golden score the
winner; "sample" draws the winner with the golden probability sigmoid((g1 -
g2) / tau). A golden tie carries no preference and is never given to one side:
for sampled pairs the second response is redrawn (`redraws` times, fresh keys)
and a pair still tied is dropped; tied writer pairs are dropped.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil

import jax
import numpy as np

from alignment import faults, judges, sampling
from alignment.data import batches as B
from alignment.data import pipeline, stream
from alignment.data import environment as env_lib
from alignment.data import vocab as vocab_lib

LABELS = ("argmax", "sample")


@dataclasses.dataclass
class Pairs:
  """Host arrays of n pairs: prompts [n, Lp] (left padded), responses [n, Lr]
  (right padded), golden scores g1, g2 [n]."""
  prompt: np.ndarray
  prompt_mask: np.ndarray
  y1: np.ndarray
  m1: np.ndarray
  y2: np.ndarray
  m2: np.ndarray
  g1: np.ndarray
  g2: np.ndarray

  def __len__(self) -> int:
    return self.prompt.shape[0]

  def take(self, rows) -> "Pairs":
    return Pairs(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})


class PolicySampler:
  """Samples responses of a params export in fixed-size batches (host numpy out).

  A response ends at the vocabulary's stop ids (`vocab.sampling_ids`: its EOS and a
  chat template's end-of-turn token) and at every EOS id `export` records
  (`sampling.with_model_eos`), as the online loop's and the evaluation's do."""

  def __init__(self, model, params, mesh, rules, response_len: int, vocab,
               batch_size: int, temperature: float = 1.0, export: str = ""):
    self.params, self.batch = params, batch_size
    self.sampler = sampling.Sampler(model, sampling.SamplingConfig(
        max_new_tokens=response_len, temperature=temperature, vocab_size=vocab.vocab_size,
        **sampling.with_model_eos(vocab_lib.sampling_ids(vocab), export)), mesh, rules)

  def __call__(self, prompt: np.ndarray, prompt_mask: np.ndarray, key) -> tuple:
    tokens, masks = [], []
    n = prompt.shape[0]
    for i, start in enumerate(range(0, n, self.batch)):
      rows = slice(start, min(start + self.batch, n))
      batch = B.PromptBatch(prompt[rows], prompt_mask[rows])
      if jax.process_count() > 1:  # JAX refuses numpy for a sharded input there, even
        batch = jax.device_put(batch, self.sampler.out_sharding.prompt)  # on own devices
      out = self.sampler(self.params, batch, jax.random.fold_in(key, i))
      t, m = jax.device_get((out.tokens, out.mask))
      tokens.append(np.asarray(t))
      masks.append(np.asarray(m))
    return np.concatenate(tokens), np.concatenate(masks)


def _check_batch(n: int, batch: int, what: str):
  if n % batch:
    raise ValueError(f"{what}: {n} prompts is not a multiple of the sampling batch {batch}")


def sample_pairs(policy: PolicySampler, golden, prompts: B.PromptBatch,
                 seed: int, redraws: int = 4) -> tuple[Pairs, np.ndarray]:
  """Two samples per prompt, golden-scored; tied second samples redrawn.

  `golden` is any judge with `pair_scores`: the environment's program
  (`judges.GoldenJudge`) or a golden PM (`judges.ModelGoldenJudge`, whose scores
  are of the pair, so a redrawn pair is scored again as a whole).

  Returns (pairs, tied [n] bool: still tied after the redraws, to be dropped).
  """
  key = jax.random.PRNGKey(seed)
  p, pm = np.asarray(prompts.prompt), np.asarray(prompts.prompt_mask)
  y1, m1 = policy(p, pm, jax.random.fold_in(key, 0))
  y2, m2 = policy(p, pm, jax.random.fold_in(key, 1))
  g1, g2 = golden.pair_scores(prompts, y1, m1, y2, m2)
  for r in range(redraws):
    rows = np.flatnonzero(g1 == g2)
    if not rows.size:
      break
    # Only the tied rows, padded to whole sampling batches with copies of the first.
    padded = np.r_[rows, np.full((-rows.size) % policy.batch, rows[0])]
    y, m = policy(p[padded], pm[padded], jax.random.fold_in(key, 2 + r))
    y, m = y[:rows.size], m[:rows.size]
    g1[rows], g2[rows] = golden.pair_scores(B.PromptBatch(p[rows], pm[rows]), y1[rows],
                                            m1[rows], y, m)
    y2[rows], m2[rows] = y, m
  return Pairs(p, pm, y1, m1, y2, m2, g1, g2), g1 == g2


def mixed_pairs(policy: PolicySampler, golden: judges.GoldenJudge, writer: Pairs, seed: int,
                redraws: int = 4) -> tuple[Pairs, np.ndarray]:
  """One sample of `policy` and one of the two writer responses (a fair coin) per
  writer prompt, golden-scored; a tied sample is redrawn. Returns (pairs, tied)."""
  key = jax.random.PRNGKey(seed)
  prompts = B.PromptBatch(writer.prompt, writer.prompt_mask)
  coin = np.random.default_rng(seed).random(len(writer)) < 0.5
  pick = lambda a, b: np.where(coin.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
  y2, m2, g2 = pick(writer.y1, writer.y2), pick(writer.m1, writer.m2), pick(writer.g1, writer.g2)
  y1, m1 = policy(writer.prompt, writer.prompt_mask, jax.random.fold_in(key, 0))
  g1 = golden.scores(prompts, y1)
  for r in range(redraws):
    rows = np.flatnonzero(g1 == g2)
    if not rows.size:
      break
    padded = np.r_[rows, np.full((-rows.size) % policy.batch, rows[0])]
    y, m = policy(writer.prompt[padded], writer.prompt_mask[padded],
                  jax.random.fold_in(key, 1 + r))
    y1[rows], m1[rows] = y[:rows.size], m[:rows.size]
    g1[rows] = golden.scores(B.PromptBatch(writer.prompt[rows], writer.prompt_mask[rows]),
                             y1[rows])
  return Pairs(writer.prompt, writer.prompt_mask, y1, m1, y2, m2, g1, g2), g1 == g2


def label(pairs: Pairs, labels: str, tau: float, seed: int) -> np.ndarray:
  """1 where response 1 is the winner: by the golden argmax, or drawn with the golden
  probability. Pairs must be untied."""
  if labels == "argmax":
    return (pairs.g1 > pairs.g2).astype(np.int32)
  if labels == "sample":
    prob = env_lib.golden_preference(pairs.g1.astype(np.float64), pairs.g2.astype(np.float64),
                                     tau)
    return (np.random.default_rng(seed).random(len(pairs)) < prob).astype(np.int32)
  raise ValueError(f"labels={labels!r}: choose one of {LABELS}")


def writer_pairs(task: str, split: str, num: int, prompt_len: int,
                 response_len: int) -> tuple[Pairs, np.ndarray]:
  """The first `num` writer pairs of a task (response_1 = the record's response a)."""
  records = pipeline.load_records(task, split, "pairs", prompt_len, response_len,
                                  passthrough=golden_passthrough(), process_index=0,
                                  process_count=1)
  have = len(records["prompt"])
  if have < num:
    raise ValueError(f"{task}/{split}: {have} pairs, {num} requested")
  r = {k: v[:num] for k, v in records.items()}
  # chosen/rejected -> (a, b): the record's a is the chosen one where golden_a >= golden_b.
  a_first = r["golden_a"] >= r["golden_b"]
  pick = lambda x, y: np.where(a_first[:, None], x, y)
  pairs = Pairs(r["prompt"], r["prompt_mask"], pick(r["chosen"], r["rejected"]),
                pick(r["chosen_mask"], r["rejected_mask"]), pick(r["rejected"], r["chosen"]),
                pick(r["rejected_mask"], r["chosen_mask"]), r["golden_a"], r["golden_b"])
  return pairs, r["golden_a"] == r["golden_b"]


def read(directory: str) -> Pairs:
  """A written pair-set directory back as Pairs (every row, in written order; the
  golden scores from its extras)."""
  rec = stream.read_stream(directory, process_index=0, process_count=1)
  for k in ("extra/golden_1", "extra/golden_2"):
    if k not in rec:
      raise ValueError(f"{directory}: a pair set written without golden scores ({k})")
  return Pairs(rec["prompt"], rec["prompt_mask"], rec["response_1"], rec["response_1_mask"],
               rec["response_2"], rec["response_2_mask"],
               rec["extra/golden_1"].astype(np.float32), rec["extra/golden_2"].astype(np.float32))


def golden_passthrough():
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = seqio.FeatureConverter.FeatureSpec(dtype=tf.float32, rank=0)
  return {"golden_a": spec, "golden_b": spec}


def widest_gap(pairs: Pairs, num: int) -> Pairs:
  """The `num` pairs whose golden scores differ most (kept in their original order)."""
  gap = np.abs(pairs.g1 - pairs.g2)
  keep = np.sort(np.argsort(-gap, kind="stable")[:num])
  return pairs.take(keep)


def keep_untied(pairs: Pairs, tied: np.ndarray, num: int, what: str) -> Pairs:
  """The first `num` untied pairs; a clear error if the ties left fewer."""
  kept = pairs.take(np.flatnonzero(~tied)[:num])
  if len(kept) < num:
    raise ValueError(f"{what}: only {len(kept)} of {len(pairs)} pairs are untied after the "
                     f"redraws; {num} are needed (more prompts, or fewer pairs)")
  return kept


def write(out_dir: str, pairs: Pairs, verdict: np.ndarray, batch_size: int, vocab,
          extras: dict | None = None) -> dict:
  """Writes the pairs as a pair-set directory (whole batches; under a temporary name,
  renamed when complete). Returns a summary."""
  faults.hit("pairs", os.path.basename(out_dir))  # fault injection (tests only)
  n = len(pairs) // batch_size * batch_size
  if n == 0:
    raise ValueError(f"{out_dir}: {len(pairs)} pairs make no batch of {batch_size}")
  extras = {"golden_1": pairs.g1.astype(np.float32), "golden_2": pairs.g2.astype(np.float32),
            **(extras or {})}
  tmp = out_dir + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  writer = stream.StreamWriter(tmp, global_batch_size=batch_size,
                               prompt_length=pairs.prompt.shape[1],
                               response_length=pairs.y1.shape[1],
                               vocab=vocab_lib.vocabulary_name(vocab),
                               extras=tuple(sorted(extras)), resume_step=0,
                               process_index=0, process_count=1)  # all rows: one writer
  for step, start in enumerate(range(0, n, batch_size)):
    rows = slice(start, start + batch_size)
    writer.write(step, pairs.prompt[rows], pairs.prompt_mask[rows], pairs.y1[rows],
                 pairs.m1[rows], pairs.y2[rows], pairs.m2[rows], verdict[rows],
                 extras={k: v[rows] for k, v in extras.items()})
  writer.close()
  shutil.rmtree(out_dir, ignore_errors=True)
  os.rename(tmp, out_dir)
  winner = np.where(verdict[:n] == 1, pairs.g1[:n], pairs.g2[:n])
  loser = np.where(verdict[:n] == 1, pairs.g2[:n], pairs.g1[:n])
  lengths = lambda m: m[:n].sum(1)
  return {"pairs": int(n), "mean_golden": float(np.mean(np.r_[pairs.g1[:n], pairs.g2[:n]])),
          "mean_golden_gap": float(np.mean(np.abs(pairs.g1[:n] - pairs.g2[:n]))),
          "golden_winner_is_label": float(np.mean(winner >= loser)),
          "longer_is_chosen": float(np.mean(
              (np.where(verdict[:n] == 1, lengths(pairs.m1), lengths(pairs.m2)) >
               np.where(verdict[:n] == 1, lengths(pairs.m2), lengths(pairs.m1)))[
                   lengths(pairs.m1) != lengths(pairs.m2)]))}


# ---------------------------------------------------------------------------
# Making a study's pair sets: a policy's samples or the writer's pairs, labelled
# by the golden judge and written as a pair-set directory
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Recipe:
  """What a study's pair sets are made from and how.

  config: an experiment config whose `mesh` and `data` sections (lengths) the
  sampling uses; prompts_task / pairs_task: the prompts and the writer's pairs;
  golden_export: "" for the environment's program, else a golden PM's export.
  """
  config: object
  prompts_task: str
  pairs_task: str
  golden_export: str
  labels: str
  batch_size: int     # the written set's batch (the offline runs' batch size)
  sample_batch: int   # prompts per sampling call
  tie_redraws: int
  tie_slack: float    # extra prompts sampled to make up for dropped ties


def local_mesh_shape(shape: dict, devices: int) -> dict:
  """A config's mesh shape for the `devices` of one process: the shape itself where
  it fits them (always in a single process); else tensor, then fsdp, cut to the
  largest number dividing both its size and the devices left to it, the rest
  data-parallel (a 16-chip slice's fsdp=8 on a host of 4 chips: fsdp=4)."""
  from alignment import sharding  # pylint: disable=g-import-not-at-top
  try:
    sharding.resolve_mesh_shape(shape, devices)
    return dict(shape)
  except sharding.MeshError:
    pass
  size = lambda a: devices if shape.get(a, 1) == -1 else max(int(shape.get(a, 1)), 1)
  tensor = math.gcd(size("tensor"), devices)
  fsdp = math.gcd(size("fsdp"), devices // tensor)
  return {"data": -1, "fsdp": fsdp, "tensor": tensor}


class Maker:
  """Samples, labels and writes pair sets for a study stage (one host set-up each)."""

  def __init__(self, recipe: Recipe):
    from alignment import distributed, sharding  # pylint: disable=g-import-not-at-top
    from alignment.data import tasks  # pylint: disable=g-import-not-at-top
    self.r, c = recipe, recipe.config
    distributed.setup_host()
    # One process samples a pair set (in a multi-process study, process 0 while the
    # others wait): its own devices, never the other processes'.
    self.rules = sharding.rules_from_config(c.mesh.rules)
    self.mesh = sharding.make_mesh(local_mesh_shape(
        {a: c.mesh[a] for a in sharding.MESH_AXES}, jax.local_device_count()),
                                   jax.local_devices())
    self.vocab = tasks.task_vocabulary(recipe.prompts_task)
    self.golden = judges.load_golden_judge(recipe.golden_export, self.vocab, c.data, self.mesh,
                                           self.rules)

  def policy(self, export: str) -> PolicySampler:
    from alignment.models import zoo  # pylint: disable=g-import-not-at-top
    model, params = zoo.load_export(export, "lm", self.r.config.data, self.mesh, self.rules)
    return PolicySampler(model, params, self.mesh, self.rules, self.r.config.data.response_len,
                         self.vocab, self.r.sample_batch, export=export)

  def prompts(self, split: str, num: int) -> B.PromptBatch:
    """Enough prompts of `split` for `num` untied pairs, in whole sampling batches."""
    b, d = self.r.sample_batch, self.r.config.data
    count = -(-int(num * (1 + self.r.tie_slack)) // b) * b
    return pipeline.fixed_batch(self.r.prompts_task, split, "prompts", count,
                                prompt_length=d.prompt_len, response_length=d.response_len)

  def sampled(self, policy: PolicySampler, split: str, num: int, seed: int, what: str) -> Pairs:
    """`num` untied pairs of two samples of `policy` per prompt of `split`."""
    pairs, tied = sample_pairs(policy, self.golden, self.prompts(split, num), seed,
                               self.r.tie_redraws)
    return keep_untied(pairs, tied, num, what)

  def of_kind(self, kind: str, sft_export: str, num: int, seed: int) -> Pairs:
    """`num` train pairs of a kind: sft, writer, mixed or gap (module docstring)."""
    if kind == "sft":
      return self.sampled(self.policy(sft_export), "train", num, seed, "D_golden")
    count = 2 * num if kind == "gap" else num
    d = self.r.config.data
    writer, tied = writer_pairs(self.r.pairs_task, "train", int(count * (1 + self.r.tie_slack)),
                                d.prompt_len, d.response_len)
    if kind == "writer":
      return keep_untied(writer, tied, num, "writer pairs")
    if kind == "gap":
      return widest_gap(keep_untied(writer, tied, count, "writer pairs"), num)
    if kind == "mixed":
      policy, b = self.policy(sft_export), self.r.sample_batch
      n = -(-len(writer) // b) * b
      writer = writer.take(np.arange(n) % len(writer))  # whole sampling batches
      pairs, tied = mixed_pairs(policy, self.golden, writer, seed, self.r.tie_redraws)
      return keep_untied(pairs, tied, num, "mixed pairs")
    raise ValueError(f"pair-set kind {kind!r}: choose sft, writer, mixed or gap")

  def relabelled(self, pairs_dir: str, judge_export: str, out_dir: str) -> dict:
    """The pair set of `pairs_dir` with a pairwise preference model's verdicts (asked
    both ways, `judges.ModelJudge`) in place of the golden labels, written to
    `out_dir`; the summary's golden_winner_is_label is the new labels' agreement
    with the golden judge on these pairs."""
    pairs = read(pairs_dir)
    judge = judges.ModelGoldenJudge(judges.load_model_judge(
        judge_export, self.r.config.data, self.mesh, self.rules), judge_export,
                                    batch_size=self.r.sample_batch)
    verdict = np.asarray(judge.compare(B.PromptBatch(pairs.prompt, pairs.prompt_mask), pairs.y1,
                                       pairs.m1, pairs.y2, pairs.m2).first_wins, np.int32)
    return {**write(out_dir, pairs, verdict, self.r.batch_size, self.vocab),
            "labelled_by": "model", "label_export": judge_export, "relabelled": pairs_dir}

  def write(self, out_dir: str, pairs: Pairs, seed: int) -> dict:
    """Labels the pairs by the golden judge's scores and writes them; the summary names
    the judge that labelled them."""
    verdict = label(pairs, self.r.labels, self.golden.tau, seed)
    return {**write(out_dir, pairs, verdict, self.r.batch_size, self.vocab),
            "labelled_by": self.golden.kind, "golden_export": getattr(self.golden, "export", "")}

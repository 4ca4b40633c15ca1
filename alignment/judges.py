"""Judges: who says which of two responses is better. One interface, two kinds.

    judge.compare(prompts: PromptBatch, y1, y1_mask, y2, y2_mask) -> Comparison
    judge.compare_pairs(pairs: SampledPairs) -> Comparison     (the same, typed)
    Comparison.prob_first  [B] float32  P(y1 beats y2), debiased
    Comparison.first_wins  [B] bool     the verdict: y1 is the winner

- `GoldenJudge`: the embedded environment's programmatic judge g(x, y) (a
  program on decoded text, run on the host): P = sigmoid((g1 - g2) / tau).
  With several processes each judges the rows its devices hold (the program
  is per row, so the verdicts equal a single process's).
- `RewardJudge`: a Bradley-Terry scalar reward model r(x, y):
  P = sigmoid(r1 - r2); its `rewards` feed policy-gradient RL.
- `NoisyGoldenJudge`: the golden program with each verdict flipped independently
  with probability `judge.flip_rate` (a judge of known quality whose errors are
  noise, not exploitable: the judge-quality axis of the study). A pair's flip is
  a hash of its content and `judge.flip_seed` (`pair_flips`), so a resumed run
  flips the same pairs, and a swapped pair gets the same flip (antisymmetric).
- `ModelGoldenJudge`: a golden PM (a `ModelJudge` trained on rater labels) in
  the golden judge's place, where a study starts from real data
  (`eval.golden_checkpoint`, `judge.golden_checkpoint`, configs/study.py:real).
- `ModelJudge`: a trained pairwise preference model (the proxy PM, or a
  golden PM trained on real human labels). It is not symmetric by
  construction, so it is asked both ways and the verdict is
      sign(r(x, y1, y2) - r(x, y2, y1)),
  which cancels any preference for a position that an online policy could
  otherwise exploit; the debiased probability is sigmoid((r12 - r21) / 2),
  the mean of the two orders' logits. Swapping y1 and y2 flips the verdict
  exactly (the difference changes sign), apart from exact ties, which go to
  y2 in both kinds.

Model judges run jitted on the mesh and return device arrays (an online step
never leaves the device for them); the golden judge returns numpy arrays.

`build(judge_section, ...)` is the judge a config's `judge` section names (the
online loop's); `load_model_judge` and `load_golden_judge` load one kind.
"""
from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from alignment import algorithms, programs, sharding
from alignment import config as config_lib
from alignment.data import batches as B
from alignment.models import heads, zoo

Array = jax.Array


class ModelJudge:
  """A pairwise preference model asked both ways (see the module docstring)."""

  kind = "model"

  def __init__(self, model: heads.PairwisePreferenceModel, params, mesh, rules):
    self.model, self.params, self.mesh, self.rules = model, params, mesh, rules
    # One program per model, mesh and rules in a process: a study's next stage that
    # loads the same PM again (its proxy, its golden PM) reuses it compiled.
    self._compare = programs.shared(_compare_program, model, mesh, rules)

  def compare(self, prompts: B.PromptBatch, y1, y1_mask, y2, y2_mask) -> algorithms.Comparison:
    with sharding.use(self.mesh, self.rules):
      return self._compare(self.params, prompts.prompt, prompts.prompt_mask, y1, y1_mask,
                           y2, y2_mask)

  def compare_pairs(self, pairs: B.SampledPairs) -> algorithms.Comparison:
    return self.compare(pairs.prompts, *pairs.responses)

  def compare_fn(self):
    """The pure function (params, prompt, prompt_mask, y1, m1, y2, m2) -> Comparison."""
    return self._compare


def _compare_program(model, mesh, rules):
  """The jitted (params, prompt, prompt_mask, y1, m1, y2, m2) -> Comparison of a pairwise
  PM: both orders in one forward call, debiased. mesh and rules are the sharding
  context it is traced in (`ModelJudge.compare`)."""
  del mesh, rules

  def compare(params, prompt, prompt_mask, y1, m1, y2, m2):
    both = lambda a, b: jnp.concatenate([a, b], 0)
    r = model.apply({"params": params}, both(prompt, prompt), both(prompt_mask, prompt_mask),
                    both(y1, y2), both(m1, m2), both(y2, y1), both(m2, m1))
    n = prompt.shape[0]
    return algorithms.debiased(r[:n], r[n:])

  return jax.jit(compare)


def _reward_program(model, mesh, rules):
  """The jitted (params, x, x_mask, y, y_mask) -> [B] rewards of a reward model."""
  del mesh, rules
  return jax.jit(lambda p, x, xm, y, m: model.apply({"params": p}, x, xm, y, m))


class RewardJudge:
  """A Bradley-Terry scalar reward model r(x, y) behind the judge interface:
  P(y1 beats y2) = sigmoid(r1 - r2), y1 wins iff r1 > r2 (antisymmetric by
  construction: no need to ask both ways). `rewards` gives r itself, for
  policy-gradient RL."""

  kind = "model"

  def __init__(self, model: heads.RewardModel, params, mesh, rules):
    self.model, self.params, self.mesh, self.rules = model, params, mesh, rules
    self._rewards = programs.shared(_reward_program, model, mesh, rules)

  def rewards(self, prompts: B.PromptBatch, y, y_mask):
    """[B] float32 r(x, y)."""
    with sharding.use(self.mesh, self.rules):
      return self._rewards(self.params, prompts.prompt, prompts.prompt_mask, y, y_mask)

  def compare(self, prompts: B.PromptBatch, y1, y1_mask, y2, y2_mask) -> algorithms.Comparison:
    diff = self.rewards(prompts, y1, y1_mask) - self.rewards(prompts, y2, y2_mask)
    return algorithms.Comparison(prob_first=jax.nn.sigmoid(diff), first_wins=diff > 0)

  def compare_pairs(self, pairs: B.SampledPairs) -> algorithms.Comparison:
    return self.compare(pairs.prompts, *pairs.responses)


class GoldenJudge:
  """The environment's program g(x, y), behind the judge interface (host side)."""

  kind = "golden"

  def __init__(self, vocab):
    from alignment.data import golden  # pylint: disable=g-import-not-at-top
    self.program = golden.GoldenJudge(vocab)

  def scores(self, prompts: B.PromptBatch, y) -> np.ndarray:
    return self.program.score(np.asarray(prompts.prompt), np.asarray(y),
                              np.asarray(prompts.prompt_mask))

  def rewards(self, prompts: B.PromptBatch, y, y_mask):
    """[B] golden scores g(x, y) as rewards (the golden-policy reference of RL);
    with several processes each scores its rows, like `compare`."""
    from alignment import distributed  # pylint: disable=g-import-not-at-top
    del y_mask  # read up to EOS
    rows = distributed.local_rows
    g = self.program.score(rows(prompts.prompt), rows(y), rows(prompts.prompt_mask))
    return distributed.rows_to_global(np.asarray(g, np.float32), y)

  def compare(self, prompts: B.PromptBatch, y1, y1_mask, y2, y2_mask) -> algorithms.Comparison:
    """numpy verdicts; with several processes, each judges the rows it holds and the
    verdicts are global arrays split over the batch like y1 (no gather)."""
    from alignment import distributed  # pylint: disable=g-import-not-at-top
    del y1_mask, y2_mask  # responses are read up to EOS
    rows = distributed.local_rows
    p = self.program.preference(rows(prompts.prompt), rows(y1), rows(y2),
                                rows(prompts.prompt_mask))
    return algorithms.Comparison(prob_first=distributed.rows_to_global(np.asarray(p), y1),
                      first_wins=distributed.rows_to_global(np.asarray(p) > 0.5, y1))

  def compare_pairs(self, pairs: B.SampledPairs) -> algorithms.Comparison:
    return self.compare(pairs.prompts, *pairs.responses)

  @property
  def tau(self) -> float:
    """The temperature of P = sigmoid((g1 - g2) / tau)."""
    return float(self.program.cfg.tau)

  def pair_scores(self, prompts: B.PromptBatch, y1, m1, y2, m2):
    """(g1, g2) [n] numpy: the program's scores of each response."""
    del m1, m2
    return (np.asarray(self.scores(prompts, y1), np.float32),
            np.asarray(self.scores(prompts, y2), np.float32))


def _content(tokens, mask, i: int) -> bytes:
  """Row i's tokens where its mask is set (all of them without a mask), as int32 bytes:
  what the row says, whatever its padding and integer width."""
  row = np.asarray(tokens[i])
  if mask is not None:
    row = row[np.asarray(mask[i], bool)]
  return np.ascontiguousarray(row, np.int32).tobytes()


def pair_flips(prompt, prompt_mask, y1, m1, y2, m2, rate: float, seed: int) -> np.ndarray:
  """[n] bool: the noisy golden judge flips row i's verdict where u_i < rate, u_i in
  [0, 1) from a hash (blake2b) of `seed`, the prompt's tokens and the two responses'
  tokens (each up to its mask). The two responses enter as an UNORDERED pair (their
  digests sorted), so (y1, y2) and (y2, y1) get the same flip and the noisy judge stays
  antisymmetric; the flips depend on nothing else (no call counter), so a resumed run
  or a re-evaluation flips exactly the same pairs. Independent pairs flip
  independently with probability `rate`."""
  n = np.asarray(y1).shape[0]
  if rate <= 0:
    return np.zeros(n, bool)
  digest = lambda b: hashlib.blake2b(b, digest_size=16).digest()
  key = f"noisy-golden\0{int(seed)}\0".encode()
  u = np.empty(n, np.float64)
  for i in range(n):
    a, b = sorted((digest(_content(y1, m1, i)), digest(_content(y2, m2, i))))
    h = hashlib.blake2b(key + digest(_content(prompt, prompt_mask, i)) + a + b,
                        digest_size=8).digest()
    u[i] = int.from_bytes(h, "little") / 2.0**64
  return u < rate


class NoisyGoldenJudge:
  """The golden program whose verdicts are flipped independently with probability
  `flip_rate` (`pair_flips`): a flipped pair's prob_first is 1 - P and its verdict
  the other response (an exact golden tie, P = 1/2, stays a tie: it goes to y2 both
  ways, as the golden judge's). It has no `rewards` and no `pair_scores`: policy-
  gradient RL asks it pair by pair (noisy), and pair sets are labelled by the
  noiseless judge. Host numpy, like the golden judge; with several processes each
  flips the rows it holds (the flips are per row, so they equal a single process's)."""

  kind = "golden"

  def __init__(self, vocab, flip_rate: float, flip_seed: int = 0,
               golden: "GoldenJudge | None" = None):
    self.golden = golden if golden is not None else GoldenJudge(vocab)
    self.flip_rate, self.flip_seed = float(flip_rate), int(flip_seed)

  @property
  def tau(self) -> float:
    return self.golden.tau

  def flips(self, prompts: B.PromptBatch, y1, y1_mask, y2, y2_mask) -> np.ndarray:
    """[n] bool: which of these pairs' verdicts it flips (host rows)."""
    return pair_flips(prompts.prompt, prompts.prompt_mask, y1, y1_mask, y2, y2_mask,
                      self.flip_rate, self.flip_seed)

  def compare(self, prompts: B.PromptBatch, y1, y1_mask, y2, y2_mask) -> algorithms.Comparison:
    from alignment import distributed  # pylint: disable=g-import-not-at-top
    rows = distributed.local_rows
    local = [rows(x) if x is not None else None
             for x in (prompts.prompt, prompts.prompt_mask, y1, y1_mask, y2, y2_mask)]
    p = np.asarray(self.golden.program.preference(local[0], local[2], local[4], local[1]))
    flip = pair_flips(*local, self.flip_rate, self.flip_seed)
    p = np.where(flip, 1 - p, p).astype(p.dtype)
    return algorithms.Comparison(prob_first=distributed.rows_to_global(p, y1),
                                 first_wins=distributed.rows_to_global(p > 0.5, y1))

  def compare_pairs(self, pairs: B.SampledPairs) -> algorithms.Comparison:
    return self.compare(pairs.prompts, *pairs.responses)


class ModelGoldenJudge:
  """A golden PM (a pairwise PM trained on rater labels) in the golden judge's place.

  A pairwise model has no score per response, only per pair, so its `pair_scores`
  are (l / 2, -l / 2) with l = logit P(y1 beats y2) of the model asked both ways
  (`ModelJudge`): with tau = 1, sigmoid((g1 - g2) / tau) is that probability and
  g1 > g2 its verdict, which is all a pair set's labels and the win rates read.
  Host numpy in and out, in fixed-size chunks (one compilation).
  """

  kind = "golden_model"
  tau = 1.0

  def __init__(self, judge: ModelJudge, export: str, batch_size: int = 64):
    self.judge, self.export, self.batch = judge, export, batch_size
    self.mesh = judge.mesh

  def compare(self, prompts: B.PromptBatch, y1, y1_mask, y2, y2_mask) -> algorithms.Comparison:
    n = np.asarray(prompts.prompt).shape[0]
    pad = np.r_[np.arange(n), np.zeros((-n) % self.batch, np.int64)]
    arrays = [np.asarray(a)[pad] for a in (prompts.prompt, prompts.prompt_mask, y1, y1_mask,
                                          y2, y2_mask)]
    probs = []
    for start in range(0, len(pad), self.batch):
      p, pm, a, am, b, bm = (x[start:start + self.batch] for x in arrays)
      c = self.judge.compare(B.PromptBatch(p, pm), a, am, b, bm)
      probs.append(np.asarray(jax.device_get(c.prob_first), np.float64))
    prob = np.concatenate(probs)[:n]
    return algorithms.Comparison(prob_first=prob, first_wins=prob > 0.5)

  def compare_pairs(self, pairs: B.SampledPairs) -> algorithms.Comparison:
    return self.compare(pairs.prompts, *pairs.responses)

  def pair_scores(self, prompts: B.PromptBatch, y1, m1, y2, m2):
    prob = np.clip(self.compare(prompts, y1, m1, y2, m2).prob_first, 1e-12, 1 - 1e-12)
    logit = np.log(prob) - np.log1p(-prob)
    return (logit / 2).astype(np.float32), (-logit / 2).astype(np.float32)


def build(judge_section, data_section, vocab, mesh, rules):
  """The judge of a config's `judge` section: the proxy PM (kind "proxy", asked both
  ways) or a reward model ("reward") from `judge.checkpoint`, or the golden judge
  ("golden": the environment's program, or a golden PM's export with
  `judge.golden_checkpoint`, asked both ways; with `judge.flip_rate` > 0 the program
  with that share of its verdicts flipped, `NoisyGoldenJudge`). A model judge runs on
  `mesh`, the proxy PM's role mesh (the caller picks it: roles are the training
  runtime's).
  """
  kind = judge_section.kind
  flip = check_flip_rate(judge_section)
  if flip:
    return NoisyGoldenJudge(vocab, flip, judge_section.get("flip_seed", 0))
  if kind in ("proxy", "reward"):
    if not judge_section.checkpoint:
      raise config_lib.ConfigError(f"config.judge.checkpoint: the {kind} model's export is "
                                   f"required with judge.kind={kind!r}")
    return load_model_judge(judge_section.checkpoint, data_section, mesh, rules,
                            head="reward" if kind == "reward" else "pairwise")
  if kind == "golden" and judge_section.get("golden_checkpoint", ""):
    # A golden PM trained on rater labels (real data): a model judge asked both ways.
    return load_model_judge(judge_section.golden_checkpoint, data_section, mesh, rules)
  if kind == "golden":
    return GoldenJudge(vocab)
  raise config_lib.ConfigError(f"config.judge.kind={kind!r}: choose proxy, reward or golden")


def check_flip_rate(judge_section) -> float:
  """`judge.flip_rate` (0.0 where the section has none): in [0, 0.5), and above 0 only
  for the golden program (kind "golden", no golden_checkpoint). ConfigError naming
  the key otherwise."""
  rate = judge_section.get("flip_rate", 0.0)
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 0.5:
    raise config_lib.ConfigError(f"config.judge.flip_rate={rate!r}: a probability in [0, 0.5) "
                                 "(0: the golden judge itself)")
  if rate and (judge_section.kind != "golden" or judge_section.get("golden_checkpoint", "")):
    raise config_lib.ConfigError(
        f"config.judge.flip_rate={rate}: only the golden program's verdicts are flipped "
        f"(judge.kind='golden' without judge.golden_checkpoint; not kind "
        f"{judge_section.kind!r}" + (", a golden PM" if judge_section.get(
            "golden_checkpoint", "") else "") + ")")
  return float(rate)


def load_golden_judge(export: str, vocab, data_section, mesh, rules):
  """The golden judge: the environment's program, or with `export` a golden PM's
  export (`ModelGoldenJudge`)."""
  if not export:
    return GoldenJudge(vocab)
  return ModelGoldenJudge(load_model_judge(export, data_section, mesh, rules), export)


def load_model_judge(path: str, data_section, mesh, rules, head: str = "pairwise"):
  """A `ModelJudge` from a pairwise preference model's export (head "pairwise"), or
  a `RewardJudge` from a Bradley-Terry reward model's (head "reward")."""
  model, params = zoo.load_export(path, head, data_section, mesh, rules)
  if head == "reward":
    return RewardJudge(model, params, mesh, rules)
  return ModelJudge(model, params, mesh, rules)

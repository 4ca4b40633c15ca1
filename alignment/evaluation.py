"""Evaluation: the numbers a budget curve is made of (docs/study.md, "Evaluation").

For a policy pi, its SFT start pi_sft, a fixed reference policy (SFT unless
given), the golden judge and optionally the proxy PM:

  kl                   exact KL(pi || pi_sft): one response sampled from pi
                       for each of `kl_prompts` train prompts (256 in the
                       paper); at every response token the KL between the full
                       next-token distributions; summed over tokens; averaged
                       over prompts (`scoring.exact_kl`).
  golden_win_rate      pi against the reference policy on `win_prompts`
                       deterministic eval prompts (2048 in the paper), one
                       sample each: the mean golden probability
                       P(y_pi beats y_ref) = sigmoid((g_pi - g_ref) / tau).
  golden_win_rate_se   its standard error over the prompts.
  golden_win_rate_hard the fraction with g_pi > g_ref (ties count 1/2).
  proxy_win_rate       the same pairs judged by the proxy PM (debiased), the
                       quantity the policy is optimised against (mean probability;
                       proxy_win_rate_hard: the fraction of verdicts for pi).
                       The proxy's metrics use the first `proxy_prompts` win
                       prompts (all by default).
  proxy_golden_agreement on pairs of TWO samples of pi for each win prompt (what
                       online training asks the proxy), the fraction where the
                       proxy's verdict is the golden judge's (golden ties left
                       out): the proxy's accuracy on the policy's own samples.
                       At the SFT point it is the study's set-up gate (a proxy
                       near 0.5 there gives the policy nothing to follow); it
                       falls as online training drifts (the paper's Figs. 6-7).
  proxy_golden_agreement_vs_reference  the same on the (pi, reference) pairs.
  classifier_accuracy  policy as classifier on `classifier_pairs` held-out
                       D_golden pairs: f = log[pi(y1)/pi(y2)] -
                       log[pi_sft(y1)/pi_sft(y2)] with y1 the golden winner;
                       accuracy = fraction with f > 0 (ties count 1/2).
  chosen_logprob_delta mean log pi(y_w) - log pi_sft(y_w) on those pairs.
  mean_response_length mean tokens (EOS included) of pi's samples.
  golden_score         mean g of pi's samples (and of the reference's). With a golden
                       PM (`eval.golden_checkpoint`: real data, configs/study.py:real)
                       g is per pair, not per response: g = +-logit P(pi beats the
                       reference) / 2 (judges.ModelGoldenJudge), so only the win rates
                       and the agreement mean what they mean with the program.

`Evaluator.evaluate` also returns the per-prompt and per-pair values behind
each mean (`save_arrays` writes them beside a run's metrics), from which the
study computes its intervals (`alignment.stats`). `evaluate_with_samples` adds
what the policy wrote for the first `eval.samples` win prompts (3 in the shipped
configs; 0: none): the prompt's text, the response's (the very sample the win
rate scored, read up to its EOS, which is left out) and its golden score g
(`save_samples` writes them as <workdir>/eval/step_N_samples.json; a study's
report shows them, docs/study.md).

Everything fixed across evaluations (prompts, pairs, the reference policy's
samples and their golden scores) is built once by `Evaluator`, so a loop can
evaluate every few steps cheaply; sampling keys are fixed, so two evaluations
of the same parameters give identical numbers.

    python -m alignment.main --config=configs/eval.py:tiny --workdir=DIR \\
        --config.eval.policy=RUN/checkpoints --config.eval.sft=SFT/export
evaluates every checkpoint of a run (or one export) and writes
DIR/evaluation.json.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import jax
import numpy as np

from alignment import algorithms, checkpoint, distributed, files, judges, layout, sampling
from alignment import config as config_lib
from alignment import faults, programs, scoring, sharding, timing
from alignment.data import batches as B
from alignment.data import pipeline, stream, tasks
from alignment.data import vocab as vocab_lib
from alignment.models import zoo

Array = jax.Array


def _scorers(model, mesh, rules):
  """(kl(p, q, batch), seq(p, batch)) jitted: exact KL to a reference per row, and a
  response's summed log-prob. One pair per model, mesh and rules in a process
  (`programs.shared`), so the evaluator of a study's next stage reuses them traced
  and compiled; mesh and rules are the context they are traced in (`Evaluator._run`)."""
  return programs.shared(_make_scorers, model, mesh, rules)


def _make_scorers(model, mesh, rules):
  del mesh, rules  # the context the scorers are traced in: part of the key only
  return (jax.jit(lambda p, q, b: scoring.kl_to_reference(model, p, q, b)),
          jax.jit(lambda p, b: scoring.score(model, p, b)["sum"]))


# An evaluator's fixed parts (the reference's samples and golden scores, the SFT
# policy's pair log-probs), kept for the study's stages that share them. Every process
# of a run asks with equal keys in the same order, so all of them compute (a collective
# sampler) or none does. 8 entries: a study's stages share one or two references.
_REMEMBERED = programs.Memo(8, read_only=True)


def forget() -> None:
  """Drops what the evaluators remembered (tests that count what one computes)."""
  _REMEMBERED.clear()


def _arrays_id(tree) -> str:
  """A digest of every host array of a tree (shapes, dtypes and bytes)."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{a.shape}{a.dtype}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _fingerprint(golden) -> Optional[tuple]:
  """What a golden judge's per-response scores depend on: the program's weights and the
  vocabulary it decodes with; None (never remembered) for any other judge."""
  if type(golden) is not judges.GoldenJudge:  # pylint: disable=unidiomatic-typecheck
    return None
  program = golden.program
  return ("golden-program", repr(program.cfg),
          json.dumps(vocab_lib.token_record(program.vocab), sort_keys=True))


def _chunks(n: int, size: int):
  for start in range(0, n, size):
    yield slice(start, min(start + size, n))


class Evaluator:
  """Evaluates policy parameters against fixed prompts, pairs and a reference policy.

  Args:
    model: the policy's `heads.LanguageModel` (the SFT model has the same).
    sft_params: pi_sft's parameters (KL and classifier baseline).
    mesh, rules: where to run.
    golden: a `judges.GoldenJudge` (or a ModelJudge acting as golden).
    cfg: the `eval` config section (kl_prompts, win_prompts, classifier_pairs,
      batch_size, temperature, seed).
    data: the `data` config section (prompt/response lengths; tasks below).
    prompts_task, pairs_task: seqio tasks of prompts and of golden pairs (the pairs
      come from `cfg.pairs_dir`, a pair-set directory, when that is set).
    proxy: an optional `judges.ModelJudge` for the proxy win rate.
    reference_params: the win-rate reference policy (default: sft_params).
    vocab_size: the vocabulary's size: the sampler never draws ids past it.
    reference_model: the reference's model when it is not the policy's (another size:
      a study's H5 measures every size against one reference policy).
    tokens: the vocabulary's record (`vocab.token_record`) for `eval.save_params` exports.
    sampling_ids: the vocabulary's EOS and PAD for the sampler (`vocab.sampling_ids`,
      with the EOS ids the reference export records: `sampling.with_model_eos`;
      default the package's 1 and 0).
    vocab: the prompts' vocabulary, which decodes the shown samples (`eval.samples`;
      default the prompts task's).
  """

  def __init__(self, model, sft_params, mesh, rules, golden, cfg, data, prompts_task: str,
               pairs_task: str, proxy: Optional[judges.ModelJudge] = None,
               reference_params=None, vocab_size: Optional[int] = None,
               reference_model=None, tokens: Optional[dict] = None,
               sampling_ids: Optional[dict] = None, vocab=None):
    self.tokens = tokens  # the vocabulary's record, kept with `eval.save_params` exports
    sampling_ids = sampling_ids or {}
    self.model, self.sft_params, self.mesh, self.rules = model, sft_params, mesh, rules
    self.golden, self.proxy, self.cfg = golden, proxy, cfg
    self.batch = int(cfg.batch_size)
    lp, lr = data.prompt_len, data.response_len
    self.kl_prompts = pipeline.fixed_batch(prompts_task, "train", "prompts", cfg.kl_prompts,
                                           prompt_length=lp, response_length=lr)
    self.win_prompts = pipeline.fixed_batch(prompts_task, "eval", "prompts", cfg.win_prompts,
                                            prompt_length=lp, response_length=lr)
    if cfg.get("pairs_dir", ""):  # held-out pairs written by a study (D_golden of SFT samples)
      self.pairs = stream.fixed_pairs(cfg.pairs_dir, cfg.classifier_pairs)
    else:
      self.pairs = pipeline.fixed_batch(pairs_task, "validation", "pairs",
                                        cfg.classifier_pairs, prompt_length=lp,
                                        response_length=lr)
    # The proxy's metrics on the first `proxy_prompts` win prompts (0: all of them): a
    # pairwise PM asked both ways costs more than the rest of an evaluation.
    self.proxy_prompts = int(cfg.get("proxy_prompts", 0) or cfg.win_prompts)
    self.sampler = sampling.Sampler(
        model, sampling.SamplingConfig(max_new_tokens=lr, temperature=float(cfg.temperature),
                                       vocab_size=vocab_size, **sampling_ids),
        mesh, rules)
    self._kl, self._seq = _scorers(model, mesh, rules)
    self._kl_fn = lambda p, b: self._kl(p, self.sft_params, b)
    ref = sft_params if reference_params is None else reference_params
    ref_sampler = None
    if reference_model is not None and reference_model.cfg != model.cfg:
      ref_sampler = sampling.Sampler(reference_model, self.sampler.config, mesh, rules)
    # What every evaluation compares with is computed once, and once per process for a
    # study's stages that share it (`_REMEMBERED`: keyed on the parameters' checksums
    # and everything else it is computed from, so equal keys give equal arrays).
    place = (self.batch, mesh, rules, jax.process_count())
    ref_model_cfg = (reference_model if ref_sampler is not None else model).cfg
    win_id = _arrays_id(self.win_prompts)
    sft_sum = checkpoint.tree_checksum(sft_params)  # a pass over the weights: once
    ref_sum = sft_sum if ref is sft_params else checkpoint.tree_checksum(ref)
    self.ref_samples = _REMEMBERED.get(
        ("ref_samples", ref_sum, ref_model_cfg, self.sampler.config,
         win_id, int(cfg.seed), *place),
        lambda: self._sample(ref, self.win_prompts, salt=1, sampler=ref_sampler))
    # A program scores each response: the reference's scores are computed once. A golden
    # PM scores pairs, so each evaluation asks it about (pi's sample, the reference's).
    self.ref_golden = None
    if hasattr(self.golden, "scores"):
      judge = _fingerprint(self.golden)
      self.ref_golden = _REMEMBERED.get(
          judge and ("ref_golden", judge, win_id, _arrays_id(self.ref_samples)),
          lambda: self._golden_scores(self.win_prompts, self.ref_samples))
    self._sft_pair_logps = _REMEMBERED.get(
        ("pair_logps", sft_sum, model.cfg,
         _arrays_id(self.pairs), *place),
        lambda: self._pair_logps(sft_params))
    # What the policy writes for the first `eval.samples` win prompts: their texts now,
    # each evaluation's responses to them and golden scores with its numbers.
    n_shown = _num_shown(cfg)
    self.vocab, self.shown_prompts = vocab, []
    if n_shown:
      self.vocab = vocab if vocab is not None else tasks.task_vocabulary(prompts_task)
      self.shown_prompts = vocab_lib.decode_batch(self.vocab, vocab_lib.strip_left_padding(
          self.win_prompts.prompt[:n_shown], self.win_prompts.prompt_mask[:n_shown]))

  # -- pieces ----------------------------------------------------------------
  def _key(self, salt: int):
    return jax.random.fold_in(jax.random.PRNGKey(int(self.cfg.seed)), salt)

  def _sample(self, params, prompts: B.PromptBatch, salt: int, sampler=None) -> dict:
    """Responses (numpy) of `params` for every prompt, in fixed-size chunks."""
    outs = []
    n = prompts.prompt.shape[0]
    for i, rows in enumerate(_chunks(n, self.batch)):
      part = self._global(B.PromptBatch(prompts.prompt[rows], prompts.prompt_mask[rows]))
      out = (sampler or self.sampler)(params, part, jax.random.fold_in(self._key(salt), i))
      outs.append(distributed.to_host((out.tokens, out.mask)))
    return {"tokens": np.concatenate([o[0] for o in outs]),
            "mask": np.concatenate([o[1] for o in outs])}

  def _golden_scores(self, prompts: B.PromptBatch, samples: dict) -> np.ndarray:
    return np.asarray(self.golden.scores(prompts, samples["tokens"]), np.float32)

  def _golden_vs(self, prompts: B.PromptBatch, a: dict, b: Optional[dict] = None):
    """(g_a, g_b) [n]: golden scores of samples a and b (None: the reference's) such
    that sigmoid((g_a - g_b) / tau) is the golden P(a beats b), for either judge."""
    if self.ref_golden is not None:
      n = a["tokens"].shape[0]
      gb = self.ref_golden[:n] if b is None else self._golden_scores(prompts, b)
      return self._golden_scores(prompts, a), gb
    b = self.ref_samples if b is None else b
    n = a["tokens"].shape[0]
    b = {k: v[:n] for k, v in b.items()}
    return self.golden.pair_scores(prompts, a["tokens"], a["mask"], b["tokens"], b["mask"])

  def _global(self, batch, mesh=None):
    """Host numpy rows (every process holds them all) as global arrays split over the
    batch of `mesh` (default the policy's); unchanged in a single process."""
    return distributed.host_to_global(
        batch, sharding.batch_sharding(mesh or self.mesh, self.rules, 2))

  def _run(self, fn, params, *args):
    with sharding.use(self.mesh, self.rules):
      return distributed.to_host(fn(params, *(self._global(a) for a in args)))

  def _pair_logps(self, params) -> tuple[np.ndarray, np.ndarray]:
    chosen, rejected = [], []
    n = self.pairs.prompt.shape[0]
    for rows in _chunks(n, self.batch):
      p = self.pairs
      chosen.append(self._run(self._seq, params, B.SFTBatch(
          p.prompt[rows], p.prompt_mask[rows], p.chosen[rows], p.chosen_mask[rows])))
      rejected.append(self._run(self._seq, params, B.SFTBatch(
          p.prompt[rows], p.prompt_mask[rows], p.rejected[rows], p.rejected_mask[rows])))
    return np.concatenate(chosen), np.concatenate(rejected)

  # -- the metrics -------------------------------------------------------------
  def kl_per_prompt(self, params) -> np.ndarray:
    """Exact KL(pi || pi_sft) of one sample per KL prompt, [kl_prompts]."""
    samples = self._sample(params, self.kl_prompts, salt=2)
    faults.hit("evaluation")  # fault injection (tests only): mid-evaluation
    kls = []
    for rows in _chunks(samples["tokens"].shape[0], self.batch):
      batch = B.SFTBatch(self.kl_prompts.prompt[rows], self.kl_prompts.prompt_mask[rows],
                         samples["tokens"][rows], samples["mask"][rows])
      kls.append(self._run(self._kl_fn, params, batch))
    return np.concatenate(kls).astype(np.float64)

  def kl(self, params) -> float:
    return float(np.mean(self.kl_per_prompt(params)))

  def _proxy_compare(self, y1: dict, y2: dict) -> tuple[np.ndarray, np.ndarray]:
    """The proxy's debiased (P(y1 wins), y1 wins) on the first rows of the win prompts
    (as many as y1 has: the proxy's metrics use `proxy_prompts` of them)."""
    probs, wins = [], []
    for rows in _chunks(y1["tokens"].shape[0], self.batch):
      prompts = B.PromptBatch(self.win_prompts.prompt[rows], self.win_prompts.prompt_mask[rows])
      c = self.proxy.compare(*self._global((
          prompts, y1["tokens"][rows], y1["mask"][rows], y2["tokens"][rows], y2["mask"][rows]),
          self.proxy.mesh))
      probs.append(distributed.to_host(c.prob_first))
      wins.append(distributed.to_host(c.first_wins))
    return np.concatenate(probs), np.concatenate(wins).astype(bool)

  def _shown(self, samples: dict, g: np.ndarray) -> list[dict]:
    """What the policy wrote for the shown prompts: each one's text, the response's
    text (up to its EOS, left out), its golden score g and whether it ended at an EOS
    (else the length limit cut it)."""
    n = len(self.shown_prompts)
    rows, ended = _response_ids(samples["tokens"][:n], samples["mask"][:n],
                                self.sampler.config.eos_id)
    texts = vocab_lib.decode_batch(self.vocab, rows)
    return [{"prompt": p, "response": t, "golden_score": float(s), "ended_at_eos": e}
            for p, t, s, e in zip(self.shown_prompts, texts, g[:n], ended)]

  def __call__(self, params) -> dict:
    return self.evaluate(params)[0]

  def evaluate(self, params) -> tuple[dict, dict]:
    """(metrics, arrays): the means, and the per-prompt / per-pair values they are
    means of (what the study's intervals resample):
      golden_win [P] soft win against the reference; golden_score [P]; length [P];
      kl [K]; agreement [P] 1/0 where the proxy agrees with the golden judge on two
      samples of pi, NaN where golden ties (with a proxy); classifier [Q] 1, 0 or
      1/2; chosen_delta [Q] log pi(y_w) - log pi_sft(y_w).
    """
    metrics, arrays, _ = self.evaluate_with_samples(params)
    return metrics, arrays

  @timing.timed("evaluation")
  def evaluate_with_samples(self, params) -> tuple[dict, dict, list[dict]]:
    """(metrics, arrays, shown): `evaluate`'s, and what the policy wrote for the first
    `eval.samples` win prompts ({prompt, response, golden_score, ended_at_eos} each):
    the samples the win rate scored, decoded; nothing more is sampled."""
    samples = self._sample(params, self.win_prompts, salt=3)
    g, g_ref = self._golden_vs(self.win_prompts, samples)
    shown = self._shown(samples, g)
    tau = self.golden.tau
    win_soft = algorithms.soft_win(g, g_ref, tau)
    win_hard = algorithms.hard_win(g, g_ref)
    kl = self.kl_per_prompt(params)
    lengths = samples["mask"].sum(-1).astype(np.float64)
    arrays = {"golden_win": win_soft, "golden_score": g.astype(np.float64), "length": lengths,
              "kl": kl}
    out = {
        "kl": float(np.mean(kl)),
        "golden_win_rate": float(np.mean(win_soft)),
        "golden_win_rate_se": float(np.std(win_soft, ddof=1) / np.sqrt(win_soft.size)),
        "golden_win_rate_hard": float(np.mean(win_hard)),
        "golden_score": float(np.mean(g)),
        "reference_golden_score": float(np.mean(g_ref)),
        "mean_response_length": float(np.mean(lengths)),
    }
    if self.proxy is not None:
      n = self.proxy_prompts
      first = lambda d: {k: v[:n] for k, v in d.items()}
      probs, wins = self._proxy_compare(first(samples), first(self.ref_samples))
      gp, gr = g[:n], g_ref[:n]
      out["proxy_win_rate"] = float(np.mean(probs))
      out["proxy_win_rate_hard"] = float(np.mean(wins))
      out["proxy_golden_agreement_vs_reference"] = _nanmean(algorithms.agreement(wins, gp, gr))
      # The proxy's accuracy where online training asks it: two samples of pi for the
      # same prompt (golden ties left out). At SFT this is the study's set-up gate; it
      # falls as the policy drifts from what the proxy was trained on.
      prompts = B.PromptBatch(self.win_prompts.prompt[:n], self.win_prompts.prompt_mask[:n])
      second = self._sample(params, prompts, salt=4)
      g1, g2 = self._golden_vs(prompts, first(samples), second)
      _, first_wins = self._proxy_compare(first(samples), second)
      arrays["agreement"] = algorithms.agreement(first_wins, g1, g2)
      out["proxy_golden_agreement"] = _nanmean(arrays["agreement"])
    pc, pr = self._pair_logps(params)
    sc, sr = self._sft_pair_logps
    arrays["classifier"] = algorithms.classifier_outcome(pc, pr, sc, sr)
    arrays["chosen_delta"] = (pc - sc).astype(np.float64)
    out["classifier_accuracy"] = float(np.mean(arrays["classifier"]))
    out["chosen_logprob_delta"] = float(np.mean(arrays["chosen_delta"]))
    return out, arrays, shown


def _num_shown(cfg) -> int:
  """How many win prompts' samples an evaluation keeps (`eval.samples`, at most all)."""
  n = cfg.get("samples", 0)
  if not isinstance(n, int) or isinstance(n, bool) or n < 0:
    raise config_lib.ConfigError(f"config.eval.samples={n!r}: a count of win prompts whose "
                                 "samples each evaluation keeps (0: none)")
  return min(n, int(cfg.win_prompts))


def _response_ids(tokens_bt, mask_bt, eos_id) -> tuple[list[list[int]], list[bool]]:
  """Each sampled response's ids without its EOS, as `alignment.generate` prints them
  (the mask's tokens, less the last one where it is an EOS), and whether it ended so."""
  eos = set(eos_id) if isinstance(eos_id, tuple) else {eos_id}
  rows, ended = [], []
  for ids, mask in zip(np.asarray(tokens_bt), np.asarray(mask_bt)):
    ids = [int(i) for i in ids[mask.astype(bool)]]
    ended.append(bool(ids) and ids[-1] in eos)
    rows.append(ids[:-1] if ended[-1] else ids)
  return rows, ended


def _nanmean(x: np.ndarray) -> float:
  """The mean over the finite entries; NaN when there are none."""
  return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def save_arrays(path: str, arrays: dict) -> None:
  """One evaluation's per-item arrays as an .npz (never half-written)."""
  files.write_atomic(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}),
                     mode="wb")


def load_arrays(path: str) -> dict:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def arrays_path(workdir: str, step: int) -> str:
  return layout.eval_arrays(workdir, step)


def samples_path(workdir: str, step: int) -> str:
  """What the policy wrote at the evaluation at `step` (eval/step_N_samples.json)."""
  return os.path.splitext(layout.eval_arrays(workdir, step))[0] + "_samples.json"


def save_samples(path: str, shown: list[dict]) -> None:
  """One evaluation's shown samples (`Evaluator.evaluate_with_samples`) as JSON."""
  files.write_json(path, shown)


def load_samples(path: str) -> Optional[list[dict]]:
  """The shown samples saved at `path`; None where there are none (runs recorded before
  evaluations kept them, or with eval.samples 0). A file that is not such a list is an
  error naming it."""
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      shown = json.load(f)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise ValueError(f"{path}: unreadable recorded samples ({e})") from None
  keys = ("prompt", "response", "golden_score")
  if not (isinstance(shown, list) and all(isinstance(s, dict) and all(k in s for k in keys)
                                          for s in shown)):
    raise ValueError(f"{path}: not a list of recorded samples (each with {', '.join(keys)})")
  return shown


# ---------------------------------------------------------------------------
# The evaluator of a config, and evaluation inside a loop
# ---------------------------------------------------------------------------


def make_evaluator(eval_cfg, data_cfg, model, sft_params, mesh, rules, proxy=None,
                   sft_export: str = ""):
  """An `evaluation.Evaluator` when the `eval` section evaluates inside the loop, else None."""
  if not eval_cfg.get("every", 0) and not eval_cfg.get("steps", None):
    return None
  return build_evaluator(eval_cfg, data_cfg, model, sft_params, mesh, rules, proxy,
                         sft_export)


@timing.timed("evaluation")
def build_evaluator(eval_cfg, data_cfg, model, sft_params, mesh, rules, proxy=None,
                    sft_export: str = ""):
  """The `evaluation.Evaluator` of an `eval` section: golden judge, optional proxy PM,
  and the win-rate reference `eval.reference` (SFT when empty), for every caller alike.

  sft_export: the params export `sft_params` were loaded from (for `model`, on `mesh`):
  an `eval.reference` naming that export (a study's runs: the SFT policy) is those
  parameters, not loaded again.
  """
  e = eval_cfg
  vocab = tasks.task_vocabulary(e.prompts_task)
  golden = judges.load_golden_judge(e.get("golden_checkpoint", ""), vocab, data_cfg, mesh,
                                    rules)
  if proxy is None and e.proxy:
    proxy = judges.load_model_judge(e.proxy, data_cfg, mesh, rules)
  reference = reference_model = None
  if e.reference and _same_export(e.reference, sft_export, model):
    reference = sft_params
  elif e.reference:
    reference_model, reference = zoo.load_export(e.reference, "lm", data_cfg, mesh, rules)
  return Evaluator(model, sft_params, mesh, rules, golden, e, data_cfg,
                   e.prompts_task, e.pairs_task, proxy=proxy,
                   reference_params=reference, vocab_size=vocab.vocab_size,
                   reference_model=reference_model, tokens=vocab_lib.token_record(vocab),
                   sampling_ids=sampling.with_model_eos(vocab_lib.sampling_ids(vocab),
                                                        sft_export), vocab=vocab)


def _same_export(path: str, loaded: str, model) -> bool:
  """Whether the export at `path` is the one at `loaded`, recorded for `model` (whose
  parameters were loaded from it as `zoo.load_export` would load them)."""
  if not loaded or checkpoint.absolute(path) != checkpoint.absolute(loaded):
    return False
  try:
    return zoo.load_model_config(os.path.join(path, checkpoint.MODEL_CONFIG_FILE)) == model.cfg
  except checkpoint.CheckpointError:
    return False  # not an export: load_export says why


def is_eval_step(eval_cfg, num_steps: int, step: int) -> bool:
  """`eval.steps` when listed (e.g. log-spaced: a curve moves most early on), else
  every `eval.every` steps and the last one (`num_steps`)."""
  e = eval_cfg
  if e.get("steps", None):
    return step in set(int(s) for s in e.steps)
  return bool(e.get("every", 0)) and (step % e.every == 0 or step == num_steps)


def maybe_evaluate(run, evaluator, eval_cfg, num_steps: int, step: int, params,
                   tokens: Optional[dict] = None):
  """At an evaluation step: logs eval/* and writes the per-item arrays behind them to
  <workdir>/eval/step_<N>.npz; with `eval.save_params`, the parameters too
  (<workdir>/eval/step_<N>/, a params export: e.g. the peak policy of a curve), with
  the vocabulary record `tokens` (the run's `program.export_tokens`, which keeps the
  EOS list of the export it started from, as its final export does; default the
  evaluator's vocabulary's)."""
  if evaluator is None or not is_eval_step(eval_cfg, num_steps, step):
    return
  metrics, arrays, shown = evaluator.evaluate_with_samples(params)
  run.write(step, {f"eval/{k}": v for k, v in metrics.items()})
  path = arrays_path(run.log.workdir, step)
  if eval_cfg.get("save_params", False):
    checkpoint.export_params(params, evaluator.model.cfg, layout.eval_policy(run.log.workdir, step),
                             tokens=tokens or evaluator.tokens)
  if run.log.main:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_arrays(path, arrays)
    if shown:
      save_samples(samples_path(run.log.workdir, step), shown)


# ---------------------------------------------------------------------------
# Experiment "eval": evaluate the checkpoints of a run
# ---------------------------------------------------------------------------


def run(config, workdir: str) -> dict:
  """Evaluates `eval.policy` (an export, or every checkpoint of a run directory)."""
  distributed.setup_host()
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  e = config.eval
  model, sft = zoo.load_export(e.sft, "lm", config.data, mesh, rules)
  params_target = zoo.sharded_abstract_params(model, config.data, mesh, rules)
  # The same evaluator as the loops' (reference included), so a run's step-0 point
  # from this experiment is measured exactly as its later points are.
  evaluator = build_evaluator(e, config.data, model, sft, mesh, rules, sft_export=e.sft)
  results = []
  if os.path.isdir(os.path.join(e.policy, "params")):
    points = [(None, e.policy)]
  else:
    steps = checkpoint.Checkpointer(e.policy).all_steps()
    if not steps:
      raise checkpoint.CheckpointError(f"{e.policy}: no checkpoints to evaluate")
    points = [(s, e.policy) for s in steps]
  for step, path in points:
    params = checkpoint.load_params(path, params_target, step=step)
    metrics, arrays, shown = evaluator.evaluate_with_samples(params)
    results.append({"step": step, **metrics})
    if distributed.is_main():
      os.makedirs(layout.eval_dir(workdir), exist_ok=True)
      save_arrays(arrays_path(workdir, step or 0), arrays)
      if shown:
        save_samples(samples_path(workdir, step or 0), shown)
    if distributed.is_main():
      print(f"[eval] step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()),
            flush=True)
  if distributed.is_main():
    os.makedirs(workdir, exist_ok=True)
    files.write_json(layout.evaluation(workdir), results)
  return {"points": results}

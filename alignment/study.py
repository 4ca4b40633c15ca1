"""A study: the paper's experiments as cached stages, then results.json, report.md, plots.

    python -m alignment.study --config=configs/study.py:default --workdir=runs/study

Stages (each a directory under the workdir, run through `alignment.main.run`):

  sft                 SFT on both responses of every D_golden pair
  pm                  the proxy PM on (a limited part of) D_golden, from the SFT backbone
  sft_eval            the SFT policy's own metrics: the step-0 point of every curve
  golden_policy       (optional) online IPO against the golden judge: the win-rate
                      reference of the paper
  fig1   online_ipo   online IPO against the proxy, evaluated every `eval.every` steps
         offline_ipo_* offline IPO on D_golden over the learning-rate x beta sweep
  h1     replay_ordered / replay_shuffled / replay_window<k>: offline IPO on the
                      online run's own stream (D_online)
  h2     final_pairs + offline_final_pairs: pairs sampled from the final online
                      policy, labelled by the golden judge, trained on offline
  h4     online_best_of_2, offline_best_of_2 (D_golden), offline_best_of_2_replay
                      (the Best-of-2 online run's stream, shuffled)
  h5     sft/pm/online/offline at each extra policy size
  sec6   sft_pairs + offline_sft_pairs (one response sampled from SFT), gap_pairs +
                      offline_gap_pairs (D_golden pairs with the widest golden gap)

Caching: a finished stage writes STAGE.json with a hash of its config; a rerun
skips it when the hash matches, resumes it (from its checkpoints) when it has
no STAGE.json, and redoes it from scratch when its config changed. Killing
the study at any point and rerunning the same command continues it.

The report (alignment.report) turns every alignment run into a curve of
evaluation points and checks each finding of PAPER.md against the numbers,
as measured: nothing here tunes the environment to force a result.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Callable, Optional

import numpy as np

from alignment import checkpoint, faults
from alignment import config as config_lib

log = logging.getLogger("alignment.study")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Stage:
  name: str
  kind: str                       # sft | pm | online | offline | eval | pairs
  config: Any = None              # the experiment ConfigDict (kinds run by alignment.main)
  deps: tuple[str, ...] = ()
  run: Optional[dict] = None      # results.json fields of an alignment run
  generate: Optional[Callable[[str], dict]] = None  # pairs stages: fn(stage_dir) -> summary
  group: str = ""                 # the experiment it belongs to (fig1, h1, ...)
  sft_eval: str = "sft_eval"      # the stage whose evaluation is this run's step-0 point


# ---------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------


class Planner:
  """Builds the stages of a study config; one method per experiment."""

  def __init__(self, study, workdir: str):
    self.s = study
    self.workdir = workdir
    self.stages: dict[str, Stage] = {}

  # -- helpers ---------------------------------------------------------------
  def path(self, stage: str, *parts) -> str:
    return os.path.join(self.workdir, stage, *parts)

  def export(self, stage: str) -> str:
    return self.path(stage, "export")

  def experiment(self, name: str, overrides: dict):
    c = config_lib.load(os.path.join(ROOT, "configs", f"{name}.py:{self.s.base_variant}"))
    for key, value in overrides.items():
      config_lib.set_key(c, key, value, f"study stage ({name})")
    return c

  def add(self, stage: Stage):
    if stage.name in self.stages:
      raise ValueError(f"stage {stage.name!r} planned twice")
    self.stages[stage.name] = stage

  def tasks(self) -> dict[str, str]:
    p = self.s.prefix
    return {"sft": f"{p}_sft", "pairs": f"{p}_pairs_golden", "prompts": f"{p}_prompts"}

  def common(self, model: str) -> dict:
    s = self.s
    return {"seed": s.seed, "model.name": model, "data.batch_size": s.batch_size}

  def eval_overrides(self, sft: str, proxy: str) -> dict:
    e, t = self.s.eval, self.tasks()
    out = {"eval.every": e.every, "eval.kl_prompts": e.kl_prompts,
           "eval.win_prompts": e.win_prompts, "eval.classifier_pairs": e.classifier_pairs,
           "eval.batch_size": e.batch_size, "eval.prompts_task": t["prompts"],
           "eval.pairs_task": t["pairs"], "eval.sft": self.export(sft),
           "eval.proxy": self.export(proxy)}
    if self.s.golden_policy:
      out["eval.reference"] = self.export("golden_policy")
    return out

  # -- foundation: SFT, PM, SFT's own point ----------------------------------
  def foundation(self, model: str, suffix: str = ""):
    s, t = self.s, self.tasks()
    sft, pm = "sft" + suffix, "pm" + suffix
    self.add(Stage(sft, "sft", self.experiment("sft", {
        **self.common(model), "data.task": t["sft"], "train.num_steps": s.sft.steps,
        "optimizer.learning_rate": s.sft.learning_rate,
        "optimizer.decay_steps": s.sft.steps, "train.eval_every": s.sft.steps}),
        group="foundation"))
    self.add(Stage(pm, "pm", self.experiment("pm", {
        **self.common(model), "data.task": t["pairs"], "train.num_steps": s.pm.steps,
        "optimizer.learning_rate": s.pm.learning_rate, "optimizer.decay_steps": s.pm.steps,
        "data.max_records": s.pm.max_records, "init.backbone": self.export(sft),
        "train.eval_every": s.pm.steps}), deps=(sft,), group="foundation"))
    ev = self.experiment("eval", {**self.common(model), "data.task": t["prompts"],
                                  **self.eval_overrides(sft, pm), "eval.policy":
                                  self.export(sft)})
    self.add(Stage("sft_eval" + suffix, "eval", ev, deps=(sft, pm), group="foundation"))
    return sft, pm

  def online(self, name: str, model: str, sft: str, pm: str, loss: str, beta: float,
             group: str, judge: str = "proxy", data: str = "online"):
    s, t = self.s, self.tasks()
    overrides = {**self.common(model), "data.task": t["prompts"],
                 "train.num_steps": s.online.steps, "optimizer.learning_rate":
                 s.online.learning_rate, "loss.name": loss, "loss.beta": beta,
                 "sampling.temperature": s.online.temperature, "init.policy": self.export(sft),
                 "judge.kind": judge, "judge.checkpoint": self.export(pm) if judge == "proxy"
                 else "", "train.checkpoint_every": s.eval.every,
                 **self.eval_overrides(sft, pm)}
    deps = (sft, pm, "sft_eval" + self._suffix(sft))
    if judge == "golden":
      overrides["eval.reference"] = ""  # the golden policy is measured against SFT
    elif s.golden_policy:
      deps += ("golden_policy",)
    self.add(Stage(name, "online", self.experiment("online", overrides), deps=deps,
                   run=dict(algorithm=loss, mode="online", data=data,
                            hparams=dict(learning_rate=s.online.learning_rate, beta=beta,
                                         steps=s.online.steps, model=model)),
                   group=group, sft_eval="sft_eval" + self._suffix(sft)))

  def offline(self, name: str, model: str, sft: str, pm: str, loss: str, beta: float,
              lr: float, group: str, data: str, replay: str = "", order: str = "shuffled",
              window: int = 4, deps: tuple[str, ...] = (), steps: int = 0):
    s, t = self.s, self.tasks()
    steps = steps or s.offline.steps
    overrides = {**self.common(model), "data.task": t["pairs"],
                 "train.num_steps": steps, "optimizer.learning_rate": lr,
                 "loss.name": loss, "loss.beta": beta, "init.policy": self.export(sft),
                 "data.replay_dir": replay, "data.replay_order": order,
                 "data.replay_window": window, "train.checkpoint_every": s.eval.every,
                 **self.eval_overrides(sft, pm)}
    deps = (sft, pm, "sft_eval" + self._suffix(sft)) + deps
    if s.golden_policy:
      deps += ("golden_policy",)
    self.add(Stage(name, "offline", self.experiment("offline", overrides), deps=deps,
                   run=dict(algorithm=loss, mode="offline", data=data,
                            hparams=dict(learning_rate=lr, beta=beta, steps=steps,
                                         model=model, order=order if replay else "uniform")),
                   group=group, sft_eval="sft_eval" + self._suffix(sft)))

  @staticmethod
  def _suffix(stage: str) -> str:
    return stage[len("sft"):] if stage.startswith("sft") else ""

  # -- the experiments -------------------------------------------------------
  def build(self) -> list[Stage]:
    s = self.s
    sft, pm = self.foundation(s.model)
    if s.golden_policy:
      self.online("golden_policy", s.model, sft, pm, "ipo", s.online.beta, "foundation",
                  judge="golden", data="golden_judge")
      self.stages["golden_policy"].run = None  # a reference, not a curve of the study
    experiments = set(s.experiments)
    unknown = experiments - {"fig1", "h1", "h2", "h4", "h5", "sec6", "losses"}
    if unknown:
      raise config_lib.ConfigError(f"study.experiments: unknown {sorted(unknown)}")
    beta, lr0 = s.online.beta, s.offline.learning_rates[0]
    # Fig. 1 (also the source of H1, H2 and H3).
    self.online("online_ipo", s.model, sft, pm, "ipo", beta, "fig1")
    for lr in s.offline.learning_rates:
      for b in s.offline.betas:
        self.offline(f"offline_ipo_lr{lr:g}_b{b:g}", s.model, sft, pm, "ipo", b, lr, "fig1",
                     data="golden")
    if "losses" in experiments:
      for loss in s.loss_variants:
        self.online(f"online_{loss}", s.model, sft, pm, loss, beta, "losses")
        self.offline(f"offline_{loss}", s.model, sft, pm, loss, beta, lr0, "losses",
                     data="golden")
    stream = self.path("online_ipo", "stream")
    if "h1" in experiments:
      # Same loss, learning rate, seed and number of steps as the online run: the
      # ordered replay differs from it only in where the pairs come from.
      replay = dict(deps=("online_ipo",), steps=s.online.steps)
      self.offline("replay_ordered", s.model, sft, pm, "ipo", beta, s.online.learning_rate,
                   "h1", data="online_ordered", replay=stream, order="ordered", **replay)
      for k in s.h1_windows:
        self.offline(f"replay_window{k}", s.model, sft, pm, "ipo", beta,
                     s.online.learning_rate, "h1", data=f"online_window{k}", replay=stream,
                     order="window", window=k, **replay)
      self.offline("replay_shuffled", s.model, sft, pm, "ipo", beta, s.online.learning_rate,
                   "h1", data="online_shuffled", replay=stream, order="shuffled", **replay)
    if "h2" in experiments:
      self.add(Stage("final_pairs", "pairs", deps=("online_ipo",), group="h2",
                     generate=lambda d: generate_policy_pairs(self, d, self.export("online_ipo"),
                                                              self.export(sft))))
      self.offline("offline_final_pairs", s.model, sft, pm, "ipo", beta, lr0, "h2",
                   data="final_policy_pairs", replay=self.path("final_pairs", "pairs"),
                   deps=("final_pairs",))
    if "h4" in experiments:
      self.online("online_best_of_2", s.model, sft, pm, "best_of_2", beta, "h4")
      self.offline("offline_best_of_2", s.model, sft, pm, "best_of_2", beta, lr0, "h4",
                   data="golden")
      self.offline("offline_best_of_2_replay", s.model, sft, pm, "best_of_2", beta,
                   s.online.learning_rate, "h4", data="online_shuffled",
                   replay=self.path("online_best_of_2", "stream"), order="shuffled",
                   deps=("online_best_of_2",), steps=s.online.steps)
    if "h5" in experiments:
      for size in s.sizes:
        if size == s.model:
          continue
        suffix = "_" + size
        sft_k, pm_k = self.foundation(size, suffix)
        self.online(f"online_ipo{suffix}", size, sft_k, pm_k, "ipo", beta, "h5")
        self.offline(f"offline_ipo{suffix}", size, sft_k, pm_k, "ipo", beta, lr0, "h5",
                     data="golden")
    if "sec6" in experiments:
      self.add(Stage("sft_pairs", "pairs", deps=(sft,), group="sec6",
                     generate=lambda d: generate_sft_pairs(self, d, self.export(sft))))
      self.offline("offline_sft_pairs", s.model, sft, pm, "ipo", beta, lr0, "sec6",
                   data="one_response_from_sft", replay=self.path("sft_pairs", "pairs"),
                   deps=("sft_pairs",))
      self.add(Stage("gap_pairs", "pairs", group="sec6",
                     generate=lambda d: generate_gap_pairs(self, d)))
      self.offline("offline_gap_pairs", s.model, sft, pm, "ipo", beta, lr0, "sec6",
                   data="wide_quality_gap", replay=self.path("gap_pairs", "pairs"),
                   deps=("gap_pairs",))
    return list(self.stages.values())


def plan(study, workdir: str) -> list[Stage]:
  return Planner(study, workdir).build()


# ---------------------------------------------------------------------------
# Pair sets (H2, section 6), written in the D_online stream format
# ---------------------------------------------------------------------------


def _pairs_setup(planner: Planner):
  from alignment.train import common  # pylint: disable=g-import-not-at-top
  c = planner.experiment("offline", {**planner.common(planner.s.model),
                                     "data.task": planner.tasks()["pairs"]})
  common.setup_host()
  mesh, rules = common.mesh_and_rules(c)
  return c, mesh, rules


def _write_pairs(out_dir: str, c, vocab_name: str, prompts, prompt_mask, y1, m1, y2, m2,
                 verdict, extras: dict) -> dict:
  """Rows -> a stream directory (one 'step' per batch), written via a temporary name."""
  from alignment.data import stream  # pylint: disable=g-import-not-at-top
  tmp = out_dir + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  b = c.data.batch_size
  n = (prompts.shape[0] // b) * b
  writer = stream.StreamWriter(tmp, global_batch_size=b, prompt_length=c.data.prompt_len,
                               response_length=c.data.response_len, vocab=vocab_name,
                               extras=tuple(sorted(extras)), resume_step=0)
  for step, start in enumerate(range(0, n, b)):
    rows = slice(start, start + b)
    writer.write(step, prompts[rows], prompt_mask[rows], y1[rows], m1[rows], y2[rows], m2[rows],
                 verdict[rows], extras={k: v[rows] for k, v in extras.items()})
  writer.close()
  shutil.rmtree(out_dir, ignore_errors=True)
  os.rename(tmp, out_dir)
  return {"pairs": int(n), **{f"mean_{k}": float(np.mean(v[:n])) for k, v in extras.items()}}


def _sample_responses(c, mesh, rules, export: str, prompts, prompt_mask, seed: int,
                      num_samples: int):
  import jax  # pylint: disable=g-import-not-at-top
  from alignment import sampling  # pylint: disable=g-import-not-at-top
  from alignment.data import batches as B  # pylint: disable=g-import-not-at-top
  from alignment.train import common  # pylint: disable=g-import-not-at-top
  model, params = common.load_export(export, "lm", c.data, mesh, rules)
  sampler = sampling.Sampler(model, sampling.SamplingConfig(
      max_new_tokens=c.data.response_len, num_samples=num_samples), mesh, rules)
  tokens, masks = [], []
  b = c.data.batch_size
  for i, start in enumerate(range(0, prompts.shape[0], b)):
    out = sampler(params, B.PromptBatch(prompts[start:start + b], prompt_mask[start:start + b]),
                  jax.random.fold_in(jax.random.PRNGKey(seed), i))
    t, m = jax.device_get((out.tokens, out.mask))
    tokens.append(t)
    masks.append(m)
  return np.concatenate(tokens), np.concatenate(masks)


def _num_pairs(planner: Planner) -> int:
  """As many pairs as an online run sees: steps x batch."""
  return planner.s.online.steps * planner.s.batch_size


def generate_policy_pairs(planner: Planner, out_dir: str, policy_export: str,
                          sft_export: str) -> dict:
  """H2: two samples per train prompt from the final online policy, golden labels."""
  del sft_export
  from alignment import judges  # pylint: disable=g-import-not-at-top
  from alignment.data import batches as B  # pylint: disable=g-import-not-at-top
  from alignment.data import pipeline  # pylint: disable=g-import-not-at-top
  from alignment.train import common  # pylint: disable=g-import-not-at-top
  c, mesh, rules = _pairs_setup(planner)
  task = planner.tasks()["prompts"]
  prompts = pipeline.fixed_batch(task, "train", "prompts", _num_pairs(planner),
                                 prompt_length=c.data.prompt_len,
                                 response_length=c.data.response_len)
  tokens, masks = _sample_responses(c, mesh, rules, policy_export, prompts.prompt,
                                    prompts.prompt_mask, planner.s.seed + 11, 2)
  y1, m1, y2, m2 = tokens[0::2], masks[0::2], tokens[1::2], masks[1::2]
  golden = judges.GoldenJudge(common.task_vocabulary(task))
  p = B.PromptBatch(prompts.prompt, prompts.prompt_mask)
  g1, g2 = golden.scores(p, y1), golden.scores(p, y2)
  verdict = (g1 > g2).astype(np.int32)
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  return _write_pairs(out_dir, c, vocab_lib.vocabulary_name(common.task_vocabulary(task)),
                      prompts.prompt, prompts.prompt_mask, y1, m1, y2, m2, verdict,
                      {"golden_1": g1, "golden_2": g2, "golden_gap": np.abs(g1 - g2)})


def generate_sft_pairs(planner: Planner, out_dir: str, sft_export: str) -> dict:
  """Section 6: one response sampled from SFT, the other from D_golden; golden labels."""
  from alignment import judges  # pylint: disable=g-import-not-at-top
  from alignment.data import batches as B  # pylint: disable=g-import-not-at-top
  from alignment.data import pipeline  # pylint: disable=g-import-not-at-top
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from alignment.train import common  # pylint: disable=g-import-not-at-top
  c, mesh, rules = _pairs_setup(planner)
  task = planner.tasks()["pairs"]
  pairs = pipeline.fixed_batch(task, "train", "pairs", _num_pairs(planner),
                               prompt_length=c.data.prompt_len,
                               response_length=c.data.response_len)
  y1, m1 = _sample_responses(c, mesh, rules, sft_export, pairs.prompt, pairs.prompt_mask,
                             planner.s.seed + 12, 1)
  coin = np.random.default_rng(planner.s.seed).random(pairs.prompt.shape[0]) < 0.5
  y2 = np.where(coin[:, None], pairs.chosen, pairs.rejected)
  m2 = np.where(coin[:, None], pairs.chosen_mask, pairs.rejected_mask)
  golden = judges.GoldenJudge(common.task_vocabulary(task))
  p = B.PromptBatch(pairs.prompt, pairs.prompt_mask)
  g1, g2 = golden.scores(p, y1), golden.scores(p, y2)
  return _write_pairs(out_dir, c, vocab_lib.vocabulary_name(common.task_vocabulary(task)),
                      pairs.prompt, pairs.prompt_mask, y1, m1, y2, m2,
                      (g1 > g2).astype(np.int32),
                      {"golden_1": g1, "golden_2": g2, "golden_gap": np.abs(g1 - g2)})


def generate_gap_pairs(planner: Planner, out_dir: str) -> dict:
  """Section 6: the D_golden pairs whose golden scores differ most (top half)."""
  from alignment.data import pipeline  # pylint: disable=g-import-not-at-top
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from alignment.train import common  # pylint: disable=g-import-not-at-top
  c, _, _ = _pairs_setup(planner)
  task = planner.tasks()["pairs"]
  n = 2 * _num_pairs(planner)
  records = pipeline.load_records(task, "train", "pairs", c.data.prompt_len,
                                  c.data.response_len, passthrough=_golden_passthrough())
  records = {k: v[:n] for k, v in records.items()}
  gap = np.abs(records["golden_a"] - records["golden_b"])
  keep = np.sort(np.argsort(-gap, kind="stable")[:n // 2])
  r = {k: v[keep] for k, v in records.items()}
  ones = np.ones(len(keep), np.int32)
  return _write_pairs(out_dir, c, vocab_lib.vocabulary_name(common.task_vocabulary(task)),
                      r["prompt"], r["prompt_mask"], r["chosen"], r["chosen_mask"],
                      r["rejected"], r["rejected_mask"], ones,
                      {"golden_gap": gap[keep]})


def _golden_passthrough():
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = seqio.FeatureConverter.FeatureSpec(dtype=tf.float32, rank=0)
  return {"golden_a": spec, "golden_b": spec}


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def config_hash(stage: Stage) -> str:
  payload = stage.config.to_json_best_effort(sort_keys=True) if stage.config is not None \
      else json.dumps({"kind": stage.kind, "deps": stage.deps})
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def stage_done(workdir: str, stage: Stage) -> bool:
  path = os.path.join(workdir, stage.name, "STAGE.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f).get("config_hash") == config_hash(stage)


def run_stage(workdir: str, stage: Stage) -> dict:
  from alignment import main as main_lib  # pylint: disable=g-import-not-at-top
  stage_dir = os.path.join(workdir, stage.name)
  marker = os.path.join(stage_dir, "STAGE.json")
  if os.path.exists(marker):  # finished with another config: start over
    log.warning("stage %s: its config changed; running it again from scratch", stage.name)
    shutil.rmtree(stage_dir)
  os.makedirs(stage_dir, exist_ok=True)
  start = time.time()
  if stage.kind == "pairs":
    summary = stage.generate(os.path.join(stage_dir, "pairs"))
  else:
    summary = main_lib.run(stage.config, stage_dir) or {}
    if stage.kind == "eval":
      summary = {"points": summary.get("points", [])}
  faults.hit("after_stage", stage.name)
  info = {"stage": stage.name, "kind": stage.kind, "config_hash": config_hash(stage),
          "seconds": round(time.time() - start, 1), "summary": _jsonable(summary)}
  if stage.config is not None:
    info["config"] = json.loads(stage.config.to_json_best_effort())
  checkpoint.write_json_atomic(marker, info)
  return info


def _jsonable(x):
  return json.loads(json.dumps(x, default=lambda o: float(o) if np.isscalar(o) else str(o)))


def run(study, workdir: str) -> dict:
  """Runs (or continues) every stage, then writes results.json, report.md, plots."""
  from alignment import report  # pylint: disable=g-import-not-at-top
  from alignment.train import common  # pylint: disable=g-import-not-at-top
  common.setup_host()
  _enable_compilation_cache(workdir)
  os.makedirs(workdir, exist_ok=True)
  stages = plan(study, workdir)
  t0 = time.time()
  for i, stage in enumerate(stages):
    if stage_done(workdir, stage):
      print(f"[study] {i + 1}/{len(stages)} {stage.name}: done (cached)", flush=True)
      continue
    print(f"[study] {i + 1}/{len(stages)} {stage.name} ({stage.kind}) ... elapsed "
          f"{time.time() - t0:.0f}s", flush=True)
    info = run_stage(workdir, stage)
    print(f"[study] {stage.name}: {info['seconds']:.0f}s", flush=True)
  return report.write(study, workdir, stages)


def _enable_compilation_cache(workdir: str):
  """XLA's persistent cache: stages with the same shapes compile once per study.

  It lives in <workdir>/.xla_cache unless ALIGNMENT_XLA_CACHE names another
  directory (tests share one between studies).
  """
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", os.environ.get(
      "ALIGNMENT_XLA_CACHE", os.path.join(workdir, ".xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", required=True, help="configs/study.py:<scale>")
  p.add_argument("--workdir", required=True)
  args, overrides = p.parse_known_args(argv)
  try:
    study = config_lib.load(args.config)
    config_lib.apply_overrides(study, [o[len("--config."):] for o in overrides
                                       if o.startswith("--config.")], where="--config")
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
      raise config_lib.ConfigError(f"unknown arguments {bad}")
    results = run(study, args.workdir)
  except (config_lib.ConfigError, checkpoint.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"[study] wrote {results['report']}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())

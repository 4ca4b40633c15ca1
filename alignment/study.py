"""A study: the paper's experiments as cached stages, then results.json, report.md, plots.

    python -m alignment.study --config=configs/study.py:default --workdir=runs/study

Stages (each a directory under the workdir; training stages run through
`alignment.main.run`, pair-set stages through `alignment.pairsets`):

  foundation  sft            SFT on both responses of every writer pair
              pairs          D_golden: `num_pairs` pairs of the kind `pairs` (sft: two
                             samples of the SFT policy per train prompt, golden-labelled;
                             writer; mixed) in pairs/train, and `held_out_pairs` pairs
                             of SFT samples on validation prompts in pairs/held_out
              pm             the proxy PM on pairs/train, from the SFT backbone; its
                             held-out accuracy on pairs/held_out is the set-up gate
              sft_eval       the SFT policy's own evaluation: the step-0 point of every
                             curve, against the same reference as every other point
  fig1   online_ipo_s<k>     online IPO against the proxy, one run per seed
         offline_ipo_s<k>    offline IPO on D_golden (pairs/train), one run per seed
                             (with several `betas`, one arm per beta for each mode)
  h1     replay_ordered / replay_window<k> / replay_shuffled: offline IPO on the
                             stream of online_ipo_s0 (D_online)
  h2     peak_pairs, final_pairs: pairs of online_ipo_s0's policy at its peak and at
                             its end, golden-labelled; offline_peak_pairs, offline_final_pairs
  h4     online_best_of_2, offline_best_of_2, offline_best_of_2_replay (its stream, shuffled)
  writer writer_pairs + offline_writer_pairs: offline IPO on the writer's pairs instead
                             of D_golden (the ablation of D_golden's source)
  sec6   writer_pairs, gap_pairs (the widest-gap half of 2N writer pairs), mixed_pairs
                             (one SFT sample, one writer response) and an offline run on each
  h5     (larger scales) per extra size: sft, its own step-0 evaluation, online and
                             offline IPO; the proxy PM, D_golden and the win-rate reference
                             (the main SFT policy) are the main size's
  losses online/offline DPO and SLiC, when listed
  rl     rm (a Bradley-Terry reward model on pairs/train, like the PM), then online_<arm>
                             for each of `rl.arms`: rloo_rm, grpo_rm (rewards of the RM),
                             grpo_pm (the PM's sibling wins), rloo_golden
  staleness online_ipo_stale<k>: online IPO sampling with parameters k steps old, for
                             each k of `staleness` (k = 0 and offline: Fig. 1's arms)

Every alignment run starts from its SFT export, evaluates at log-spaced steps
(the rise and fall of online runs happen early) and writes the per-prompt
values behind each point (<run>/eval/step_N.npz), from which the report draws
its intervals (alignment.stats, alignment.report).

Caching: a finished stage writes STAGE.json with a hash of its config AND of
the hashes of the stages it depends on, so a changed SFT invalidates every
stage downstream and a rerun online stage its replays and pair sets. A rerun
skips a stage whose hash matches, resumes one without STAGE.json (from its
checkpoints), and redoes one whose hash changed from scratch. Killing the
study at any point and rerunning the same command continues it; a SIGTERM
stops it after the running stage has saved a checkpoint, without marking
that stage done. The study holds <workdir>/LOCK.json and each stage's run its
own directory's (`alignment.lock`).
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

from alignment import checkpoint, distributed, faults, files, lock, sharding
from alignment import config as config_lib
from alignment.train import bookkeeping

log = logging.getLogger("alignment.study")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = ("fig1", "h1", "h2", "h4", "h5", "sec6", "writer", "losses", "rl", "staleness")
PAIR_KINDS = ("sft", "writer", "mixed")


class Preempted(Exception):
  """A stage's run stopped early after SIGTERM: the study stops, unmarked, to resume."""


@dataclasses.dataclass
class Stage:
  name: str
  kind: str                       # sft | pm | online | offline | eval | pairs | given
  config: Any = None              # the experiment ConfigDict (kinds run by alignment.main)
  deps: tuple[str, ...] = ()
  run: Optional[dict] = None      # results.json fields of an alignment run
  generate: Optional[Callable[[str], dict]] = None  # pairs stages: fn(stage_dir) -> summary
  params: Optional[dict] = None   # what a pairs stage is made from (part of its hash)
  group: str = ""                 # the experiment it belongs to (fig1, h1, ...)
  sft_eval: str = "sft_eval"      # the stage whose evaluation is this run's step-0 point
  arm: str = ""                   # runs of one arm differ only in their seed


def log_steps(total: int, points: int, first: int) -> list[int]:
  """About `points` evaluation steps from `first` to `total`, evenly spaced in log(step)."""
  if total <= first or points <= 1:
    return [total]
  raw = np.geomspace(first, total, points)
  steps = sorted({int(round(x)) for x in raw} | {total})
  return [s for s in steps if 1 <= s <= total]


# ---------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------


class Planner:
  """Builds the stages of a study config; one method per experiment."""

  def __init__(self, study, workdir: str):
    self.s = study
    self.workdir = workdir
    self.stages: dict[str, Stage] = {}
    if study.import_dir:  # real data: register the import's tasks in this process
      from alignment.data import tasks  # pylint: disable=g-import-not-at-top
      tasks.resolve(os.path.abspath(study.import_dir))

  # -- helpers ---------------------------------------------------------------
  def path(self, stage: str, *parts) -> str:
    return os.path.join(self.workdir, stage, *parts)

  def export(self, stage: str) -> str:
    if stage == "sft" and self.s.sft_export:  # the user's own SFT policy
      return os.path.abspath(self.s.sft_export)
    return self.path(stage, "export")

  def experiment(self, name: str, overrides: dict):
    c = config_lib.load(os.path.join(ROOT, "configs", f"{name}.py:{self.s.base_variant}"))
    for key, value in overrides.items():
      config_lib.set_key(c, key, value, f"study stage ({name})")
    return c

  def add(self, stage: Stage):
    stage.deps = tuple(dict.fromkeys(stage.deps))
    if stage.name in self.stages:
      raise ValueError(f"stage {stage.name!r} planned twice")
    missing = [d for d in stage.deps if d not in self.stages]
    if missing:
      raise ValueError(f"stage {stage.name!r} depends on unplanned {missing}")
    self.stages[stage.name] = stage

  def tasks(self) -> dict[str, str]:
    if self.s.import_dir:  # the import's rater pairs, its SFT view and its prompts
      from alignment.data import import_pairs  # pylint: disable=g-import-not-at-top
      try:
        name = import_pairs.read_metadata(self.s.import_dir)["name"]
      except import_pairs.BadInput as e:
        raise config_lib.ConfigError(f"study.import_dir: {e}") from None
      return {"sft": f"{name}_sft", "pairs": name, "prompts": f"{name}_prompts"}
    p = self.s.prefix
    return {"sft": f"{p}_sft", "pairs": f"{p}_pairs_golden", "prompts": f"{p}_prompts"}

  def golden_export(self) -> str:
    """The golden judge: "" for the environment's program, else the golden PM's export
    (real data: trained on the raters' labels by the golden_pm stage)."""
    return self.export("golden_pm") if self.s.import_dir else ""

  def golden_deps(self) -> tuple[str, ...]:
    return ("golden_pm",) if self.s.import_dir else ()

  def common(self, model: str, seed: int = 0) -> dict:
    s = self.s
    return {"seed": s.seed + seed, "data.shuffle_seed": s.seed + seed, "model.name": model,
            "data.batch_size": s.batch_size, "data.prompt_len": s.prompt_len,
            "data.response_len": s.response_len}

  def eval_overrides(self, sft: str, steps: int) -> dict:
    e, t = self.s.eval, self.tasks()
    out = {"eval.every": 0, "eval.steps": log_steps(steps, e.points, e.first),
           "eval.kl_prompts": e.kl_prompts, "eval.win_prompts": e.win_prompts,
           "eval.proxy_prompts": e.proxy_prompts,
           "eval.classifier_pairs": e.classifier_pairs, "eval.batch_size": e.batch_size,
           "eval.prompts_task": t["prompts"], "eval.pairs_task": t["pairs"],
           "eval.pairs_dir": self.path("pairs", "held_out"), "eval.sft": self.export(sft),
           "eval.proxy": self.export("pm"), "eval.reference": self.reference(),
           "eval.golden_checkpoint": self.golden_export()}
    return out

  def reference(self) -> str:
    """The win-rate reference of every point: the golden policy, else the main SFT."""
    return self.export("golden_policy") if self.s.golden_policy else self.export("sft")

  def reference_deps(self) -> tuple[str, ...]:
    return ("golden_policy",) if self.s.golden_policy else ()

  # -- foundation: SFT, D_golden, PM, SFT's own point ------------------------
  def sft(self, model: str, name: str):
    s, t = self.s, self.tasks()
    if name == "sft" and s.sft_export:  # given, not trained: a stage that records it
      export = self.export("sft")
      self.add(Stage(name, "given", params=dict(export=export), group="foundation",
                     generate=lambda d: {"export": export}))
      return
    self.add(Stage(name, "sft", self.experiment("sft", {
        **self.common(model), "data.task": t["sft"], "train.num_steps": s.sft.steps,
        "optimizer.learning_rate": s.sft.learning_rate,
        "optimizer.decay_steps": s.sft.steps, "eval.every": s.sft.steps,
        "train.checkpoint_every": s.sft.steps}), group="foundation"))

  def foundation(self):
    s = self.s
    self.sft(s.model, "sft")
    if s.import_dir:
      self.golden_pm()
    self.add(Stage("pairs", "pairs", deps=("sft",) + self.golden_deps(), group="foundation",
                   params=dict(kind=s.pairs, num=s.num_pairs, held_out=s.held_out_pairs,
                               labels=s.labels, seed=s.seed, redraws=s.tie_redraws,
                               golden=self.golden_export()),
                   generate=self.generate_dgolden))
    self.add(Stage("pm", "pm", self.experiment("pm", self.pm_overrides()),
                   deps=("sft", "pairs"), group="foundation"))
    if s.golden_policy:
      self.online("golden_policy", s.model, "ipo", s.online.beta, "foundation", judge="golden",
                  data="golden_judge", deps=("sft",), reference="sft")
      self.stages["golden_policy"].run = None  # a reference, not a curve of the study
    self.sft_eval("sft_eval", s.model, "sft")

  def golden_pm(self):
    """Real data: the golden judge is a pairwise PM trained on the raters' labels (the
    import's train split; its held-out accuracy on the validation split), from the SFT
    backbone. It labels D_golden and scores every golden win rate."""
    s, g = self.s, self.s.golden_pm
    self.add(Stage("golden_pm", "pm", self.experiment("pm", {
        **self.common(s.model), "data.task": self.tasks()["pairs"],
        "train.num_steps": g.steps, "optimizer.learning_rate": g.learning_rate,
        "optimizer.decay_steps": g.steps, "init.backbone": self.export("sft"),
        "eval.num_batches": g.eval_batches, "eval.every": g.steps,
        "train.checkpoint_every": g.steps}), deps=("sft",), group="foundation"))

  def pm_overrides(self) -> dict:
    """The proxy PM's stage (and the reward model's: the same pairs, steps and rate)."""
    s, t = self.s, self.tasks()
    return {**self.common(s.model), "data.task": t["pairs"], "train.num_steps": s.pm.steps,
            "optimizer.learning_rate": s.pm.learning_rate, "optimizer.decay_steps": s.pm.steps,
            "data.replay_dir": self.path("pairs", "train"), "init.backbone": self.export("sft"),
            "eval.pairs_dir": self.path("pairs", "held_out"),
            "eval.num_batches": s.held_out_pairs // s.batch_size,
            "eval.every": s.pm.steps, "train.checkpoint_every": s.pm.steps}

  def sft_eval(self, name: str, model: str, sft: str):
    ev = self.experiment("eval", {**self.common(model), "data.task": self.tasks()["prompts"],
                                  **self.eval_overrides(sft, 1), "eval.policy": self.export(sft)})
    self.add(Stage(name, "eval", ev, deps=(sft, "pairs", "pm") + self.reference_deps(),
                   group="foundation"))

  # -- alignment runs ----------------------------------------------------------
  def online(self, name: str, model: str, loss: str, beta: float, group: str, *,
             judge: str = "proxy", data: str = "online", seed: int = 0, arm: str = "",
             deps: tuple[str, ...] = (), sft: str = "sft", sft_eval: str = "sft_eval",
             reference: str = "", save_params: bool = False, rl: Optional[dict] = None,
             learning_rate: float = 0.0):
    s, t = self.s, self.tasks()
    steps = s.online.steps
    lr = learning_rate or s.online.learning_rate
    judges_export = {"proxy": self.export("pm"), "reward": self.export("rm"), "golden": ""}
    overrides = {**self.common(model, seed), "data.task": t["prompts"],
                 "train.num_steps": steps, "optimizer.learning_rate": lr,
                 "loss.name": loss, "loss.beta": beta,
                 "sampling.temperature": s.online.temperature, "init.policy": self.export(sft),
                 "judge.kind": judge, "judge.checkpoint": judges_export[judge],
                 **({"judge.golden_checkpoint": self.golden_export()} if judge == "golden"
                    else {}),
                 **(rl or {}),
                 "train.checkpoint_every": s.checkpoint_every,
                 **self.eval_overrides(sft, steps), "eval.save_params": save_params}
    if reference:  # the golden policy itself is measured against SFT
      overrides["eval.reference"] = self.export(reference)
      deps = (sft, "pairs", "pm") + deps
    else:
      deps = (sft, "pairs", "pm", sft_eval) + self.reference_deps() + deps
    if judge == "reward":
      deps = deps + ("rm",)
    if judge == "golden":
      deps = deps + self.golden_deps()
    rl = rl or {}
    method = rl.get("rl.method", "contrastive")
    self.add(Stage(name, "online", self.experiment("online", overrides), deps=deps,
                   run=dict(algorithm=loss if method == "contrastive" else method,
                            mode="online", data=data,
                            hparams=dict(learning_rate=lr, beta=beta, steps=steps,
                                         model=model, seed=s.seed + seed,
                                         staleness=rl.get("rl.staleness", 0),
                                         temperature=s.online.temperature,
                                         judge=judge, **{k[3:]: v for k, v in rl.items()
                                                         if k.startswith("rl.") and
                                                         k != "rl.staleness"})),
                   group=group, sft_eval=sft_eval, arm=arm or name))

  def offline(self, name: str, model: str, loss: str, beta: float, group: str, data: str, *,
              pairs: str, order: str = "shuffled", window: int = 4, seed: int = 0,
              arm: str = "", deps: tuple[str, ...] = (), steps: int = 0,
              learning_rate: float = 0.0, sft: str = "sft", sft_eval: str = "sft_eval",
              evaluate: bool = True):
    """Offline training on a pair-set or stream directory `pairs` (evaluate=False: a
    check of its training statistics, not a curve)."""
    s, t = self.s, self.tasks()
    steps = steps or s.offline.steps
    lr = learning_rate or s.offline.learning_rate
    overrides = {**self.common(model, seed), "data.task": t["pairs"],
                 "train.num_steps": steps, "optimizer.learning_rate": lr,
                 "loss.name": loss, "loss.beta": beta, "init.policy": self.export(sft),
                 "data.replay_dir": pairs, "data.replay_order": order,
                 "data.replay_window": window, "train.checkpoint_every": s.checkpoint_every,
                 **self.eval_overrides(sft, steps)}
    if not evaluate:
      overrides["eval.steps"] = []
    deps = (sft, "pairs", "pm", sft_eval) + self.reference_deps() + deps
    run = dict(algorithm=loss, mode="offline", data=data,
               hparams=dict(learning_rate=lr, beta=beta, steps=steps, model=model,
                            seed=s.seed + seed, order=order))
    self.add(Stage(name, "offline", self.experiment("offline", overrides), deps=deps,
                   run=run if evaluate else None, group=group, sft_eval=sft_eval,
                   arm=arm or name))

  def pair_set(self, name: str, group: str, generate: Callable[[str], dict], params: dict,
               deps: tuple[str, ...]):
    self.add(Stage(name, "pairs", deps=deps, group=group, params=params, generate=generate))

  # -- the experiments -------------------------------------------------------
  def build(self) -> list[Stage]:
    s = self.s
    experiments = set(s.experiments)
    unknown = experiments - set(EXPERIMENTS)
    if unknown:
      raise config_lib.ConfigError(f"study.experiments: unknown {sorted(unknown)}; choose "
                                   f"from {list(EXPERIMENTS)}")
    if s.pairs not in PAIR_KINDS:
      raise config_lib.ConfigError(f"study.pairs={s.pairs!r}: choose one of {PAIR_KINDS}")
    if s.scale == "real" and not s.import_dir:
      raise config_lib.ConfigError("study scale 'real' needs --config.import_dir=DIR (a "
                                   "directory written by alignment.data.import_pairs)")
    if s.import_dir and (s.pairs != "sft" or experiments & {"writer", "sec6"}):
      raise config_lib.ConfigError(
          "study.import_dir: writer and mixed pair sets (study.pairs, experiments writer "
          "and sec6) need golden scores of the writer's responses, which rater-labelled "
          "pairs do not have; use pairs='sft' without writer and sec6")
    if not s.seeds:
      raise config_lib.ConfigError("study.seeds: at least one seed")
    if experiments & {"h1", "h2"} and "fig1" not in experiments:
      raise config_lib.ConfigError("study.experiments: h1 and h2 replay and sample the Fig. 1 "
                                   "online run; list 'fig1' too")
    self.foundation()  # with no experiments, the study is its foundation and set-up gate
    beta = s.online.beta
    dgolden = self.path("pairs", "train")
    # Fig. 1 (also the source of H1, H2 and H3): one arm per beta and mode, one run per seed.
    for b in (s.betas if "fig1" in experiments else []):
      tag = "" if len(s.betas) == 1 else f"_b{b:g}"
      for k in s.seeds:
        self.online(f"online_ipo{tag}_s{k}", s.model, "ipo", b, "fig1", seed=k,
                    arm=f"online_ipo{tag}", save_params=(k == s.seeds[0] and b == beta))
        self.offline(f"offline_ipo{tag}_s{k}", s.model, "ipo", b, "fig1", data=s.pairs + "_pairs",
                     pairs=dgolden, seed=k, arm=f"offline_ipo{tag}")
    source = f"online_ipo{'' if len(s.betas) == 1 else f'_b{beta:g}'}_s{s.seeds[0]}"
    if beta not in s.betas:
      raise config_lib.ConfigError(f"study.online.beta={beta} must be one of study.betas")
    if "losses" in experiments:
      for loss in s.loss_variants:
        self.online(f"online_{loss}", s.model, loss, beta, "losses")
        self.offline(f"offline_{loss}", s.model, loss, beta, "losses", data=s.pairs + "_pairs",
                     pairs=dgolden)
    stream = self.path(source, "stream")
    replay = dict(deps=(source,), steps=s.online.steps, learning_rate=s.online.learning_rate,
                  seed=s.seeds[0])
    if "h1" in experiments:
      # Same loss, learning rate, seed and steps as the online run: the ordered replay
      # differs from it only in where the pairs come from. A determinism check of its
      # training statistics (the tandem effect), so it is not evaluated.
      self.offline("replay_ordered", s.model, "ipo", beta, "h1", data="online_ordered",
                   pairs=stream, order="ordered", evaluate=False, **replay)
      for w in s.h1_windows:
        self.offline(f"replay_window{w}", s.model, "ipo", beta, "h1",
                     data=f"online_window{w}", pairs=stream, order="window", window=w,
                     **replay)
      self.offline("replay_shuffled", s.model, "ipo", beta, "h1", data="online_shuffled",
                   pairs=stream, order="shuffled", **replay)
    if "h2" in experiments:
      for which in ("peak", "final"):
        name = f"{which}_pairs"
        self.pair_set(name, "h2", lambda d, w=which: self.generate_policy_pairs(d, source, w),
                      dict(kind="policy", which=which, num=s.num_pairs, labels=s.labels,
                           seed=s.seed), deps=(source,))
        self.offline(f"offline_{which}_pairs", s.model, "ipo", beta, "h2",
                     data=f"{which}_policy_pairs", pairs=self.path(name, "train"),
                     deps=(name,))
    if "h4" in experiments:
      self.online("online_best_of_2", s.model, "best_of_2", beta, "h4")
      self.offline("offline_best_of_2", s.model, "best_of_2", beta, "h4",
                   data=s.pairs + "_pairs", pairs=dgolden)
      self.offline("offline_best_of_2_replay", s.model, "best_of_2", beta, "h4",
                   data="online_shuffled", pairs=self.path("online_best_of_2", "stream"),
                   order="shuffled", deps=("online_best_of_2",), steps=s.online.steps,
                   learning_rate=s.online.learning_rate)
    kinds = (["writer"] if "writer" in experiments else []) + (
        ["writer", "gap", "mixed"] if "sec6" in experiments else [])
    for kind in dict.fromkeys(kinds):
      if kind == s.pairs:  # D_golden itself: the Fig. 1 offline arm already trains on it
        continue
      name = f"{kind}_pairs"
      self.pair_set(name, "sec6", lambda d, k=kind: self.generate_kind(d, k),
                    dict(kind=kind, num=s.num_pairs, labels=s.labels, seed=s.seed,
                         redraws=s.tie_redraws), deps=("sft",))
      self.offline(f"offline_{kind}_pairs", s.model, "ipo", beta, "sec6",
                   data=f"{kind}_pairs", pairs=self.path(name, "train"), deps=(name,))
    if "rl" in experiments or "staleness" in experiments:
      if "fig1" not in experiments:
        raise config_lib.ConfigError("study.experiments: rl and staleness are compared with "
                                     "the Fig. 1 arms; list 'fig1' too")
    if "rl" in experiments:
      self.add(Stage("rm", "pm", self.experiment("pm", {
          **self.pm_overrides(), "head": "reward"}),
          deps=("sft", "pairs"), group="foundation"))
      arms = {"rloo_rm": ("rloo", "reward"), "grpo_rm": ("grpo", "reward"),
              "grpo_pm": ("grpo", "proxy"), "rloo_golden": ("rloo", "golden")}
      for arm in s.rl.arms:
        if arm not in arms:
          raise config_lib.ConfigError(f"study.rl.arms: unknown {arm!r}; choose from "
                                       f"{sorted(arms)}")
        method, judge = arms[arm]
        self.online(f"online_{arm}", s.model, "ipo", beta, "rl", judge=judge,
                    data=f"online_{judge}", learning_rate=s.rl.learning_rate, rl={
                        "rl.method": method, "rl.samples": s.rl.samples, "rl.kl": s.rl.kl,
                        "rl.kl_coef": s.rl.kl_coef,
                        "rl.updates": s.rl.updates if method == "grpo" else 1,
                        "train.write_stream": False})
    if "staleness" in experiments:
      for k in s.staleness:
        self.online(f"online_ipo_stale{k}", s.model, "ipo", beta, "staleness",
                    data=f"online_stale{k}", rl={"rl.staleness": int(k)})
    if "h5" in experiments:
      for size in s.sizes:
        if size == s.model:
          continue
        sft, sft_eval = f"sft_{size}", f"sft_eval_{size}"
        self.sft(size, sft)
        self.sft_eval(sft_eval, size, sft)
        self.online(f"online_ipo_{size}", size, "ipo", beta, "h5", sft=sft, sft_eval=sft_eval,
                    deps=(sft_eval,))
        self.offline(f"offline_ipo_{size}", size, "ipo", beta, "h5", data=s.pairs + "_pairs",
                     pairs=dgolden, sft=sft, sft_eval=sft_eval, deps=(sft_eval,))
    return list(self.stages.values())

  # -- pair sets ---------------------------------------------------------------
  def _host(self):
    """Mesh, rules, vocabulary and golden judge for the pair-set stages."""
    from alignment import judges  # pylint: disable=g-import-not-at-top
    from alignment.data import tasks  # pylint: disable=g-import-not-at-top
    c = self.experiment("offline", {**self.common(self.s.model),
                                    "data.task": self.tasks()["pairs"]})
    distributed.setup_host()
    mesh, rules = sharding.mesh_and_rules(c.mesh)
    vocab = tasks.task_vocabulary(self.tasks()["prompts"])
    golden = judges.load_golden_judge(self.golden_export(), vocab, c.data, mesh, rules)
    return c, mesh, rules, vocab, golden

  def _policy(self, export: str, c, mesh, rules, vocab):
    from alignment import pairsets  # pylint: disable=g-import-not-at-top
    model, params = checkpoint.load_export(export, "lm", c.data, mesh, rules)
    return pairsets.PolicySampler(model, params, mesh, rules, c.data.response_len,
                                  vocab, self.s.sample_batch)

  def _prompts(self, split: str, num: int, c):
    """Enough prompts of `split` for `num` untied pairs, in whole sampling batches."""
    from alignment.data import pipeline  # pylint: disable=g-import-not-at-top
    b = self.s.sample_batch
    count = -(-int(num * (1 + self.s.tie_slack)) // b) * b
    return pipeline.fixed_batch(self.tasks()["prompts"], split, "prompts", count,
                                prompt_length=c.data.prompt_len,
                                response_length=c.data.response_len)

  def _sampled(self, policy, golden, split: str, num: int, seed: int, c, what: str):
    from alignment import pairsets  # pylint: disable=g-import-not-at-top
    pairs, tied = pairsets.sample_pairs(policy, golden, self._prompts(split, num, c), seed,
                                        self.s.tie_redraws)
    return pairsets.keep_untied(pairs, tied, num, what)

  def _write(self, out_dir: str, pairs, vocab, seed: int, golden) -> dict:
    """Labels the pairs by the golden judge's scores and writes them; the summary names
    the judge that labelled them."""
    from alignment import pairsets  # pylint: disable=g-import-not-at-top
    verdict = pairsets.label(pairs, self.s.labels, golden.tau, seed)
    return {**pairsets.write(out_dir, pairs, verdict, self.s.batch_size, vocab),
            "labelled_by": golden.kind, "golden_export": getattr(golden, "export", "")}

  def _kind_pairs(self, kind: str, c, mesh, rules, vocab, golden):
    """`num_pairs` train pairs of a kind (sft, writer, mixed, gap)."""
    from alignment import pairsets  # pylint: disable=g-import-not-at-top
    s = self.s
    if kind == "sft":
      policy = self._policy(self.export("sft"), c, mesh, rules, vocab)
      return self._sampled(policy, golden, "train", s.num_pairs, s.seed + 1, c, "D_golden")
    count = 2 * s.num_pairs if kind == "gap" else s.num_pairs
    writer, tied = pairsets.writer_pairs(self.tasks()["pairs"], "train",
                                         int(count * (1 + s.tie_slack)), c.data.prompt_len,
                                         c.data.response_len)
    if kind == "writer":
      return pairsets.keep_untied(writer, tied, s.num_pairs, "writer pairs")
    if kind == "gap":
      untied = pairsets.keep_untied(writer, tied, count, "writer pairs")
      return pairsets.widest_gap(untied, s.num_pairs)
    if kind == "mixed":
      policy = self._policy(self.export("sft"), c, mesh, rules, vocab)
      n = -(-len(writer) // s.sample_batch) * s.sample_batch
      writer = writer.take(np.arange(n) % len(writer))  # whole sampling batches
      pairs, tied = pairsets.mixed_pairs(policy, golden, writer, s.seed + 3, s.tie_redraws)
      return pairsets.keep_untied(pairs, tied, s.num_pairs, "mixed pairs")
    raise config_lib.ConfigError(f"pair-set kind {kind!r}")

  def generate_dgolden(self, out_dir: str) -> dict:
    """D_golden (pairs/train, the study's `pairs` kind) and the gate's held-out pairs of
    SFT samples on validation prompts (pairs/held_out)."""
    s = self.s
    c, mesh, rules, vocab, golden = self._host()
    summary = {"train": self._write(os.path.join(out_dir, "train"),
                                    self._kind_pairs(s.pairs, c, mesh, rules, vocab, golden),
                                    vocab, s.seed + 1, golden)}
    policy = self._policy(self.export("sft"), c, mesh, rules, vocab)
    held_out = self._sampled(policy, golden, "validation", s.held_out_pairs, s.seed + 2, c,
                             "held-out SFT pairs")
    summary["held_out"] = self._write(os.path.join(out_dir, "held_out"), held_out, vocab,
                                      s.seed + 2, golden)
    return summary

  def generate_kind(self, out_dir: str, kind: str) -> dict:
    c, mesh, rules, vocab, golden = self._host()
    pairs = self._kind_pairs(kind, c, mesh, rules, vocab, golden)
    return {"train": self._write(os.path.join(out_dir, "train"), pairs, vocab, self.s.seed + 4,
                                 golden)}

  def generate_policy_pairs(self, out_dir: str, source: str, which: str) -> dict:
    """H2: two samples per train prompt of `source`'s policy at its peak evaluation
    (the export its evaluation saved there) or at its end, golden-labelled."""
    from alignment import report  # pylint: disable=g-import-not-at-top
    c, mesh, rules, vocab, golden = self._host()
    if which == "final":
      export, step = self.export(source), self.s.online.steps
    else:
      points = report.run_points(self.workdir, source, None)
      best = max(points, key=lambda p: p["golden_win_rate"])
      step = best["step"]
      export = self.path(source, "eval", f"step_{step:06d}")
    policy = self._policy(export, c, mesh, rules, vocab)
    pairs = self._sampled(policy, golden, "train", self.s.num_pairs, self.s.seed + 5, c,
                          f"{which}-policy pairs")
    return {"policy_step": int(step),
            "train": self._write(os.path.join(out_dir, "train"), pairs, vocab, self.s.seed + 5,
                                 golden)}


def plan(study, workdir: str) -> list[Stage]:
  return Planner(study, workdir).build()


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


_WORKDIR = "<workdir>"


def config_hash(stage: Stage, dep_hashes: tuple[str, ...] = (), workdir: str = "") -> str:
  """Hash of a stage's own config (or pair-set parameters) and of its dependencies'
  hashes: any change upstream changes it. Paths inside the study's workdir (an
  upstream stage's export, a pair set) count relative to it, so a study moved or
  copied elsewhere keeps its finished stages."""
  own = stage.config.to_json_best_effort(sort_keys=True) if stage.config is not None \
      else json.dumps({"kind": stage.kind, "params": stage.params}, sort_keys=True)
  if workdir:
    for prefix in sorted({workdir.rstrip("/"), _abspath(workdir)}, key=len, reverse=True):
      own = own.replace(prefix + "/", _WORKDIR + "/")
  payload = json.dumps({"own": own, "deps": list(dep_hashes)})
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _abspath(workdir: str) -> str:
  return workdir.rstrip("/") if "://" in workdir else os.path.abspath(workdir)


def stage_hashes(stages: list[Stage], workdir: str = "") -> dict[str, str]:
  """Every stage's hash, dependencies first (stages are planned in dependency order);
  `workdir`: the study's, whose paths count relative to it (`config_hash`)."""
  hashes: dict[str, str] = {}
  for st in stages:
    hashes[st.name] = config_hash(st, tuple(hashes[d] for d in st.deps), workdir)
  return hashes


def stage_done(workdir: str, stage: Stage, stage_hash: str) -> bool:
  path = os.path.join(workdir, stage.name, "STAGE.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f).get("config_hash") == stage_hash


def run_stage(workdir: str, stage: Stage, stage_hash: str) -> dict:
  from alignment import main as main_lib  # pylint: disable=g-import-not-at-top
  stage_dir = os.path.join(workdir, stage.name)
  marker = os.path.join(stage_dir, "STAGE.json")
  if os.path.exists(marker):  # finished with another config or upstream: start over
    log.warning("stage %s: its config or an upstream stage changed; running it again",
                stage.name)
    shutil.rmtree(stage_dir)
  os.makedirs(stage_dir, exist_ok=True)
  start = time.time()
  if stage.kind in ("pairs", "given"):
    summary = stage.generate(stage_dir)
  else:
    summary = main_lib.run(stage.config, stage_dir) or {}
    if bookkeeping.preempted():  # stopped early: its checkpoint is saved, it is not done
      raise Preempted(f"[study] stopped after SIGTERM in stage {stage.name} (its checkpoint "
                      "is saved); rerun the same command to continue")
    if stage.kind == "eval":
      summary = {"points": summary.get("points", [])}
  faults.hit("after_stage", stage.name)
  info = {"stage": stage.name, "kind": stage.kind, "config_hash": stage_hash,
          "deps": list(stage.deps), "seconds": round(time.time() - start, 1),
          "summary": _jsonable(summary)}
  if stage.config is not None:
    info["config"] = json.loads(stage.config.to_json_best_effort())
  if stage.params is not None:
    info["params"] = stage.params
  files.write_json(marker, info)
  return info


def _jsonable(x):
  return json.loads(json.dumps(x, default=lambda o: float(o) if np.isscalar(o) else str(o)))


def run(study, workdir: str) -> dict:
  """Runs (or continues) every stage, then writes results.json, report.md, plots."""
  with lock.held(workdir):  # each stage's run holds its own directory below it
    return _run_stages(study, workdir)


def _run_stages(study, workdir: str) -> dict:
  from alignment import report  # pylint: disable=g-import-not-at-top
  distributed.setup_host()
  _enable_compilation_cache(workdir)
  os.makedirs(workdir, exist_ok=True)
  planner = Planner(study, workdir)
  stages = planner.build()
  hashes = stage_hashes(stages, workdir)
  t0 = time.time()
  for i, stage in enumerate(stages):
    if stage_done(workdir, stage, hashes[stage.name]):
      print(f"[study] {i + 1}/{len(stages)} {stage.name}: done (cached)", flush=True)
      continue
    print(f"[study] {i + 1}/{len(stages)} {stage.name} ({stage.kind}) ... elapsed "
          f"{time.time() - t0:.0f}s", flush=True)
    info = run_stage(workdir, stage, hashes[stage.name])
    print(f"[study] {stage.name}: {info['seconds']:.0f}s", flush=True)
  return report.write(study, workdir, stages, golden_judge(planner))


def golden_judge(planner: Planner) -> dict:
  """results.json's account of the golden judge: the environment's program, or the
  golden PM (its export and its stage's held-out metrics on the raters' labels)."""
  export = planner.golden_export()
  if not export:
    return {"kind": "program"}
  with open(planner.path("golden_pm", "STAGE.json")) as f:
    info = json.load(f)
  return {"kind": "golden_pm", "export": export, "import_dir":
          os.path.abspath(planner.s.import_dir), "trained_on": planner.tasks()["pairs"],
          "summary": info.get("summary", {})}


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
  except Preempted as e:
    print(e, file=sys.stderr)
    return 0
  except Exception as e:  # pylint: disable=broad-except
    from alignment import main as main_lib  # pylint: disable=g-import-not-at-top
    line = main_lib.error_line(e)
    if line is None:
      raise
    print(line, file=sys.stderr)
    return 2
  print(f"[study] wrote {results['report']}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())

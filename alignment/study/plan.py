"""Planning a study: its stages from its config, the foundation first, then each
listed experiment's.

    Planner(study, workdir).build() -> [Stage, ...] in dependency order

The Planner holds what every stage shares (model sizes, lengths, the evaluation,
the foundation's exports and tasks) and has one method per kind of stage: `sft`,
`sft_eval`, `pm`, `online`, `offline`, `pair_set`. The foundation
(`alignment.study.foundation`: SFT, D_golden, the proxy PM, the SFT policy's own
evaluation) plans first; then each experiment of `study.experiments`
(`alignment.study.experiment`) adds its stages through those methods.

FOUNDATIONS. With `foundations` > 1 the foundation is redrawn: foundation f >= 1
is the study's own foundation planned again with study seed `seed + FOUNDATION_SEED
* f` (its SFT, D_golden, proxy PM and run seeds all redrawn), in the subdirectory
f<f>/ of the workdir, with the experiments `foundation_experiments` planned on it
through a view of the Planner whose stage names carry the prefix "f<f>/"
(`Planner.name`). A redrawn run keeps its arm's name and records its foundation,
so an arm pools its runs over the foundations and the intervals carry the
foundation's variance (`alignment.stats`).

Every alignment run starts from its SFT export and evaluates at log-spaced steps
(the rise and fall of online runs happen early), writing the per-prompt values
behind each point (<run>/eval/step_N.npz) from which the report draws its
intervals.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np

from alignment import config as config_lib
from alignment import layout, pairsets
from alignment.study import experiments as experiments_lib
from alignment.study import foundation
from alignment.study import rate_search
from alignment.study.stages import Stage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log_steps(total: int, points: int, first: int) -> list[int]:
  """About `points` evaluation steps from `first` to `total`, evenly spaced in log(step)."""
  if total <= first or points <= 1:
    return [total]
  raw = np.geomspace(first, total, points)
  steps = sorted({int(round(x)) for x in raw} | {total})
  return [s for s in steps if 1 <= s <= total]


FOUNDATION_SEED = 1000  # foundation f's study seed: seed + FOUNDATION_SEED * f


foundation_prefix = foundation.prefix  # f<f>/ of foundation f's stages


def redrawn(study, f: int):
  """The study as foundation f sees it: its seed moved by FOUNDATION_SEED * f."""
  if not f:
    return study
  out = study.copy_and_resolve_references()
  with out.unlocked():
    out.seed = study.seed + FOUNDATION_SEED * f
  return out


class Planner:
  """The stages of one study: `build()` plans them; experiments add theirs through
  the stage methods below. A view for a redrawn foundation (`foundation` f >= 1)
  shares the stage table; every stage name it is given or asked about is foundation
  f's (`name`)."""

  def __init__(self, study, workdir: str, experiments=None, foundation: int = 0,
               stages: Optional[dict] = None):
    self.s = redrawn(study, foundation)
    self.workdir = workdir
    self.f = foundation
    self.stages: dict[str, Stage] = {} if stages is None else stages
    self.experiments = (experiments_lib.resolve(study.experiments) if experiments is None
                        else experiments)
    if study.import_dir:  # real data: register the import's tasks in this process
      from alignment.data import tasks  # pylint: disable=g-import-not-at-top
      tasks.resolve(os.path.abspath(study.import_dir))

  def build(self) -> list[Stage]:
    """Checks the config, then plans the foundation and every listed experiment, then
    each redrawn foundation with the experiments `foundation_experiments` lists."""
    foundation.check(self.s)
    for e in self.experiments:
      e.check(self.s)
    foundation.plan(self)  # with no experiments, the study is its foundation and gate
    for e in self.experiments:
      e.plan(self)
    again = [e for e in self.experiments if e.name in self.s.foundation_experiments]
    if self.s.foundations > 1 and not again:
      raise config_lib.ConfigError(
          f"study.foundations={self.s.foundations} with no study.foundation_experiments "
          "listed in study.experiments: the redrawn foundations would train for nothing")
    for e in again if self.s.foundations > 1 else ():
      missing = [n for n in e.needs if n not in self.s.foundation_experiments]
      if missing:
        raise config_lib.ConfigError(
            f"study.foundation_experiments: {e.name} needs {missing} on every foundation; "
            "list them too")
    for f in range(1, self.s.foundations):
      view = Planner(self.s, self.workdir, again, foundation=f, stages=self.stages)
      foundation.plan(view)
      for e in again:
        e.plan(view)
    return list(self.stages.values())

  def name(self, stage: str) -> str:
    """Stage `stage` of this view's foundation (f<f>/<stage>; the first's: itself)."""
    return foundation_prefix(self.f) + stage

  def planned(self, stage: str) -> bool:
    return self.name(stage) in self.stages

  # -- helpers ---------------------------------------------------------------
  def ablation_seeds(self) -> list[int]:
    """The seeds of every arm beyond Fig. 1 and the attribution (`ablation_seeds`, or
    the study's seeds)."""
    return list(self.s.ablation_seeds or self.s.seeds)

  def path(self, stage: str, *parts) -> str:
    return os.path.join(layout.stage(self.workdir, self.name(stage)), *parts)

  def export(self, stage: str) -> str:
    """A stage's params export (for "sft", the user's own SFT policy where given)."""
    if stage == "sft" and self.s.sft_export:
      return os.path.abspath(self.s.sft_export)
    return layout.export(layout.stage(self.workdir, self.name(stage)))

  def stream(self, stage: str) -> str:
    """An online stage's D_online stream."""
    return layout.stream(layout.stage(self.workdir, self.name(stage)))

  def experiment(self, name: str, overrides: dict):
    """configs/<name>.py at the study's base variant, with the stage's overrides."""
    c = config_lib.load(os.path.join(ROOT, "configs", f"{name}.py:{self.s.base_variant}"))
    for key, value in overrides.items():
      config_lib.set_key(c, key, value, f"study stage ({name})")
    return c

  def add(self, stage: Stage):
    """Plans a stage after the stages it depends on (each planned once). Its name, deps
    and step-0 stage are this view's foundation's; a run records its foundation and
    keeps its arm's name, shared over the foundations."""
    if stage.run is not None:
      stage.run = {**stage.run, "foundation": self.f}
    stage.name, stage.sft_eval = self.name(stage.name), self.name(stage.sft_eval)
    stage.deps = tuple(dict.fromkeys(self.name(d) for d in stage.deps))
    if stage.name in self.stages:
      raise ValueError(f"stage {stage.name!r} planned twice")
    missing = [d for d in stage.deps if d not in self.stages]
    if missing:
      raise ValueError(f"stage {stage.name!r} depends on unplanned {missing}")
    self.stages[stage.name] = stage

  def tasks(self) -> dict[str, str]:
    """The seqio tasks of the SFT data, the rater/writer pairs and the prompts."""
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
    """The overrides every stage of `model` shares (seed k of the study: seed + k)."""
    s = self.s
    return {"seed": s.seed + seed, "data.shuffle_seed": s.seed + seed, "model.name": model,
            "data.batch_size": s.batch_size, "data.prompt_len": s.prompt_len,
            "data.response_len": s.response_len}

  def eval_overrides(self, sft: str, steps: int) -> dict:
    """Evaluation at log-spaced steps against the study's reference and judges, with
    KL against the SFT policy of stage `sft`."""
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

  # -- sizes -------------------------------------------------------------------
  def lr_scale(self, model: str) -> float:
    """The factor on every learning rate of a stage of `model` (`size_lr`): "width",
    d_model(study.model) / d_model(model), the rate falling as the width grows (Adam's
    update size does not shrink with the width, so a rate tuned for one width is too
    large for a wider model: t5-mini's SFT at t5-tiny's rate had gradient norms of
    10-15 and ended with a worse held-out loss than t5-tiny's); "same": 1. The study's
    own model always has factor 1."""
    if model == self.s.model or self.s.size_lr == "same":
      return 1.0
    from alignment.models import zoo  # pylint: disable=g-import-not-at-top
    return zoo.get(self.s.model).d_model / zoo.get(model).d_model

  def sized(self, size: str) -> tuple[str, str]:
    """(SFT stage, its evaluation stage) of a policy of `size`: the foundation's for the
    study's model, else sft_<size> and sft_eval_<size>, planned once whoever asks
    first (H5's policy axis, the proxy axis's and the judge axis's PMs share them)."""
    if size == self.s.model:
      return "sft", "sft_eval"
    sft, sft_eval = self.sft_of(size), f"sft_eval_{size}"
    if not self.planned(sft_eval):
      self.sft_eval(sft_eval, size, sft)
    return sft, sft_eval

  def sft_of(self, size: str) -> str:
    """The SFT stage of `size` (`sized`, without the evaluation a PM's backbone does
    not need)."""
    if size == self.s.model:
      return "sft"
    if not self.planned(f"sft_{size}"):
      self.sft(size, f"sft_{size}")
    return f"sft_{size}"

  def pm_of(self, size: str, group: str) -> str:
    """The proxy PM of `size` on D_golden (the proxy PM's pairs and steps, its rate by
    `lr_scale`) from that size's own SFT backbone: pm_<size> (the study's model: pm),
    planned once whoever asks first."""
    if size == self.s.model:
      return "pm"
    name, sft = f"pm_{size}", self.sft_of(size)
    if not self.planned(name):
      self.pm(name, {**self.pm_overrides(), "model.name": size, "init.backbone": self.export(sft),
                     "optimizer.learning_rate": self.s.pm.learning_rate * self.lr_scale(size)},
              deps=(sft, "pairs"), group=group, sft=sft)
    return name

  # -- stages ------------------------------------------------------------------
  def sft(self, model: str, name: str, group: str = "foundation"):
    """Supervised fine-tuning of `model` on the SFT task (stage `name`), at the study's
    SFT rate times `lr_scale`. With `sft.criterion.every` > 0 it is trained to a
    criterion rather than for a fixed number of steps: the held-out loss, evaluated every
    `criterion.every` steps, has improved by less than `criterion.tol` (relative) over
    `criterion.patience` evaluations, or `sft.steps` (the cap) is reached; the rate is
    then constant after warm-up, so where it stops is not set by a decay planned for the
    cap. With `sft.rates` its rate is that rate times the factor whose pilot stage
    (<name>_lr<i>, `sft.pilot_steps` steps) ended lowest in held-out SFT loss
    (`alignment.study.rate_search`)."""
    s, c = self.s, self.s.sft.criterion
    rate = s.sft.learning_rate * self.lr_scale(model)
    overrides = {**self.common(model), "data.task": self.tasks()["sft"],
                 "train.num_steps": s.sft.steps, "optimizer.learning_rate": rate,
                 "optimizer.decay_steps": s.sft.steps, "eval.every": s.sft.steps,
                 "train.checkpoint_every": s.sft.steps}
    if c.every:
      overrides.update({"optimizer.schedule": "constant", "optimizer.decay_steps": 0,
                        "eval.every": c.every, "criterion.patience": c.patience,
                        "criterion.tol": c.tol,
                        "train.checkpoint_every": min(s.sft.steps, 4 * c.every)})
    if not s.sft.rates:
      self.add(Stage(name, "sft", self.experiment("sft", overrides), group=group))
      return
    pilots = []
    for i, factor in enumerate(s.sft.rates):  # the run's first pilot_steps at each rate
      pilots.append(f"{name}_lr{i}")
      self.add(Stage(pilots[-1], "sft", self.experiment("sft", {
          **overrides, "train.num_steps": s.sft.pilot_steps, "criterion.patience": 0,
          "optimizer.learning_rate": rate * factor, "eval.every": s.sft.pilot_steps,
          "train.checkpoint_every": s.sft.pilot_steps}), group=group))
    factors = tuple(float(m) for m in s.sft.rates)
    self.add(Stage(name, "sft", self.experiment("sft", overrides), deps=tuple(pilots),
                   group=group, params={"rates": list(factors), "rule": rate_search.RULE},
                   resolve=rate_search.SftRate(tuple(self.name(p) for p in pilots),
                                               factors, rate)))

  def searched(self, sft: str) -> bool:
    """Whether SFT stage `sft` chose its rate (`sft.rates`; not a given SFT export)."""
    return bool(self.s.sft.rates) and not (sft == "sft" and self.s.sft_export)

  def pm_overrides(self) -> dict:
    """A preference (or reward) model on D_golden from the SFT backbone: the proxy PM's
    pairs, steps and rate, its held-out accuracy on the gate's pairs."""
    s, t = self.s, self.tasks()
    return {**self.common(s.model), "data.task": t["pairs"], "train.num_steps": s.pm.steps,
            "optimizer.learning_rate": s.pm.learning_rate, "optimizer.decay_steps": s.pm.steps,
            "data.replay_dir": self.path("pairs", "train"), "init.backbone": self.export("sft"),
            "eval.pairs_dir": self.path("pairs", "held_out"),
            "eval.num_batches": s.held_out_pairs // s.batch_size,
            "eval.every": s.pm.steps, "train.checkpoint_every": s.pm.steps}

  def pm(self, name: str, overrides: dict, deps: tuple[str, ...], group: str = "foundation",
         sft: str = ""):
    """A preference-model stage (configs/pm.py) with `overrides`; `sft`: the SFT stage of
    its backbone, whose chosen rate factor (`sft.rates`) multiplies its rate."""
    resolve = params = None
    if sft and self.searched(sft):
      rate = overrides["optimizer.learning_rate"]
      resolve = rate_search.BackboneRate(self.name(sft), rate)
      params = {"rate_factor_of": sft}
    self.add(Stage(name, "pm", self.experiment("pm", overrides), deps=deps, group=group,
                   resolve=resolve, params=params))

  def sft_eval(self, name: str, model: str, sft: str):
    """The SFT policy's own evaluation: the step-0 point of the runs that start from it."""
    ev = self.experiment("eval", {**self.common(model), "data.task": self.tasks()["prompts"],
                                  **self.eval_overrides(sft, 1), "eval.policy": self.export(sft)})
    self.add(Stage(name, "eval", ev, deps=(sft, "pairs", "pm") + self.reference_deps(),
                   group="foundation"))

  # -- alignment runs ----------------------------------------------------------
  def online(self, name: str, model: str, loss: str, beta: float, group: str, *,
             judge: str = "proxy", data: str = "online", seed: int = 0, arm: str = "",
             deps: tuple[str, ...] = (), sft: str = "sft", sft_eval: str = "sft_eval",
             reference: str = "", save_params: bool = False, rl: Optional[dict] = None,
             learning_rate: float = 0.0, judge_stage: str = "pm", judge_flip: float = 0.0):
    """Online training from the SFT policy `sft`, judged by `judge` (proxy: the PM of
    `judge_stage`; reward: the reward model of `judge_stage`; golden: the golden judge,
    with judge_flip > 0 that share of its verdicts flipped, `judges.NoisyGoldenJudge`);
    rl: rl.* overrides (RLOO, GRPO, staleness), recorded in the run's hparams."""
    if judge_flip and (judge != "golden" or self.golden_export()):
      raise config_lib.ConfigError(f"stage {name}: judge_flip={judge_flip} flips the golden "
                                   f"program's verdicts; not judge {judge!r} or a golden PM")
    s, t = self.s, self.tasks()
    steps = s.online.steps
    lr = learning_rate or s.online.learning_rate
    judge_export = "" if judge == "golden" else self.export(judge_stage)
    overrides = {**self.common(model, seed), "data.task": t["prompts"],
                 "train.num_steps": steps, "optimizer.learning_rate": lr,
                 "loss.name": loss, "loss.beta": beta,
                 "sampling.temperature": s.online.temperature, "init.policy": self.export(sft),
                 "judge.kind": judge, "judge.checkpoint": judge_export,
                 **({"judge.golden_checkpoint": self.golden_export()} if judge == "golden"
                    else {}),
                 **({"judge.flip_rate": float(judge_flip), "judge.flip_seed": s.seed}
                    if judge_flip else {}),
                 **(rl or {}),
                 "train.checkpoint_every": s.checkpoint_every,
                 **self.eval_overrides(sft, steps), "eval.save_params": save_params}
    if reference:  # the golden policy itself is measured against SFT
      overrides["eval.reference"] = self.export(reference)
      deps = (sft, "pairs", "pm") + deps
    else:
      deps = (sft, "pairs", "pm", sft_eval) + self.reference_deps() + deps
    if judge != "golden":
      deps = deps + (judge_stage,)
    if judge == "golden":
      deps = deps + self.golden_deps()
    rl = rl or {}
    method = rl.get("rl.method", "contrastive")
    config = self.experiment("online", overrides)
    if not judge_flip:
      _without_flip_keys(config)
    self.add(Stage(name, "online", config, deps=deps,
                   run=dict(algorithm=loss if method == "contrastive" else method,
                            mode="online", data=data,
                            hparams=dict(learning_rate=lr, beta=beta, steps=steps,
                                         model=model, seed=s.seed + seed,
                                         staleness=rl.get("rl.staleness", 0),
                                         temperature=s.online.temperature,
                                         judge=judge,
                                         **({"judge_flip": float(judge_flip)}
                                            if judge == "golden" else {}),
                                         **{k[3:]: v for k, v in rl.items()
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
    """A pair-set stage: generate(stage_dir) writes it; `params` say what it is made from
    (they are its hash)."""
    self.add(Stage(name, "pairs", deps=deps, group=group, params=params, generate=generate))

  def pair_maker(self) -> pairsets.Maker:
    """Sets up this process to sample, label and write pair sets (call it in `generate`,
    at the stage's run, not while planning)."""
    s = self.s
    c = self.experiment("offline", {**self.common(s.model), "data.task": self.tasks()["pairs"]})
    return pairsets.Maker(pairsets.Recipe(
        config=c, prompts_task=self.tasks()["prompts"], pairs_task=self.tasks()["pairs"],
        golden_export=self.golden_export(), labels=s.labels, batch_size=s.batch_size,
        sample_batch=s.sample_batch, tie_redraws=s.tie_redraws, tie_slack=s.tie_slack))


FLIP_KEYS = ("flip_rate", "flip_seed")


def _without_flip_keys(config) -> None:
  """Leaves the noisy golden judge's keys out of an online stage's config where they
  are at their defaults (no flips): the config, and so the hash, of every online stage
  planned before the keys existed stays what it was."""
  with config.unlocked():
    for key in FLIP_KEYS:
      if key in config.judge:
        del config.judge[key]


def plan(study, workdir: str) -> list[Stage]:
  return Planner(study, workdir).build()

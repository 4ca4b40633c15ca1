"""The foundation of every study: SFT, D_golden, the proxy PM, the SFT policy's own
evaluation, and the set-up gate that says whether the proxy can rank the SFT
policy's samples at all.

  sft        SFT on both responses of every writer pair (or, with study.sft_export,
             the user's own SFT policy, recorded as a "given" stage)
  golden_pm  real data only (study.import_dir): a pairwise PM trained on the raters'
             labels; it labels D_golden and scores every golden win rate (a chat
             import whose replies end at an id the samplers do not stop at is refused)
  pairs      D_golden: `num_pairs` pairs of the kind `pairs` (sft: two samples of the
             SFT policy per train prompt, golden-labelled; writer; mixed) in
             pairs/train, and `held_out_pairs` pairs of SFT samples on validation
             prompts in pairs/held_out (the gate's pairs)
  pm         the proxy PM on pairs/train, from the SFT backbone; its held-out accuracy
             on pairs/held_out is the set-up gate
  golden_policy  with study.golden_policy: online IPO against the golden judge, the
             win-rate reference of every point (the paper's)
  sft_eval   the SFT policy's own evaluation: the step-0 point of every curve
"""
from __future__ import annotations

import os
import re

import numpy as np

from alignment import config as config_lib
from alignment import files, layout, stats
from alignment.study import arms as arms_lib
from alignment.study import stages as stages_lib
from alignment.study.stages import Stage

PAIR_KINDS = ("sft", "writer", "mixed")
NO_WRITER_SCORES = (
    "study.import_dir: writer and mixed pair sets (study.pairs, experiments writer "
    "and sec6) need golden scores of the writer's responses, which rater-labelled "
    "pairs do not have; use pairs='sft' without writer and sec6")


def prefix(f: int) -> str:
  """The stage-name prefix (and workdir subdirectory) of foundation f: "" for the first
  (alignment.study.plan, FOUNDATIONS)."""
  return f"f{f}/" if f else ""


def check(s) -> None:
  """The foundation's config: one ConfigError naming the key."""
  if s.pairs not in PAIR_KINDS:
    raise config_lib.ConfigError(f"study.pairs={s.pairs!r}: choose one of {PAIR_KINDS}")
  if s.scale == "real" and not s.import_dir:
    raise config_lib.ConfigError("study scale 'real' needs --config.import_dir=DIR (a "
                                 "directory written by alignment.data.import_pairs)")
  if s.import_dir and s.pairs != "sft":
    raise config_lib.ConfigError(NO_WRITER_SCORES)
  if not s.seeds:
    raise config_lib.ConfigError("study.seeds: at least one seed")
  if len(set(s.seeds)) != len(s.seeds) or len(set(s.ablation_seeds)) != len(s.ablation_seeds):
    raise config_lib.ConfigError(f"study.seeds={list(s.seeds)}, study.ablation_seeds="
                                 f"{list(s.ablation_seeds)}: a seed is listed twice")
  if not set(s.ablation_seeds) <= set(s.seeds):
    raise config_lib.ConfigError(f"study.ablation_seeds={list(s.ablation_seeds)} must be a "
                                 f"subset of study.seeds={list(s.seeds)} (H1 replays those "
                                 "seeds' online runs)")
  if s.online.beta not in s.betas:
    raise config_lib.ConfigError(f"study.online.beta={s.online.beta} must be one of "
                                 "study.betas")
  if s.size_lr not in ("width", "same"):
    raise config_lib.ConfigError(f"study.size_lr={s.size_lr!r}: choose width or same")
  c = s.sft.criterion
  rates = list(s.sft.rates)
  if rates and (min(rates) <= 0 or len(set(rates)) != len(rates) or not c.every or
                not 0 < s.sft.pilot_steps < s.sft.steps):
    raise config_lib.ConfigError(
        f"study.sft.rates={rates}, pilot_steps={s.sft.pilot_steps}: distinct positive "
        f"factors on each SFT's rate, pilots of 0 < pilot_steps < sft.steps={s.sft.steps} "
        "steps, and sft.criterion.every > 0 (a constant rate, so that a pilot is the first "
        "steps of the run at its rate)")
  if c.every < 0 or (c.every and (c.patience < 1 or not 0 <= c.tol < 1)):
    raise config_lib.ConfigError(
        f"study.sft.criterion={c.to_dict()}: every >= 0 (0: a fixed number of steps); with "
        "every > 0, patience >= 1 and 0 <= tol < 1")
  if s.foundations < 1:
    raise config_lib.ConfigError(f"study.foundations={s.foundations}: at least 1")
  if s.foundations > 1 and (s.import_dir or s.sft_export or s.golden_policy):
    raise config_lib.ConfigError(
        f"study.foundations={s.foundations}: a redrawn foundation needs the environment's "
        "golden judge and SFT of its own (not import_dir, sft_export or golden_policy)")
  unlisted = [e for e in s.foundation_experiments if e not in s.experiments]
  if s.foundations > 1 and unlisted:
    raise config_lib.ConfigError(f"study.foundation_experiments: {unlisted} not in "
                                 f"study.experiments={list(s.experiments)}")
  rates, betas = list(s.learning_rates), list(s.betas)
  # Distinct as the arms name them (`fig1.grid`: lr{:g}, b{:g}), or two arms would merge.
  for key, values in (("learning_rates", rates), ("betas", betas)):
    if values and (len({f"{v:g}" for v in values}) != len(values) or min(values) <= 0):
      raise config_lib.ConfigError(f"study.{key}={values}: positive and distinct to 6 "
                                   "significant digits (the arms' names carry them so)")
  for mode in ("online", "offline"):
    if rates and s[mode].learning_rate not in rates:
      raise config_lib.ConfigError(
          f"study.{mode}.learning_rate={s[mode].learning_rate} must be one of "
          f"study.learning_rates={rates} (the main {mode} arm is at it)")


def plan(p) -> None:
  """Plans the foundation's stages on the Planner `p`."""
  s = p.s
  if s.sft_export:  # given, not trained: a stage that records it
    export = p.export("sft")
    p.add(Stage("sft", "given", params=dict(export=export), group="foundation",
                generate=lambda d: {"export": export}))
  else:
    p.sft(s.model, "sft")
  if s.import_dir:
    golden_pm(p)
  p.add(Stage("pairs", "pairs", deps=("sft",) + p.golden_deps(), group="foundation",
              params=dict(kind=s.pairs, num=s.num_pairs, held_out=s.held_out_pairs,
                          labels=s.labels, seed=s.seed, redraws=s.tie_redraws,
                          golden=p.golden_export()),
              generate=lambda out_dir: generate_dgolden(p, out_dir)))
  p.pm("pm", p.pm_overrides(), deps=("sft", "pairs"), sft="sft")
  if s.golden_policy:
    p.online("golden_policy", s.model, "ipo", s.online.beta, "foundation", judge="golden",
             data="golden_judge", deps=("sft",), reference="sft")
    p.stages["golden_policy"].run = None  # a reference, not a curve of the study
  p.sft_eval("sft_eval", s.model, "sft")


def golden_pm(p) -> None:
  """Real data: the golden judge is a pairwise PM trained on the raters' labels (the
  import's train split; its held-out accuracy on the validation split), from the SFT
  backbone. It labels D_golden and scores every golden win rate."""
  s, g = p.s, p.s.golden_pm
  check_end_of_turn(p)
  p.pm("golden_pm", {
      **p.common(s.model), "data.task": p.tasks()["pairs"],
      "train.num_steps": g.steps, "optimizer.learning_rate": g.learning_rate,
      "optimizer.decay_steps": g.steps, "init.backbone": p.export("sft"),
      "eval.num_batches": g.eval_batches, "eval.every": g.steps,
      "train.checkpoint_every": g.steps}, deps=("sft",))


def check_end_of_turn(p) -> None:
  """A chat import's replies end with its template's end-of-turn token; the study's
  samplers (D_golden's, online, evaluation) stop at the vocabulary's stop ids, its EOS
  and its template's end-of-turn token (`vocab.sampling_ids`; Gemma's <end_of_turn>
  beside <eos>). An import whose replies end at an id none of them stops at (a
  template changed since the import) would have every sampled reply run on past the
  end of its turn: refused in one line, before anything trains."""
  from alignment.data import import_pairs, tasks  # pylint: disable=g-import-not-at-top
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  directory = os.path.abspath(p.s.import_dir)
  ends = (import_pairs.read_metadata(directory).get("chat_template") or {}).get(
      "end_of_turn") or []
  if not ends:  # not a chat import
    return
  vocab = tasks.task_vocabulary(p.tasks()["prompts"])
  stops = vocab_lib.stop_ids(vocab)
  if not set(ends) <= set(stops):
    name = lambda i: repr(vocab.tokenizer.id_to_token(i))
    raise config_lib.ConfigError(
        f"study.import_dir: {os.path.join(directory, import_pairs.META)}: the chat template "
        f"ends replies with {', '.join(f'{name(i)} ({i})' for i in ends)}, but the study's "
        f"samplers stop at {', '.join(f'{name(i)} ({i})' for i in stops)} (the EOS and "
        f"the end-of-turn token of the chat template beside {vocab.path}); import the "
        "pairs again with that model directory")


def pair_seed(s, kind: str) -> int:
  """The labels' and samples' seed of a pair set of `kind` drawn from the SFT policy."""
  return s.seed + (3 if kind == "mixed" else 1)


def generate_dgolden(p, out_dir: str) -> dict:
  """D_golden (pairs/train, the study's `pairs` kind) and the gate's held-out pairs of
  SFT samples on validation prompts (pairs/held_out)."""
  s, maker = p.s, p.pair_maker()
  train = maker.of_kind(s.pairs, p.export("sft"), s.num_pairs, pair_seed(s, s.pairs))
  summary = {"train": maker.write(os.path.join(out_dir, "train"), train, s.seed + 1)}
  held_out = maker.sampled(maker.policy(p.export("sft")), "validation", s.held_out_pairs,
                           s.seed + 2, "held-out SFT pairs")
  summary["held_out"] = maker.write(os.path.join(out_dir, "held_out"), held_out, s.seed + 2)
  return summary


# ---------------------------------------------------------------------------
# The set-up gate and the golden judge's account
# ---------------------------------------------------------------------------


def held_out_accuracy(workdir: str, stage: str):
  """A preference or reward model stage's last held-out accuracy on the gate's pairs,
  with its Wilson 95% interval (None before it evaluated)."""
  path = layout.metrics(layout.stage(workdir, stage))
  rows = [r for r in files.read_jsonl(path) if "eval/accuracy" in r] if os.path.exists(
      path) else []
  if not rows:
    return None
  acc, n = rows[-1]["eval/accuracy"], int(rows[-1].get("eval/pairs", 0))
  lo, hi = stats.wilson(acc * n, n) if n else (float("nan"), float("nan"))
  return {"agreement": arms_lib.r(acc, 4), "interval": [arms_lib.r(lo, 4), arms_lib.r(hi, 4)],
          "pairs": n, "position_bias": arms_lib.r(rows[-1].get("eval/position_bias"))}


def gate(workdir: str, stages, runs: list[dict]) -> dict:
  """Can the proxy rank the SFT policy's samples? The figures that say so, first.

  proxy_agreement: the proxy PM's debiased verdict against the golden label on the
  held-out pairs of SFT samples (pairs/held_out: validation prompts, golden ties
  dropped), with a Wilson 95% interval; the gate passes when the interval lies
  above 0.5. sft_golden_score: the SFT policy's mean golden score on the win
  prompts, with its standard error. sft_self_agreement: the same agreement on
  two SFT samples per win prompt (the evaluation's step-0 point).
  """
  out: dict = {}
  by = {st.name: st for st in stages}
  pm = held_out_accuracy(workdir, "pm")
  if pm:
    out.update(proxy_agreement=pm["agreement"], proxy_agreement_interval=pm["interval"],
               proxy_agreement_pairs=pm["pairs"], proxy_position_bias=pm["position_bias"])
  sft = arms_lib.read_arrays(layout.eval_arrays(layout.stage(workdir, "sft_eval"), 0))
  if sft is not None:
    m, se = stats.mean_se(sft["golden_score"])
    out.update(sft_golden_score=arms_lib.r(m), sft_golden_score_se=arms_lib.r(se),
               sft_golden_score_interval=[arms_lib.r(m - stats.Z95 * se), arms_lib.r(m + stats.Z95 * se)],
               sft_mean_length=arms_lib.r(float(np.mean(sft["length"]))))
    if "agreement" in sft:
      decided = sft["agreement"][~np.isnan(sft["agreement"])]
      lo, hi = stats.wilson(float(decided.sum()), decided.size)
      out.update(sft_self_agreement=arms_lib.r(float(decided.mean()) if decided.size else None, 4),
                 sft_self_agreement_interval=[arms_lib.r(lo, 4), arms_lib.r(hi, 4)],
                 sft_self_agreement_pairs=int(decided.size))
  pairs = stages_lib.stage_summary(workdir, "pairs")
  if pairs:
    out["d_golden"] = {k: pairs.get(k) for k in ("train", "held_out")}
  if "pairs" in by and by["pairs"].params:
    out["d_golden_kind"] = by["pairs"].params.get("kind")
  lo = (out.get("proxy_agreement_interval") or [None])[0]
  out["gate_passed"] = bool(lo is not None and lo > 0.5)
  # A redrawn foundation's proxy gates the findings that pool its runs
  # (all_foundations_passed); gate_passed is the first foundation's, which every
  # experiment reads.
  out["all_foundations_passed"] = out["gate_passed"]
  for name in sorted(st.name for st in stages if re.fullmatch(r"f\d+/pm", st.name)):
    acc = held_out_accuracy(workdir, name) or {}
    ok = bool(acc.get("interval") and acc["interval"][0] is not None and acc["interval"][0] > 0.5)
    out.setdefault("redrawn_foundations", []).append(
        {"foundation": int(name[1:].split("/")[0]), "proxy_agreement": acc.get("agreement"),
         "proxy_agreement_interval": acc.get("interval"),
         "proxy_agreement_pairs": acc.get("pairs"), "gate_passed": ok})
    out["all_foundations_passed"] = out["all_foundations_passed"] and ok
  for r in runs:
    if r["mode"] == "online" and len(r["points"]) > 1:
      out.setdefault("online_final_agreement", {})[r["name"]] = arms_lib.r(
          r["points"][-1].get("proxy_golden_agreement"))
  return out



def gate_lines(gate: dict) -> list[str]:
  """The report's section on the gate, first."""
  ci = lambda k: gate.get(k + "_interval") or [None, None]
  lines = ["## Set-up gate", "",
           "Can the proxy rank the SFT policy's own samples? Agreement: the proxy PM's "
           "verdict against the golden judge on held-out pairs of two SFT samples per "
           "validation prompt (golden ties dropped), Wilson 95% interval. Where the interval "
           "includes 0.5, every finding below is inconclusive.", "",
           "| quantity | value | 95% interval |", "|---|---|---|",
           f"| proxy agreement on held-out SFT pairs (n={gate.get('proxy_agreement_pairs')}) | "
           f"{gate.get('proxy_agreement')} | {ci('proxy_agreement')} |",
           f"| SFT policy's mean golden score (s.e. {gate.get('sft_golden_score_se')}) | "
           f"{gate.get('sft_golden_score')} | {ci('sft_golden_score')} |",
           f"| proxy agreement on two SFT samples per win prompt "
           f"(n={gate.get('sft_self_agreement_pairs')}) | {gate.get('sft_self_agreement')} | "
           f"{ci('sft_self_agreement')} |"]
  lines += [f"| foundation {g['foundation']} (redrawn): proxy agreement on its held-out SFT "
            f"pairs (n={g['proxy_agreement_pairs']}) | {g['proxy_agreement']} | "
            f"{g['proxy_agreement_interval']} |" for g in gate.get("redrawn_foundations", [])]
  every = ("" if not gate.get("redrawn_foundations") else
           f" Every foundation (what the pooled experiments read): "
           f"{'passed' if gate.get('all_foundations_passed') else 'FAILED'}.")
  lines += ["", f"**Gate: {'passed' if gate.get('gate_passed') else 'FAILED'}** (D_golden: "
                f"{gate.get('d_golden_kind')} pairs).{every}"]
  return lines


def golden_judge(p) -> dict:
  """results.json's account of the golden judge: the environment's program, or the
  golden PM (its export and its stage's held-out metrics on the raters' labels)."""
  export = p.golden_export()
  if not export:
    return {"kind": "program"}
  info = stages_lib.read_marker(p.workdir, "golden_pm")
  return {"kind": "golden_pm", "export": export, "import_dir":
          os.path.abspath(p.s.import_dir), "trained_on": p.tasks()["pairs"],
          "summary": (info or {}).get("summary", {})}

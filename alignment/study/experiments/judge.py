"""The judge-quality axis: at which judge quality does online IPO overtake offline IPO?

Fig. 1's offline IPO (SFT samples, the golden judge's labels) is ahead of its online
IPO (the policy's samples, the proxy PM's labels). Online IPO is run against judges
of known quality, over the ablation seeds, with Fig. 1's model, steps, learning rate
and beta, and each is compared with Fig. 1's offline IPO. Two series:

  noisy golden   the golden program with a share `judge_axis.flip_rates` of its
                 verdicts flipped (`judges.NoisyGoldenJudge`: its errors are noise,
                 not exploitable), and, where the attribution is listed, the golden
                 judge itself (its online_ipo_golden arm, flip rate 0)
  learned proxy  pairwise PMs of rising quality: on the first quarter of D_golden's
                 pairs, on D_golden (the study's pm: Fig. 1's online IPO is its run,
                 reused), on 4x as many SFT pairs labelled by the golden judge, and of
                 the larger sizes `judge_axis.pm_sizes` (each on its own SFT backbone,
                 D_golden, the proxy PM's steps and rate)

Stages:
  noisy_golden_flip<r>          the noisy judge's agreement with the golden labels of
                                the gate's held-out SFT pairs, computed exactly from
                                the flips it makes on them (no model: seconds)
  online_ipo_golden_flip<r>_s<k>   online IPO against it
  pairs_quarter, pm_quarter     the first quarter of pairs/train (golden labels kept),
                                the PM on it
  pairs_4x, pm_4x               4 x num_pairs pairs of D_golden's kind (own seed), the PM
  sft_<size>, pm_<size>         the size's SFT and PM (`Planner.pm_of`: shared with
                                H5, rates by `size_lr`)
  online_ipo_pm_<set>_s<k>      online IPO against each of those PMs

Every judge's agreement with the golden judge is on the same held-out pairs, with a
Wilson 95% interval (a PM stage measures its own, `foundation.held_out_accuracy`).
The section: for each judge, online (that judge) - offline IPO, peak and envelope
from KL 0 with intervals (Holm over the section's comparisons, `arms.versus`); per
series the crossover, the agreement where the envelope difference crosses 0 by
linear interpolation between neighbouring judges, or the bound when it does not
cross; results.json's `judge_axis` block; `plots.plot_judge_axis` draws it.
"""
from __future__ import annotations

import os

import numpy as np

from alignment import config as config_lib
from alignment import judges as judges_lib
from alignment import pairsets, stats
from alignment.study import arms as A
from alignment.study import foundation
from alignment.study import stages as stages_lib
from alignment.study.experiment import Experiment, Section
from alignment.study.experiments import attribution, fig1

NOISY, LEARNED = "noisy_golden", "learned_proxy"
SERIES = (NOISY, LEARNED)
PAIR_SETS = {"quarter": "the first quarter of D_golden's pairs",
             "4x": "4 x num_pairs pairs of D_golden's kind"}
SEED_4X = 6  # the 4x set's samples and labels: study.seed + 6 (other pair sets use 1-4)


def tag(rate: float) -> str:
  return f"flip{rate:g}"


def noisy_stage(rate: float) -> str:
  return f"noisy_golden_{tag(rate)}"


def noisy_arm(rate: float) -> str:
  return f"online_ipo_golden_{tag(rate)}"


def pm_arm(pm: str) -> str:
  return f"online_ipo_{pm}"


def main_arm(study, mode: str) -> str:
  """Fig. 1's main arm of `mode` (online_ipo, offline_ipo: `fig1.grid`)."""
  return fig1.grid(study, mode)[0][2]


def axis_judges(study, listed) -> list[dict]:
  """The judges of the axis in their series' order: judge (its name), series, arm (its
  online IPO's), agreement (("noisy", stage) or ("pm", stage): where its held-out
  agreement is), what it is. `listed`: the study's experiment names."""
  ax, out = study.judge_axis, []
  if "attribution" in listed:
    out.append(dict(judge="golden", series=NOISY, arm=attribution.ONLINE_GOLDEN,
                    agreement=("noisy", noisy_stage(0.0)), flip_rate=0.0,
                    what="the golden judge (the attribution's online_ipo_golden)"))
  for r in ax.flip_rates:
    out.append(dict(judge=f"golden_{tag(r)}", series=NOISY, arm=noisy_arm(r),
                    agreement=("noisy", noisy_stage(r)), flip_rate=float(r),
                    what=f"the golden judge, {r:g} of its verdicts flipped"))
  out.append(dict(judge="pm_quarter", series=LEARNED, arm=pm_arm("pm_quarter"),
                  agreement=("pm", "pm_quarter"), pairs=study.num_pairs // 4,
                  what="PM on the first quarter of D_golden"))
  out.append(dict(judge="pm", series=LEARNED, arm=main_arm(study, "online"),
                  agreement=("pm", "pm"), pairs=study.num_pairs,
                  what="the study's proxy PM on D_golden (Fig. 1's online IPO)"))
  out.append(dict(judge="pm_4x", series=LEARNED, arm=pm_arm("pm_4x"),
                  agreement=("pm", "pm_4x"), pairs=4 * study.num_pairs,
                  what="PM on 4x D_golden's pairs"))
  for size in ax.pm_sizes:
    out.append(dict(judge=f"pm_{size}", series=LEARNED, arm=pm_arm(f"pm_{size}"),
                    agreement=("pm", f"pm_{size}"), pairs=study.num_pairs, size=size,
                    what=f"{size} PM on D_golden"))
  return out


# ---------------------------------------------------------------------------
# The stages' work
# ---------------------------------------------------------------------------


def noisy_agreement(pairs_dir: str, rate: float, seed: int) -> dict:
  """The noisy golden judge's agreement with the labels of a pair set, exactly: its
  verdict on each pair is the golden one (the higher golden score; the set has no
  ties) flipped where `judges.pair_flips` flips it (the online runs' judge makes the
  same flips on the same pairs). Wilson 95% interval over the pairs."""
  from alignment.data import stream  # pylint: disable=g-import-not-at-top
  rec = stream.read_stream(pairs_dir, process_index=0, process_count=1)
  flips = judges_lib.pair_flips(rec["prompt"], rec["prompt_mask"], rec["response_1"],
                                rec["response_1_mask"], rec["response_2"],
                                rec["response_2_mask"], rate, seed)
  golden_first = rec["extra/golden_1"] > rec["extra/golden_2"]
  agree = (golden_first ^ flips) == rec["verdict"].astype(bool)
  n = int(agree.size)
  lo, hi = stats.wilson(float(agree.sum()), n)
  return {"agreement": A.r(float(agree.mean()), 4), "interval": [A.r(lo, 4), A.r(hi, 4)],
          "pairs": n, "flipped": A.r(float(flips.mean()), 4), "flip_rate": rate,
          "flip_seed": seed, "measured_on": pairs_dir}


def first_quarter(p, out_dir: str) -> dict:
  """The first quarter of D_golden's train pairs with their golden labels, written as a
  pair set (whole batches)."""
  from alignment.data import stream, tasks  # pylint: disable=g-import-not-at-top
  source = p.path("pairs", "train")
  pairs = pairsets.read(source)
  verdict = stream.read_stream(source, process_index=0, process_count=1)["verdict"]
  n = len(pairs) // 4
  vocab = tasks.task_vocabulary(p.tasks()["prompts"])
  return {"train": {**pairsets.write(os.path.join(out_dir, "train"), pairs.take(np.arange(n)),
                                     verdict[:n], p.s.batch_size, vocab),
                    "source": source, "of": len(pairs)}}


def four_times(p, out_dir: str) -> dict:
  """4 x num_pairs pairs of D_golden's kind from the SFT policy, labelled by the golden
  judge (their own samples and labels: seed study.seed + SEED_4X)."""
  s, maker = p.s, p.pair_maker()
  pairs = maker.of_kind(s.pairs, p.export("sft"), 4 * s.num_pairs, s.seed + SEED_4X)
  return {"train": maker.write(os.path.join(out_dir, "train"), pairs, s.seed + SEED_4X)}


# ---------------------------------------------------------------------------
# The report: agreement, differences, crossover
# ---------------------------------------------------------------------------


def agreement(workdir: str, where: tuple[str, str]) -> dict | None:
  """A judge's held-out agreement with the golden judge ({agreement, interval, pairs})."""
  kind, stage = where
  if kind == "pm":
    got = foundation.held_out_accuracy(workdir, stage)
  else:
    got = stages_lib.stage_summary(workdir, stage)
  if not got or got.get("agreement") is None:
    return None
  return {"agreement": got["agreement"], "interval": got["interval"], "pairs": got["pairs"],
          "measured": ("the PM stage's evaluation on pairs/held_out" if kind == "pm" else
                       "exactly, from its flips on pairs/held_out")}


def along_training(ctx: A.Context, arm: str) -> list[dict]:
  """The arm's mean (over seeds) proxy-golden agreement on its own samples at each
  evaluation, where recorded."""
  runs = ctx.arm_runs.get(arm, [])
  if not runs:
    return []
  out = []
  for j, point in enumerate(runs[0]["points"]):
    vals = [r["points"][j].get("proxy_golden_agreement") for r in runs if len(r["points"]) > j]
    vals = [v for v in vals if v is not None]
    out.append({"step": point.get("step"), "agreement": A.r(np.mean(vals), 4) if vals else None})
  return out


def crossover(points: list[dict]) -> dict:
  """Where online - offline crosses 0 along one series of judges.

  points: [{judge, agreement, estimate, reading}] (reading: the difference's
  interval-based reading, above / below / no difference detected / not read).
  Sorted by agreement; between neighbours whose estimates lie on either side of 0
  (0 counts as not below) the crossing is interpolated linearly. `crossover`: the
  first upward crossing's agreement (online overtakes offline), else None with
  `bound`: {"below_up_to": x} (every estimate below 0: online stays below offline up
  to agreement x, the most accurate judge tested) or {"above_from": x}.
  `by_intervals`: the same from the readings only: the most accurate judge read below
  (under the first read above) and the least accurate read above, so the crossover
  lies between them as far as the intervals can tell.
  """
  pts = sorted((q for q in points if q.get("agreement") is not None and
                q.get("estimate") is not None), key=lambda q: q["agreement"])
  crossings = []
  for a, b in zip(pts, pts[1:]):
    ya, yb = a["estimate"], b["estimate"]
    if (ya < 0) == (yb < 0):
      continue
    xa, xb = a["agreement"], b["agreement"]
    x = xa if yb == ya else xa + (0.0 - ya) * (xb - xa) / (yb - ya)
    crossings.append({"between": [a["judge"], b["judge"]], "agreement": A.r(x, 4),
                      "direction": "up" if yb > ya else "down"})
  up = [c for c in crossings if c["direction"] == "up"]
  out = {"judges": [q["judge"] for q in pts], "crossings": crossings,
         "crossover": up[0]["agreement"] if up else None, "bound": None}
  if pts and not crossings:
    out["bound"] = ({"below_up_to": pts[-1]["agreement"]} if pts[0]["estimate"] < 0 else
                    {"above_from": pts[0]["agreement"]})
  above = [q for q in pts if q.get("reading") == "above"]
  first_above = above[0]["agreement"] if above else float("inf")
  below = [q for q in pts if q.get("reading") == "below" and q["agreement"] < first_above]
  out["by_intervals"] = {"below_up_to": below[-1]["agreement"] if below else None,
                         "below_judge": below[-1]["judge"] if below else None,
                         "above_from": above[0]["agreement"] if above else None,
                         "above_judge": above[0]["judge"] if above else None}
  out["unread"] = bool(pts) and all(str(q.get("reading", "")).startswith("not read")
                                     for q in pts)
  out["sentence"] = crossover_sentence(out, bool(pts))
  return out


def crossover_sentence(c: dict, any_points: bool) -> str:
  """The crossover of one series in words: the interpolated estimate, then the intervals'
  reading."""
  if not any_points:
    return "no judge of this series has data"
  if c["crossover"] is not None:
    first = next(x for x in c["crossings"] if x["direction"] == "up")
    said = (f"online overtakes offline at agreement {c['crossover']} (linear interpolation "
            f"between {first['between'][0]} and {first['between'][1]})")
  elif c["bound"] and "below_up_to" in c["bound"]:
    said = f"online stays below offline up to agreement {c['bound']['below_up_to']}"
  elif c["bound"]:
    said = (f"online is above offline at every judge, from agreement "
            f"{c['bound']['above_from']} (the least accurate tested) up")
  else:
    said = (f"online falls below offline above agreement {c['crossings'][0]['agreement']} "
            "(no upward crossing)")
  b = c["by_intervals"]
  if c.get("unread"):
    read = f"the intervals are not read (fewer than {A.MIN_SEEDS} seeds)"
  elif b["below_up_to"] is not None and b["above_from"] is not None:
    read = (f"by the intervals, online is below offline at {b['below_up_to']} "
            f"({b['below_judge']}) and above from {b['above_from']} ({b['above_judge']}): the "
            "crossover lies between them")
  elif b["below_up_to"] is not None:
    read = (f"by the intervals, online is below offline up to {b['below_up_to']} "
            f"({b['below_judge']}) and above it at no judge tested")
  elif b["above_from"] is not None:
    read = (f"by the intervals, online is above offline from {b['above_from']} "
            f"({b['above_judge']}) and below it at no judge tested")
  else:
    read = "by the intervals, no judge of the series separates online from offline"
  return f"{said}; {read}"


def axis(ctx: A.Context, study, judges: list[dict], compared: dict, base: str,
         gate: dict) -> dict:
  """results.json's judge_axis block: each judge's agreement, its online arm against
  offline IPO and its own agreement along training; each series' crossover (envelope,
  the headline, and peak); the sentence."""
  block = {"offline_arm": base, "judges": {}, "series": {}}
  for j in judges:
    c = compared[j["arm"]]
    learned = j["series"] == LEARNED
    block["judges"][j["judge"]] = {
        **{k: v for k, v in j.items() if k not in ("judge", "agreement")},
        "agreement": agreement(ctx.workdir, j["agreement"]),
        "peak_minus_offline_ipo": c["peak_minus_offline_ipo"],
        "envelope_minus_offline_ipo": c["envelope_minus_offline_ipo"],
        "reading": c["reading"], "seeds": c["seeds"], "online_peak": c["peak"],
        "agreement_along_training": along_training(ctx, j["arm"]),
        "agreement_along_training_of": (
            "this judge, on two samples of the run's policy per prompt (step 0: the SFT "
            "policy's evaluation, by the study's proxy PM)" if learned else
            "the study's proxy PM, not this judge: a golden-judged run's evaluation asks "
            "eval.proxy; this judge's own agreement is not recorded along training (its "
            "flips do not depend on the pair, so it is 1 - flip rate in expectation on any "
            "pairs, as on the held-out ones)")}
  for series in SERIES:
    block["series"][series] = {}
    for what in ("envelope", "peak"):
      pts = [{"judge": name, "agreement": (e["agreement"] or {}).get("agreement"),
              "estimate": e[f"{what}_minus_offline_ipo"]["estimate"],
              "reading": e["reading"][what]}
             for name, e in block["judges"].items() if e["series"] == series]
      block["series"][series][what] = crossover(pts)
  block["sentence"] = sentence(block, gate)
  return block


def sentence(block: dict, gate: dict) -> str:
  if not gate.get("gate_passed"):
    return "Inconclusive: the proxy cannot rank the policy's samples (set-up gate)."
  parts = [f"{name.replace('_', ' ')}: {block['series'][name]['envelope']['sentence']}"
           for name in SERIES if block["series"][name]["envelope"]["judges"]]
  few = any(isinstance(e["seeds"], int) and e["seeds"] < A.MIN_SEEDS
            for e in block["judges"].values())
  return ("Envelope from KL 0, online (that judge) - offline IPO. " + ". ".join(parts) + "." +
          (f" Arms with fewer than {A.MIN_SEEDS} seeds are not read: estimates only."
           if few else ""))


def lines(block: dict) -> list[str]:
  out = ["| judge | series | held-out agreement [95% CI] | online - offline IPO: envelope "
         "[95% CI] (reading) | peak [95% CI] (reading) | seeds |", "|---|---|---|---|---|---|"]
  for name, e in block["judges"].items():
    ag = e["agreement"]
    ag_s = f"{ag['agreement']} {ag['interval']}" if ag else "n/a"
    out.append(f"| {name} | {e['series']} | {ag_s} | {A.fmt(e['envelope_minus_offline_ipo'])} "
               f"({e['reading']['envelope']}) | {A.fmt(e['peak_minus_offline_ipo'])} "
               f"({e['reading']['peak']}) | {e['seeds']} |")
  out += ["", "Readings: 95% intervals, Holm's correction over the section's comparisons "
          "(every judge, peak and envelope). Agreement: with the golden judge's labels on the "
          "gate's held-out SFT pairs (Wilson); a noisy golden judge's is exact from its flips "
          "on those pairs. Along training, a learned proxy's run records its own judge's "
          "agreement on the policy's samples; a golden-judged run records the study's proxy "
          "PM's (results.json: agreement_along_training).", "", f"**{block['sentence']}**", ""]
  return out


class JudgeAxis(Experiment):
  name = "judge"
  title = "The judge-quality axis: at which judge quality does online overtake offline?"
  needs = {"fig1": "compares online IPO against each judge with Fig. 1's offline IPO"}

  def check(self, study):
    ax = study.judge_axis
    for r in ax.flip_rates:
      if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 0.5:
        raise config_lib.ConfigError(
            f"study.judge_axis.flip_rates: {r!r} is not in (0, 0.5) (rate 0 is the golden "
            "judge itself: the attribution's online_ipo_golden)")
    if ax.flip_rates and study.import_dir:
      raise config_lib.ConfigError("study.judge_axis.flip_rates: the noisy golden judge flips "
                                   "the golden program's verdicts; with study.import_dir the "
                                   "golden judge is a PM (set flip_rates=[])")
    from alignment.models import zoo  # pylint: disable=g-import-not-at-top
    for size in ax.pm_sizes:
      if size not in zoo.names() or size == study.model:
        raise config_lib.ConfigError(
            f"study.judge_axis.pm_sizes: {size!r} is not a zoo model other than the policy's "
            f"({study.model}: its PM is the study's pm); the zoo has {zoo.names()}")

  def plan(self, p):
    s, ax = p.s, p.s.judge_axis
    listed = {e.name for e in p.experiments}
    rates = ([0.0] if "attribution" in listed else []) + [float(r) for r in ax.flip_rates]
    for r in rates:  # the agreement of each noisy judge on the held-out pairs
      p.pair_set(noisy_stage(r), self.group,
                 lambda d, r=r: noisy_agreement(p.path("pairs", "held_out"), r, s.seed),
                 dict(kind="noisy_golden_agreement", flip_rate=r, flip_seed=s.seed,
                      pairs="pairs/held_out"), deps=("pairs",))
    for r in ax.flip_rates:
      for k in p.ablation_seeds():
        p.online(f"{noisy_arm(r)}_s{k}", s.model, "ipo", s.online.beta, self.group,
                 judge="golden", judge_flip=float(r), data="online_golden_noisy", seed=k,
                 arm=noisy_arm(r))
    p.pair_set("pairs_quarter", self.group, lambda d: first_quarter(p, d),
               dict(kind="first_quarter", source="pairs/train", num=s.num_pairs // 4),
               deps=("pairs",))
    p.pair_set("pairs_4x", self.group, lambda d: four_times(p, d),
               dict(kind=s.pairs, num=4 * s.num_pairs, labels=s.labels, seed=s.seed + SEED_4X,
                    redraws=s.tie_redraws, golden=p.golden_export()),
               deps=("sft",) + p.golden_deps())
    pms = []
    for name in PAIR_SETS:
      p.pm(f"pm_{name}", {**p.pm_overrides(), "data.replay_dir": p.path(f"pairs_{name}", "train")},
           deps=("sft", "pairs", f"pairs_{name}"), group=self.group, sft="sft")
      pms.append(f"pm_{name}")
    for size in ax.pm_sizes:  # shared with H5's proxy axis where it lists the size
      pms.append(p.pm_of(size, self.group))
    for pm in pms:
      if p.planned(f"{pm_arm(pm)}_s{p.ablation_seeds()[0]}"):  # H5's proxy axis has them
        continue
      for k in p.ablation_seeds():
        p.online(f"{pm_arm(pm)}_s{k}", s.model, "ipo", s.online.beta, self.group,
                 judge="proxy", judge_stage=pm, data=f"online_{pm}", seed=k, arm=pm_arm(pm))

  def section(self, ctx, gate, study):
    base = main_arm(study, "offline")
    # The golden judge's point is the attribution's arm, wherever it has data.
    judges = [j for j in axis_judges(study, {"attribution"}) if j["arm"] in ctx.data]
    own = self.arms(ctx)
    if ctx.boot is None or base not in ctx.data or not judges:
      return Section(own)
    compared = A.versus(ctx, [j["arm"] for j in judges], base, "offline_ipo")
    block = axis(ctx, study, judges, compared, base, gate)
    arms = list(dict.fromkeys([base] + [j["arm"] for j in judges]))
    return Section(arms, lines=lines(block) + A.rising_lines(ctx, own),
                   results={"judge_axis": block},
                   figures={"judge_axis.png": ("plot_judge_axis", block)})

  def agreement_arms(self, ctx):
    return [a for a in self.arms(ctx) if not a.startswith("online_ipo_golden")]


EXPERIMENT = JudgeAxis()

"""From a study's stages to results.json, report.md and PNG plots.

The report knows no experiment by name: it reads the runs (`alignment.study.arms`),
opens with the SET-UP GATE (`alignment.study.foundation.gate`: the proxy PM's
agreement with the golden judge on held-out pairs of SFT samples; where its
interval includes 0.5, every finding is "inconclusive"), then the sections of the
experiments that lead (`Experiment.lead`: the attribution), then the findings,
then every other listed experiment's section (`alignment.study.experiment`), one
section per group, in the registry's order, and closes with the study-wide plots
(the proxy on the policy's samples; classification against generation), what the
policies write (`policy_samples`) and the stages' times.
"""
from __future__ import annotations

import json
import os
import re

from alignment import faults, files, layout, stats
from alignment.study import arms as A
from alignment.study import experiments as experiments_lib
from alignment.study import foundation, plots
from alignment.study import stages as stages_lib

# results.json's entries that experiments add to (Section.results), in this order.
SECTION_RESULTS = ("attribution", "ablations", "comparisons", "comparison_readings",
                   "judge_axis", "scaling")


def write(study, workdir: str, stages, golden_judge: dict | None = None,
          experiments=None) -> dict:
  """results.json, the plots and report.md, replaced together (files.staged): a
  failed write (a full disk) leaves the previous report whole. golden_judge: what
  the study's golden judge was (results.json; default the environment's program);
  experiments: the study's (default: those `study.experiments` lists)."""
  if experiments is None:
    experiments = experiments_lib.resolve(study.experiments)
  with files.staged(workdir) as out:
    return _write(study, workdir, stages, out, golden_judge, experiments)


def _by_group(experiments) -> list:
  """The first experiment of each group speaks for it (writer and sec6 share one)."""
  seen, out = set(), []
  for e in experiments:
    if e.group not in seen:
      seen.add(e.group)
      out.append(e)
  return out


def _write(study, workdir: str, stages, out: str, golden_judge, experiments) -> dict:
  """Reads the study in `workdir`, writes the report's files into `out`."""
  runs = A.collect_runs(workdir, stages)
  gate = foundation.gate(workdir, stages, runs)
  for e in experiments:
    gate.update(e.setup(workdir))
  ctx = A.Context.from_workdir(workdir, runs, int(study.bootstrap), seed=int(study.seed))
  # Experiments planned again on each redrawn foundation read every foundation's runs;
  # the rest ran on the first foundation and are compared with its runs alone.
  first = ctx.first_foundation()
  pooled = {**gate, "gate_passed": gate.get("all_foundations_passed", gate["gate_passed"])}
  pick = lambda e: ctx if e.name in study.foundation_experiments else first
  gated = lambda e: pooled if e.name in study.foundation_experiments else gate
  reporting = _by_group(experiments) if ctx.boot is not None else []
  found = sorted((f for e in reporting for f in e.findings(pick(e), gated(e), study)),
                 key=lambda f: f["id"])
  sections = [(e, e.section(pick(e), gated(e), study), pick(e)) for e in reporting]
  sections = [(e, s, c) for e, s, c in sections if s.plot_arms]
  arms = {a: A.arm_numbers(ctx, a) for a in sorted(ctx.arm_runs) if a in ctx.data}
  shown = shown_points(runs, arms)
  samples = policy_samples(workdir, shown)
  results = {"study": study.scale, "setup": gate, "attribution": {}, "findings": found,
             "golden_judge": golden_judge or {"kind": "program"},
             **{k: {} for k in SECTION_RESULTS[1:]}, "arms": arms, "samples": samples,
             "runs": [{k: v for k, v in r.items() if k not in ("group", "sft_eval")}
                      for r in runs]}
  for _, s, _ in sections:
    for key, value in s.results.items():
      results[key].update(value)
  # Keys in reading order: the gate before the findings, the findings before the runs.
  files.write_json(os.path.join(out, layout.RESULTS), results, sort_keys=False)
  faults.hit("report", "", path=os.path.join(workdir, layout.RESULTS))
  written = []
  for e, s, c in sections:
    name = f"budget_{e.group}.png"
    plots.plot_budget(c, s.plot_arms, os.path.join(out, name), e.title)
    written.append(name)
    for figure, (function, data) in s.figures.items():
      getattr(plots, function)(data, os.path.join(out, figure))
      written.append(figure)
  if ctx.data:
    written += _study_plots(ctx, runs, experiments, out)
  by_kind = stage_seconds(workdir, stages)
  md = _markdown(study, workdir, stages, gate, found, sections, ctx, by_kind)
  if shown:  # before the stages' times
    at = md.index("## Stages")
    md[at:at] = samples_lines(samples)
  # Timings stay out of results.json, which two runs of one study write bit for bit alike.
  files.write_json(os.path.join(out, layout.STAGE_SECONDS), by_kind,
                   sort_keys=False)
  files.write_text(os.path.join(out, layout.REPORT), "\n".join(md) + "\n")
  return {"report": os.path.join(workdir, layout.REPORT),
          "results": os.path.join(workdir, layout.RESULTS), "plots": written,
          "findings": found}


def _study_plots(ctx: A.Context, runs, experiments, out: str) -> list[str]:
  """The plots across experiments: the proxy where each policy samples, H3's
  classification against generation and chosen log-probs over training."""
  plots.plot_agreement(ctx, [a for e in experiments for a in e.agreement_arms(ctx)],
                       os.path.join(out, "agreement.png"))
  plots.plot_classifier(runs, os.path.join(out, "classifier_vs_winrate.png"))
  chosen = sorted({a for e in experiments for a in e.chosen_arms(ctx)})
  plots.plot_chosen_logprob(ctx, chosen, os.path.join(out, "chosen_logprob.png"))
  return ["agreement.png", "classifier_vs_winrate.png", "chosen_logprob.png"]


STATUS = {"voted": "", "shown": "(shown, not voted) ", "not applicable": "(not applicable) ",
          "few seeds": "(fewer than 3 seeds: not voted) "}


def _findings_lines(study, found: list[dict]) -> list[str]:
  md = ["## Findings", "",
        "Golden win rate: mean golden probability P(policy beats reference) over the eval "
        "prompts; the reference is " + ("the golden policy" if study.golden_policy else
                                        "the SFT policy") + "; KL: exact, against SFT. An arm's "
        "curve is the mean over its seeds; a peak is the highest point of that mean curve "
        "(a maximum of noisy points, biased upwards: envelopes are the headline). "
        f"Intervals: 95%, {stats.METHOD} ({study.bootstrap} resamples of win-rate prompts "
        "and held-out pairs). A claim is voted unless it is shown only (another finding's "
        f"claim), reads an arm with fewer than {A.MIN_SEEDS} seeds, or presupposes an online "
        "advantage that finding 1 does not show (\"not applicable\"). Verdicts are corrected "
        "with Holm's procedure over each finding's voted claims (family-wise 5%): a finding "
        "is reproduced when every voted claim is supported, not reproduced when one is "
        "contradicted, inconclusive otherwise (or when the gate fails)." + (
            f" The foundation (SFT, D_golden, PM) is drawn {study.foundations} times: the "
            f"arms of {', '.join(study.foundation_experiments)} pool every foundation's runs, "
            "and their intervals add the foundation's variance beyond what the runs within "
            "a foundation show (a delete-one-foundation jackknife, "
            f"{study.foundations - 1} degree(s) of freedom); the other experiments ran on "
            "the first foundation and are compared with its runs alone."
            if study.foundations > 1 else ""), "",
        "| # | finding | verdict | claims: estimate [95% CI] (Holm-adjusted verdict) |",
        "|---|---|---|---|"]
  for f in found:
    claims = "<br>".join(
        f"{STATUS[p.get('status', 'voted')]}{p['claim']}: {stats.interval_str(p)} -> "
        f"{p.get('holm_verdict', p['verdict'])}" for p in f["parts"])
    md.append(f"| {f['id']} | {f['finding']} | **{f['verdict']}**"
              f"{' (' + f['reason'] + ')' if f['reason'] else ''} | {claims} |")
  md += ["", "Numbers behind each finding (results.json has them all):", ""]
  md += [f"- {f['id']}: `{json.dumps(f['numbers'])}`" for f in found]
  return md


def _section_lines(sections) -> list[str]:
  md = []
  for e, s, ctx in sections:
    md += ["", f"## {e.title}", "", f"![{e.group}](budget_{e.group}.png)", ""]
    md += s.lines + [f"![{f[:-4]}]({f})\n" for f in s.figures]
    md += A.arm_table(ctx, s.plot_arms if s.table_arms is None else s.table_arms)
  return md


def _markdown(study, workdir: str, stages, gate: dict, found: list[dict], sections,
              ctx: A.Context, by_kind: dict) -> list[str]:
  md = [f"# Study report ({study.scale})", ""] + foundation.gate_lines(gate) + [""]
  lead = [x for x in sections if x[0].lead]
  md += _section_lines(lead) + [""] if lead else []
  md += _findings_lines(study, found)
  md += _section_lines([x for x in sections if not x[0].lead])
  if ctx.data:
    md += ["", "## The proxy on the policy's samples", "", "![agreement](agreement.png)", "",
           "## H3: classification vs generation", "",
           "![classifier](classifier_vs_winrate.png)", "",
           "![chosen log-prob](chosen_logprob.png)"]
  stage_info = [info for st in stages
                if (info := stages_lib.read_marker(workdir, st.name)) is not None]
  md += ["", "## Stages", "", "| stage | kind | seconds |", "|---|---|---|"]
  md += [f"| {s['stage']} | {s['kind']} | {s['seconds']} |" for s in stage_info]
  total = sum(s["seconds"] for s in stage_info)
  md += ["", f"Total stage time: {total:.0f} s.{split_sentence(by_kind)}"]
  return md


# Where the stage time went (alignment.timing), in the order the sentence names them.
PHASE_WORDS = (("steps", "training steps"), ("first_step", "first steps (compilation "
               "included)"), ("evaluation", "evaluation"), ("checkpoint", "checkpoints"),
               ("export", "exports"), ("data", "data"),
               ("other", "the rest (start-up, models, restores, pair sets)"))


def stage_seconds(workdir: str, stages) -> dict:
  """{kind: {phase: seconds, "total": seconds, "stages": n}} and the same over every
  kind ("all"), from the stages' markers that recorded a split (`seconds_by_phase`:
  process 0's, alignment.timing); {} when none did."""
  out: dict = {}
  for st in stages:
    info = stages_lib.read_marker(workdir, st.name)
    split = (info or {}).get("seconds_by_phase")
    if not split:
      continue
    for key in (info["kind"], "all"):
      row = out.setdefault(key, {"stages": 0, "total": 0.0})
      row["stages"] += 1
      row["total"] = round(row["total"] + float(info["seconds"]), 1)
      for phase, sec in split.items():
        row[phase] = round(row.get(phase, 0.0) + float(sec), 1)
  return out


def split_sentence(by_kind: dict) -> str:
  """' Of the N stages that recorded it: training steps 41%, ...' ('' without a split)."""
  row = by_kind.get("all")
  if not row or row["total"] <= 0:
    return ""
  parts = [f"{words} {100 * row.get(phase, 0.0) / row['total']:.0f}%"
           for phase, words in PHASE_WORDS]
  return (f" Where it went, over the {row['stages']} stages that recorded it "
          f"(by kind: stage_seconds.json): {', '.join(parts)}.")


# ---------------------------------------------------------------------------
# What the policies write
# ---------------------------------------------------------------------------

# (policy, arm, where): the SFT policy is the arm's seed-0 run at step 0; a peak, that
# run at the step where the arm's mean golden win rate peaks (results.json's arms).
SHOWN = (("SFT", "online_ipo", "start"), ("online peak", "online_ipo", "peak"),
         ("offline peak", "offline_ipo", "peak"))
TEXT_LIMIT = 300  # characters of a prompt or response the report shows (results.json: all)


def _seed0_run(runs: list[dict], arm: str) -> dict | None:
  """The arm's run with the first seed on the first foundation (online_ipo_s0)."""
  rs = [r for r in runs if r["arm"] == arm and r.get("foundation", 0) == 0]
  return min(rs, key=lambda r: r.get("hparams", {}).get("seed", 0)) if rs else None


def shown_points(runs: list[dict], arms: dict) -> list[tuple[str, dict, int]]:
  """(policy, run, step) of each policy the report shows (SHOWN), where the study has
  its run (and, for a peak, the arm's numbers); [] for a study without them."""
  out = []
  for policy, arm, where in SHOWN:
    run = _seed0_run(runs, arm)
    if run is not None and (where == "start" or arm in arms):
      out.append((policy, run, 0 if where == "start" else int(arms[arm]["peak_step"])))
  return out


def policy_samples(workdir: str, shown: list[tuple[str, dict, int]]) -> list[dict]:
  """What each shown policy wrote for the first win-rate prompts, as its evaluation
  recorded it (`evaluation.save_samples`; step 0 in the run's sft_eval stage): one
  record per prompt and policy, {prompt_index, prompt, policy, run, step, response,
  golden_score}. Points recorded without samples (earlier code, eval.samples 0) give
  none."""
  from alignment import evaluation  # pylint: disable=g-import-not-at-top
  out = []
  for policy, run, step in shown:
    stage = run["sft_eval"] if step == 0 else run["name"]
    recorded = evaluation.load_samples(
        evaluation.samples_path(layout.stage(workdir, stage), step)) or []
    out += [{"prompt_index": i, "prompt": s["prompt"], "policy": policy, "run": run["name"],
             "step": step, "response": s["response"], "golden_score": s["golden_score"]}
            for i, s in enumerate(recorded)]
  return out


def md_text(text: str, limit: int = TEXT_LIMIT) -> str:
  """`text` as one line of Markdown (a table cell): cut to `limit` characters with an
  ellipsis, Markdown's punctuation and HTML escaped, line breaks as <br>."""
  if len(text) > limit:
    text = text[:limit].rstrip() + "..."
  text = re.sub(r"[\\`*_{}\[\]<>|~#&!]", lambda m: "\\" + m.group(), text)
  text = re.sub(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]", " ", text)
  return re.sub(r"\r\n|\r|\n", "<br>", text)


def samples_lines(samples: list[dict]) -> list[str]:
  """The report's section "What the policies write"."""
  md = ["## What the policies write", ""]
  if not samples:
    return md + ["No samples recorded: these runs were evaluated by code that kept none "
                 "(or with eval.samples 0).", ""]
  md += ["For the first win-rate prompts, the response each policy sampled (the very "
         "sample its golden win rate scored) and its golden score: the SFT policy (online_ipo's "
         "seed-0 run at step 0), the online peak (that run at the step where online_ipo's "
         "mean golden win rate peaks) and the offline peak (offline_ipo's, likewise). Texts "
         f"longer than {TEXT_LIMIT} characters are cut (...); results.json's `samples` holds "
         "them whole.", ""]
  for i in sorted({s["prompt_index"] for s in samples}):
    rows = [s for s in samples if s["prompt_index"] == i]
    md += [f"**Prompt {i + 1}:** {md_text(rows[0]['prompt'])}", "",
           "| policy | run | step | golden score | response |", "|---|---|---|---|---|"]
    md += [f"| {s['policy']} | {s['run']} | {s['step']} | {A.r(s['golden_score'])} | "
           f"{md_text(s['response']) or '*(empty)*'} |" for s in rows]
    md.append("")
  return md

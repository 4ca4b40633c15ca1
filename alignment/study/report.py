"""From a study's stages to results.json, report.md and PNG plots.

The report knows no experiment by name: it reads the runs (`alignment.study.arms`),
opens with the SET-UP GATE (`alignment.study.foundation.gate`: the proxy PM's
agreement with the golden judge on held-out pairs of SFT samples; where its
interval includes 0.5, every finding is "inconclusive"), then the sections of the
experiments that lead (`Experiment.lead`: the attribution), then the findings,
then every other listed experiment's section (`alignment.study.experiment`), one
section per group, in the registry's order, and closes with the study-wide plots
(the proxy on the policy's samples; classification against generation) and the
stages' times.
"""
from __future__ import annotations

import json
import os

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
  results = {"study": study.scale, "setup": gate, "attribution": {}, "findings": found,
             "golden_judge": golden_judge or {"kind": "program"},
             **{k: {} for k in SECTION_RESULTS[1:]},
             "arms": {a: A.arm_numbers(ctx, a) for a in sorted(ctx.arm_runs) if a in ctx.data},
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
  md = _markdown(study, workdir, stages, gate, found, sections, ctx)
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
              ctx: A.Context) -> list[str]:
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
  md += ["", f"Total stage time: {total:.0f} s."]
  return md

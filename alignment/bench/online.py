"""The online benchmark: one online step at a config's scale, phase by phase.

Sampling, judging and the update timed apart over several steps, and the
reference's scoring of the same pairs beside them (contrastive methods). Any
config key can be set (`--set rl.method=rloo --set rl.samples=4`: k samples per
prompt; `--set rl.siblings=M`: each compared with M siblings, not all k - 1).
The pairs the judge is asked about per step are reported beside its time: one
PM call per pair of sample indices, each pair read in both orders in that call.
`--staleness=K` also runs the loop's own `rollouts.Rollouts` with parameters K
steps old, with and without the overlap of the next batch's sampling and
judging with this step's update, and reports how much of sampling and judging
the overlap hid.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from typing import Any

import jax
import numpy as np

from alignment.bench.measure import Json


def _load_config(spec: str, overrides=()):
  """A config file given relative to the working directory or to the repository."""
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), path)
  return config_lib.apply_overrides(config_lib.load(f"{path}:{arg}"), overrides, "--set")


def bench_online(args) -> Json:
  """One online step at a config's scale, phase by phase, over `repeats` steps.

  The policy and the reference start from the same random initialisation and
  the proxy PM is random too: no export is needed. A random policy emits EOS
  only by chance, so responses run close to the full length (the mean length is
  reported; a trained policy stops earlier). Prompts come from the config's task.
  Reference scoring is fused into the update's program in the real step; it is
  timed here as its own jitted forward on the same pairs, to show its share,
  and not added to the step.
  """
  from alignment.bench.measure import matmul_peak, up_front  # pylint: disable=g-import-not-at-top
  peak = up_front(args, "matmul_peak", matmul_peak)
  config, pm_config = _load_config(args.config, args.set), _load_config(args.pm_config)
  setup = _online_setup(config, pm_config)
  times, lengths, state = _time_steps(args, config, setup)
  result = _summary(args, config, pm_config, setup.vocab_size, times, lengths)
  result.update(_utilisation(config, setup, result["median_s"], peak))
  if args.staleness:
    result["staleness"] = _bench_staleness(args, config, setup.phases, setup.prompts, state,
                                           result["median_s"])
  return result


@dataclasses.dataclass
class _OnlineSetup:
  """What the timed steps run: the loop's own phases on a random policy and PM."""
  phases: Any
  prompts: Any
  state: Any
  mesh: Any
  rules: Any
  ref_params: Any
  to_pairs: Any
  reference_scores: Any
  vocab_size: int
  policy_cfg: Any  # the models' configs, for their FLOPs
  pm_cfg: Any


def _online_setup(config, pm_config) -> _OnlineSetup:
  """The online loop's program, state, reference and phases, with a random proxy PM."""
  from alignment import algorithms, judges, sharding  # pylint: disable=g-import-not-at-top
  from alignment.data import pipeline, tasks  # pylint: disable=g-import-not-at-top
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from alignment.models import heads, zoo  # pylint: disable=g-import-not-at-top
  from alignment.train import online, roles, steps  # pylint: disable=g-import-not-at-top
  from alignment.train import state as state_lib  # pylint: disable=g-import-not-at-top

  meshes, mesh, rules, reference_shared = roles.policy_set_up(config)  # config.roles
  d = config.data
  vocab = tasks.task_vocabulary(d.task)
  vocab_size = vocab_lib.model_vocab_size(vocab)
  program = online.build(config, mesh, rules, vocab,  # the loop's own step and sampler
                         reference_shared=reference_shared)
  train = program.train
  model = train.model
  prompts = pipeline.make_iterator(
      d.task, "train", "prompts", d.batch_size, prompt_length=d.prompt_len,
      response_length=d.response_len, mesh=mesh, rules=rules, seed=d.shuffle_seed)
  state, _ = state_lib.create(train.init, train.optimizer, mesh, rules, config.seed)
  reference = roles.Reference(model, mesh, meshes[roles.Role.REFERENCE], rules,
                              train.state_shardings.params, config.init, d, config.seed,
                              config.loss.reduction)
  ref_params = reference.on_policy_mesh()
  pm_mesh = meshes[roles.Role.PROXY_PM]
  pm_cfg = zoo.from_section(pm_config.model, vocab_size)
  pm = heads.PairwisePreferenceModel(pm_cfg)
  pm_params, _ = sharding.create_sharded(heads.init_fn(pm, d.prompt_len, d.response_len),
                                         pm_mesh, rules, jax.random.PRNGKey(1))
  judge = judges.ModelJudge(pm, pm_params, pm_mesh, rules)
  phases = online.make_phases(program, config, judge, reference)
  reference_scores = jax.jit(lambda ref, pairs: steps.pair_logps(model, ref, pairs,
                                                                 config.loss.reduction))
  return _OnlineSetup(phases=phases, prompts=prompts, state=state, mesh=mesh, rules=rules,
                      ref_params=ref_params, to_pairs=jax.jit(algorithms.ranked_pairs),
                      reference_scores=reference_scores, vocab_size=vocab_size,
                      policy_cfg=model.cfg, pm_cfg=pm_cfg)


def _time_steps(args, config, setup: _OnlineSetup) -> tuple[dict, list, Any]:
  """Times each phase of `warmup + repeats` steps (the warm-up ones are not kept);
  contrastive steps also time scoring their pairs under the reference."""
  from alignment import sharding  # pylint: disable=g-import-not-at-top
  contrastive = config.rl.method == "contrastive"
  phases, state = setup.phases, setup.state
  times: dict[str, list] = {k: [] for k in ("sample", "judge", "update", "step")}
  if contrastive:
    times["reference_scoring"] = []
  lengths = []
  for i in range(args.warmup + args.repeats):
    batch = next(setup.prompts)
    t0 = time.perf_counter()
    out = jax.block_until_ready(phases.sample(state.params, batch, i))
    t1 = time.perf_counter()
    judged = jax.block_until_ready(phases.judge(batch, out, i))
    t2 = time.perf_counter()
    state, metrics, _ = phases.update(state, judged)
    jax.block_until_ready(metrics)
    t3 = time.perf_counter()
    timed = [("sample", t1 - t0), ("judge", t2 - t1), ("update", t3 - t2), ("step", t3 - t0)]
    if contrastive:
      with sharding.use(setup.mesh, setup.rules):
        pairs = setup.to_pairs(judged.sampled, judged.verdict.first_wins)
        t4 = time.perf_counter()
        jax.block_until_ready(setup.reference_scores(setup.ref_params, pairs))
      timed.append(("reference_scoring", time.perf_counter() - t4))
    if i >= args.warmup:
      for k, v in timed:
        times[k].append(v)
      lengths.append(float(np.mean(np.asarray(out.lengths))))
  return times, lengths, state


def judged_pairs_per_prompt(config) -> int:
  """The pairs of a prompt's samples the (pairwise) judge is asked about in one step:
  contrastive, its one pair; rloo/grpo, `algorithms.sibling_pairs(k, rl.siblings)`."""
  from alignment import algorithms  # pylint: disable=g-import-not-at-top
  r = config.rl
  if r.method == "contrastive":
    return 1
  return len(algorithms.sibling_pairs(r.samples, r.get("siblings", 0)))


def _summary(args, config, pm_config, vocab_size: int, times: dict, lengths: list) -> Json:
  """The settings, the times, their medians and shares, the sampling throughput, and
  the pairs judged per step."""
  d, contrastive = config.data, config.rl.method == "contrastive"
  med = {k: statistics.median(v) for k, v in times.items()}
  rows = config.rl.samples * d.batch_size
  calls = judged_pairs_per_prompt(config)  # one PM call of 2 x batch_size rows each
  pairs = calls * d.batch_size
  result = {"settings": {"config": args.config, "set": list(args.set),
                         "pm_config": args.pm_config, "policy": config.model.name,
                         "proxy_pm": pm_config.model.name, "vocab": vocab_size,
                         "method": config.rl.method, "judge": "proxy PM (random)",
                         "prompts_per_step": d.batch_size, "samples_per_prompt": config.rl.samples,
                         "siblings": config.rl.get("siblings", 0),
                         "prompt_len": d.prompt_len, "response_len": d.response_len,
                         "loss": config.loss.name if contrastive else config.rl.method,
                         "cache_dtype": config.sampling.cache_dtype,
                         "warmup_steps": args.warmup, "steps": args.repeats,
                         "statistic": "median", "jax_devices": len(jax.devices()),
                         "roles": {r: config.roles[r].devices or "shared" for r in config.roles}},
            "times_s": times, "median_s": med,
            "share": {k: med[k] / med["step"] for k in ("sample", "judge", "update")},
            "judged_pairs_per_step": pairs, "judge_calls_per_step": calls,
            "judge_rows_per_step": 2 * pairs,
            "judge_ms_per_pair": med["judge"] * 1e3 / pairs,
            "sampled_tokens_per_s": rows * statistics.mean(lengths) / med["sample"],
            "mean_response_length": statistics.mean(lengths)}
  if contrastive:
    result["reference_scoring_share_of_update"] = med["reference_scoring"] / med["update"]
  return result


def _utilisation(config, setup: _OnlineSetup, med: dict, peak: Json) -> Json:
  """Model FLOPs of each phase (`flops.online_step`: sampling counted at the full
  response length, the PM asked each judged pair both ways, the update with the
  reference's forward) and their MFU against the float32 matmul peak measured up front."""
  from alignment import flops  # pylint: disable=g-import-not-at-top
  d, r = config.data, config.rl
  f = flops.online_step(setup.policy_cfg, d.batch_size, d.prompt_len, d.response_len,
                        r.method, r.samples, r.get("siblings", 0), setup.pm_cfg)
  f["step"] = f.pop("total")
  gflops = peak["gflops"]
  return {"model_flops": f, "matmul_peak": peak, "peak_gflops_used": gflops,
          "mfu": {k: f[k] / med[k] / 1e9 / gflops for k in ("sample", "judge", "update", "step")}}


def _bench_staleness(args, config, phases, prompts, state, med) -> Json:
  """The loop's own rollouts with parameters `args.staleness` steps old, overlapped
  and not, in alternating blocks of `repeats` steps: median step times and the share
  of the sequential step's sampling and judging that the overlap hid."""
  from alignment.train import rollouts as rollouts_lib  # pylint: disable=g-import-not-at-top

  def loop(state, overlap, first, n):
    rollouts = rollouts_lib.Rollouts(phases, prompts, args.staleness, overlap)
    times = []
    for step in range(first, first + n):
      t0 = time.perf_counter()
      _, state, metrics, stats = rollouts.step(step, state, first + n)
      jax.device_get((metrics, stats))  # the loop's host work waits for them too
      times.append(time.perf_counter() - t0)
    return state, times[args.staleness + 1:]  # past the history's filling
  step_times = {"overlap": [], "sequential": []}
  first = 10_000
  for block in range(2 * args.blocks):
    mode = ("overlap", "sequential")[block % 2]
    state, t = loop(state, mode == "overlap", first, args.repeats + args.staleness + 1)
    first += args.repeats + args.staleness + 1
    step_times[mode] += t
  m = {k: statistics.median(v) for k, v in step_times.items()}
  return {"k": args.staleness, "blocks": args.blocks, "step_times_s": step_times,
          "median_step_s": m, "saved_s": m["sequential"] - m["overlap"],
          "hidden_share_of_sample_and_judge":
              (m["sequential"] - m["overlap"]) / (med["sample"] + med["judge"])}


def online_args(p: argparse.ArgumentParser):
  p.add_argument("--config", default="configs/online.py:default")
  p.add_argument("--pm_config", default="configs/pm.py:default",
                 help="the proxy PM's size comes from this config's model")
  p.add_argument("--warmup", type=int, default=2, help="steps before timing (compiles)")
  p.add_argument("--repeats", type=int, default=10, help="timed steps")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a config override, e.g. rl.method=rloo or rl.samples=4 (repeatable)")
  p.add_argument("--staleness", type=int, default=0,
                 help="K >= 1: also time the loop sampling with parameters K steps old, "
                      "with and without the overlap")
  p.add_argument("--blocks", type=int, default=2,
                 help="alternating blocks of each mode for --staleness")


def online_table(result: Json) -> str:
  s, med, share = result["settings"], result["median_s"], result["share"]
  rows = [f"{s['config']} {' '.join(s.get('set', []))}: {s['policy']} policy, {s['method']}, "
          f"{s['proxy_pm']} proxy PM, {s['prompts_per_step']} prompts x "
          f"{s['samples_per_prompt']} samples, {s['prompt_len']} + {s['response_len']} tokens; "
          f"medians over {s['steps']} steps\n",
          "| phase | ms (median) | share of the step | model GFLOP | MFU |",
          "|---|---|---|---|---|"]
  f, mfu = result["model_flops"], result["mfu"]
  for k in ("sample", "judge", "update", "step"):
    rows.append(f"| {k} | {med[k] * 1e3:.1f} | {share.get(k, 1.0) * 100:.1f}% | "
                f"{f[k] / 1e9:.3g} | {mfu[k] * 100:.1f}% |")
  if "reference_scoring" in med:
    rows.append(f"| (reference scoring, inside update) | {med['reference_scoring'] * 1e3:.1f} | "
                f"{result['reference_scoring_share_of_update'] * 100:.0f}% of update if alone |")
  if "judged_pairs_per_step" in result:
    siblings = s.get("siblings", 0)
    rows.append(f"\njudged {result['judged_pairs_per_step']} pairs per step in "
                f"{result['judge_calls_per_step']} PM calls ({result['judge_rows_per_step']} "
                f"rows: both orders of a pair in one call), "
                f"{result['judge_ms_per_pair']:.2f} ms per pair"
                + (f" (rl.siblings={siblings})" if siblings else ""))
  if "staleness" in result:
    st = result["staleness"]
    rows.append(f"\nstaleness {st['k']}: step {st['median_step_s']['sequential'] * 1e3:.1f} ms "
                f"sequential, {st['median_step_s']['overlap'] * 1e3:.1f} ms with the overlap "
                f"(medians, {st['blocks']} alternating blocks each): it hid "
                f"{st['hidden_share_of_sample_and_judge'] * 100:.0f}% of sampling + judging")
  rows.append(f"\nsampled {result['sampled_tokens_per_s']:.0f} tokens/s (mean response "
              f"length {result['mean_response_length']:.1f}); MFU against the float32 matmul peak "
              f"of {result['peak_gflops_used']:.0f} GFLOP/s measured up front, sampling's FLOPs "
              f"counted at the full response length; load average before/after: "
              f"{result['load_average_before']} / {result['load_average_after']}")
  return "\n".join(rows)

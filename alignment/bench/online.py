"""The online benchmark: one online step at a config's scale, phase by phase.

Sampling, judging and the update timed apart over several steps, and the
reference's scoring of the same pairs beside them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from alignment import distributed
from alignment.bench.measure import Json


def _load_config(spec: str):
  """A config file given relative to the working directory or to the repository."""
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), path)
  return config_lib.load(f"{path}:{arg}")


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
  from alignment import algorithms, judges, sharding  # pylint: disable=g-import-not-at-top
  from alignment.data import pipeline, tasks  # pylint: disable=g-import-not-at-top
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from alignment.models import heads, zoo  # pylint: disable=g-import-not-at-top
  from alignment.train import online, roles, steps  # pylint: disable=g-import-not-at-top
  from alignment.train import state as state_lib  # pylint: disable=g-import-not-at-top

  config, pm_config = _load_config(args.config), _load_config(args.pm_config)
  distributed.setup_host()
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  d = config.data
  vocab = tasks.task_vocabulary(d.task)
  vocab_size = vocab_lib.model_vocab_size(vocab)
  program = online.build(config, mesh, rules, vocab)  # the loop's own step and sampler
  train = program.train
  model = train.model
  prompts = pipeline.make_iterator(
      d.task, "train", "prompts", d.batch_size, prompt_length=d.prompt_len,
      response_length=d.response_len, mesh=mesh, rules=rules, seed=d.shuffle_seed)
  state, _ = state_lib.create(train.init, train.optimizer, mesh, rules, config.seed)
  reference = roles.Reference(model, mesh, mesh, rules, train.state_shardings.params,
                              config.init, d, config.seed, config.loss.reduction)
  ref_params = reference.params
  pm = heads.PairwisePreferenceModel(zoo.from_section(pm_config.model, vocab_size))
  pm_params, _ = sharding.create_sharded(heads.init_fn(pm, d.prompt_len, d.response_len),
                                         mesh, rules, jax.random.PRNGKey(1))
  judge = judges.ModelJudge(pm, pm_params, mesh, rules)
  phases = online.make_phases(program, config, judge, reference)
  to_pairs = jax.jit(algorithms.ranked_pairs)
  reference_scores = jax.jit(lambda ref, pairs: steps.pair_logps(model, ref, pairs,
                                                                 config.loss.reduction))

  times: dict[str, list] = {k: [] for k in ("sample", "judge", "update", "step",
                                            "reference_scoring")}
  lengths = []
  for i in range(args.warmup + args.repeats):
    batch = next(prompts)
    t0 = time.perf_counter()
    out = jax.block_until_ready(phases.sample(state.params, batch, i))
    t1 = time.perf_counter()
    sampled, verdict = jax.block_until_ready(phases.judge(batch, out, i))
    t2 = time.perf_counter()
    state, metrics, _ = phases.update(state, sampled, verdict)
    jax.block_until_ready(metrics)
    t3 = time.perf_counter()
    with sharding.use(mesh, rules):
      pairs = to_pairs(sampled, verdict.first_wins)
      t4 = time.perf_counter()
      jax.block_until_ready(reference_scores(ref_params, pairs))
    t5 = time.perf_counter()
    if i >= args.warmup:
      for k, v in (("sample", t1 - t0), ("judge", t2 - t1), ("update", t3 - t2),
                   ("step", t3 - t0), ("reference_scoring", t5 - t4)):
        times[k].append(v)
      lengths.append(float(np.mean(np.asarray(out.lengths))))
  med = {k: statistics.median(v) for k, v in times.items()}
  rows = 2 * d.batch_size
  return {"settings": {"config": args.config, "pm_config": args.pm_config,
                       "policy": config.model.name, "proxy_pm": pm_config.model.name,
                       "vocab": vocab_size, "prompts_per_step": d.batch_size,
                       "samples_per_prompt": 2, "prompt_len": d.prompt_len,
                       "response_len": d.response_len, "loss": config.loss.name,
                       "cache_dtype": config.sampling.cache_dtype,
                       "warmup_steps": args.warmup, "steps": args.repeats,
                       "statistic": "median", "jax_devices": len(jax.devices())},
          "times_s": times, "median_s": med,
          "share": {k: med[k] / med["step"] for k in ("sample", "judge", "update")},
          "reference_scoring_share_of_update": med["reference_scoring"] / med["update"],
          "sampled_tokens_per_s": rows * statistics.mean(lengths) / med["sample"],
          "mean_response_length": statistics.mean(lengths)}


def online_args(p: argparse.ArgumentParser):
  p.add_argument("--config", default="configs/online.py:default")
  p.add_argument("--pm_config", default="configs/pm.py:default",
                 help="the proxy PM's size comes from this config's model")
  p.add_argument("--warmup", type=int, default=2, help="steps before timing (compiles)")
  p.add_argument("--repeats", type=int, default=10, help="timed steps")


def online_table(result: Json) -> str:
  s, med, share = result["settings"], result["median_s"], result["share"]
  rows = [f"{s['config']}: {s['policy']} policy, {s['proxy_pm']} proxy PM, "
          f"{s['prompts_per_step']} prompts x 2 samples, {s['prompt_len']} + "
          f"{s['response_len']} tokens; medians over {s['steps']} steps\n",
          "| phase | ms (median) | share of the step |", "|---|---|---|"]
  for k in ("sample", "judge", "update"):
    rows.append(f"| {k} | {med[k] * 1e3:.1f} | {share[k] * 100:.1f}% |")
  rows.append(f"| step | {med['step'] * 1e3:.1f} | 100% |")
  rows.append(f"| (reference scoring, inside update) | {med['reference_scoring'] * 1e3:.1f} | "
              f"{result['reference_scoring_share_of_update'] * 100:.0f}% of update if alone |")
  rows.append(f"\nsampled {result['sampled_tokens_per_s']:.0f} tokens/s (mean response "
              f"length {result['mean_response_length']:.1f}); load average before/after: "
              f"{result['load_average_before']} / {result['load_average_after']}")
  return "\n".join(rows)

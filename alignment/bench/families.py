"""The families benchmark: T5 against decoder-only (Llama-style) at equal parameters.

    python -m alignment.bench families --json=runs/bench/families.json
    python -m alignment.bench families --json=f.json --rungs=nano,tiny --repeats=5

For each rung of the zoo's CPU ladder (nano, tiny, mini, midi, maxi: about x5 in
parameters per rung, the `t5-` and `llama-` of a rung within 11% of each other's
parameters), built as a study builds it (the vocabulary of the SFT task,
`env_sft`'s 256, rather than the zoo's 512), at the study's shapes (batch 32,
prompt 40 + response 32 tokens; `cost.CAL_*`), this times:

  sft      the SFT step: `sft.build`'s program, the loop's own
  update   the IPO update: `offline.build`'s program, the step an online run
           takes after judging (policy forward and backward, the frozen
           reference's forward, in one program)
  sample   sampling `--samples` responses per prompt: the online loop's
           `Sampler`, EOS disabled so that every row decodes all its tokens (a
           random policy's EOS would end rows by chance)

each the median of `--repeats` (sft) or `--online_repeats` (update, sample)
calls after the first (compiling) call, the rung's two models interleaved
(`timed_interleaved`) so that a shared machine's load falls on both alike:
their ratio stays fair where the absolute times carry the load. Beside each,
the parameters (`zoo.count_params`) and the analytic model FLOPs
(`alignment.flops`, what `--plan` prices), and the float32 matmul peak
before and after. An online step is about sample + update + the judge, and the
judge does not depend on the policy's family (the golden program, or one PM).

Random weights and tokens: a step's cost does not depend on them. BUILD_NOTES.md
("Model families for the scaling sweep") has a run and what it decided.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import jax

from alignment.bench.measure import Json, fmt, matmul_peak, timed_interleaved, up_front

RUNGS = ("nano", "tiny", "mini", "midi", "maxi")
FAMILIES = ("t5", "llama")


def _config(spec: str, name: str, args):
  """A loop's default config with the benchmark's model and shapes."""
  from alignment.bench.online import _load_config  # pylint: disable=g-import-not-at-top
  return _load_config(spec, [f"model.name={name!r}", f"data.batch_size={args.batch}",
                             f"data.prompt_len={args.prompt_len}",
                             f"data.response_len={args.response_len}"])


def _random_batches(vocab: int, args):
  """(SFTBatch, PreferenceBatch) of random tokens at the benchmark's shapes."""
  from alignment.bench.train import bench_pairs  # pylint: disable=g-import-not-at-top
  from alignment.data import batches  # pylint: disable=g-import-not-at-top
  pairs = bench_pairs(vocab, args.batch, args.prompt_len, args.response_len)
  return batches.SFTBatch(pairs.prompt, pairs.prompt_mask, pairs.chosen,
                          pairs.chosen_mask), pairs


def _stepper(program, batch) -> Callable[[], Any]:
  """A call that runs one step of `program` on `batch` (placed as the step wants it;
  a callable gets the fresh state first), carries the new state to the next call and
  blocks until done."""
  from alignment.train import state as state_lib  # pylint: disable=g-import-not-at-top
  state, _ = state_lib.create(program.init, program.optimizer, program.mesh, program.rules,
                              0)
  if callable(batch):
    batch = batch(state)
  batch = jax.device_put(batch, program.batch_shardings)
  box = [state]

  def run():
    box[0], metrics = program.step(box[0], batch)
    return jax.block_until_ready(metrics)

  return run


def _contender(name: str, args) -> tuple[Json, dict[str, Callable[[], Any]]]:
  """(figures without timings, {part: a call that blocks}) of one model."""
  from alignment import flops, sampling, sharding  # pylint: disable=g-import-not-at-top
  from alignment.data import batches, tasks  # pylint: disable=g-import-not-at-top
  from alignment.models import zoo  # pylint: disable=g-import-not-at-top
  from alignment.train import offline, sft, steps  # pylint: disable=g-import-not-at-top
  b, lp, lr, k = args.batch, args.prompt_len, args.response_len, args.samples
  config = _config("configs/sft.py:default", name, args)
  # One device, as a workstation has (a test process has 8 fake ones).
  mesh, rules = sharding.mesh_and_rules(config.mesh, jax.devices()[:1])
  program = sft.build(config, mesh, rules, tasks.task_vocabulary(config.data.task))
  cfg = program.model_config
  sft_batch, pairs = _random_batches(cfg.vocab_size, args)
  calls = {"sft": _stepper(program, sft_batch)}
  figures = {"model": name, "architecture": cfg.architecture,
             "params": zoo.count_params(cfg), "vocab_size": cfg.vocab_size,
             "flops": {"sft": 3 * flops.forward(cfg, b, lp, b, lr)["total"]}}
  if not args.online_repeats:
    return figures, calls
  config = _config("configs/offline.py:default", name, args)
  update = offline.build(config, mesh, rules, tasks.task_vocabulary(config.data.task))
  calls["update"] = _stepper(update, lambda state: steps.AlignmentInput(  # ref: a copy
      pairs, ref_params=jax.tree.map(lambda x: x.copy(), state.params)))  # (state is donated)
  sampler = sampling.Sampler(
      program.model, sampling.SamplingConfig(max_new_tokens=lr, num_samples=k, eos_id=None),
      mesh, rules, params_sharding=program.state_shardings.params)
  params, _ = sharding.create_sharded(program.init, mesh, rules, jax.random.key(1))
  prompts = jax.device_put(batches.PromptBatch(pairs.prompt, pairs.prompt_mask),
                           sharding.batch_sharding(mesh, rules, 2))
  key = jax.random.key(2)
  calls["sample"] = lambda: jax.block_until_ready(sampler(params, prompts, key).tokens)
  figures["flops"]["update"] = flops.alignment_step(cfg, b, lp, lr)["total"]
  figures["flops"]["sample"] = flops.forward(cfg, b, lp, k * b, lr, sampling=True)["total"]
  return figures, calls


def _rung(names: list[str], args) -> list[Json]:
  """The models of one rung built, compiled (first call timed) and timed interleaved."""
  built = {n: _contender(n, args) for n in names}
  out = []
  for n, (fig, calls) in built.items():
    fig["first_call_s"] = {}
    for part, call in calls.items():
      t0 = time.perf_counter()
      call()
      fig["first_call_s"][part] = time.perf_counter() - t0
    out.append(fig)
  times: dict[str, dict[str, list]] = {n: {} for n in names}
  for part, repeats in (("sft", args.repeats), ("update", args.online_repeats),
                        ("sample", args.online_repeats)):
    fns = {n: calls[part] for n, (_, calls) in built.items() if part in calls}
    if fns and repeats:
      for n, t in timed_interleaved(fns, repeats).items():
        times[n][part] = t
  for fig in out:
    t = times[fig["model"]]
    fig["times_s"] = t
    fig["median_s"] = {part: statistics.median(v) for part, v in t.items()}
    if "update" in fig["median_s"] and "sample" in fig["median_s"]:
      fig["median_s"]["online_less_judge"] = fig["median_s"]["update"] + fig["median_s"]["sample"]
  return out


def bench_families(args) -> Json:
  """Both families rung by rung (module docstring), the matmul peak before and after."""
  rungs = [r for r in args.rungs.split(",") if r]
  families = [f for f in args.families.split(",") if f]
  peak_before = up_front(args, "matmul_peak", matmul_peak)["gflops"]
  models = []
  for rung in rungs:
    models += _rung([f"{f}-{rung}" for f in families], args)
  peak_after = matmul_peak()["gflops"]
  peak = max(peak_before, peak_after)
  for m in models:
    m["gflops_per_s"] = {part: m["flops"][part] / s / 1e9 for part, s in m["median_s"].items()
                         if part in m["flops"]}
    m["mfu"] = {part: g / peak for part, g in m["gflops_per_s"].items()}
  return {"settings": {"rungs": rungs, "families": families, "batch": args.batch,
                       "prompt_len": args.prompt_len, "response_len": args.response_len,
                       "samples_per_prompt": args.samples, "sft_repeats": args.repeats,
                       "online_repeats": args.online_repeats, "statistic": "median",
                       "order": "the models of a rung interleaved, call by call"},
          "matmul_peak_gflops": {"before": peak_before, "after": peak_after},
          "models": models, "ratios": _ratios(models, families)}


def _ratios(models: list[Json], families: list[str]) -> list[Json]:
  """Per rung, each family's median times and parameters over the first family's."""
  by_name = {m["model"]: m for m in models}
  out = []
  for m in models:
    family, _, rung = m["model"].partition("-")
    base = by_name.get(f"{families[0]}-{rung}")
    if family == families[0] or base is None:
      continue
    out.append({"rung": rung, "model": m["model"], "over": base["model"],
                "params": m["params"] / base["params"],
                "flops": {p: m["flops"][p] / base["flops"][p] for p in m["flops"]},
                "time": {p: m["median_s"][p] / base["median_s"][p] for p in m["median_s"]
                         if p in base["median_s"]}})
  return out


def families_args(p: argparse.ArgumentParser):
  p.add_argument("--rungs", default=",".join(RUNGS),
                 help="rungs of the ladder, comma separated (models <family>-<rung>)")
  p.add_argument("--families", default=",".join(FAMILIES),
                 help="zoo name prefixes; ratios are over the first")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--prompt_len", type=int, default=40)
  p.add_argument("--response_len", type=int, default=32)
  p.add_argument("--samples", type=int, default=2, help="responses sampled per prompt")
  p.add_argument("--repeats", type=int, default=20, help="timed SFT steps per model")
  p.add_argument("--online_repeats", type=int, default=5,
                 help="timed IPO updates and samplings per model (0: SFT only)")


def families_table(result: Json) -> str:
  s, peak = result["settings"], result["matmul_peak_gflops"]
  online = bool(s["online_repeats"])
  rows = [f"batch {s['batch']}, prompt {s['prompt_len']} + response {s['response_len']} "
          f"tokens; medians of {s['sft_repeats']} SFT steps"
          + (f", {s['online_repeats']} IPO updates and samplings ({s['samples_per_prompt']} "
             "per prompt)" if online else "")
          + f", models of a rung interleaved; vocabulary {_vocab(result)} (the SFT task's, "
          f"as a study builds the models); float32 matmul peak {peak['before']:.0f} "
          f"GFLOP/s before, {peak['after']:.0f} after\n"]
  head = "| model | params | SFT GFLOP | SFT s | SFT GFLOP/s |"
  if online:
    head += " update GFLOP | update s | sample GFLOP | sample s | sample + update s |"
  rows += [head, "|" + "---|" * (head.count("|") - 1)]
  for m in result["models"]:
    f, t, g = m["flops"], m["median_s"], m["gflops_per_s"]
    line = (f"| {m['model']} | {_human(m['params'])} | {f['sft'] / 1e9:.2f} | "
            f"{fmt(t.get('sft'), spec='.3f')} | {fmt(g.get('sft'), spec='.1f')} |")
    if online:
      line += (f" {f['update'] / 1e9:.2f} | {fmt(t.get('update'), spec='.3f')} | "
               f"{f['sample'] / 1e9:.2f} | {fmt(t.get('sample'), spec='.3f')} | "
               f"{fmt(t.get('online_less_judge'), spec='.3f')} |")
    rows.append(line)
  if result["ratios"]:
    rows += ["", "| rung | ratio | params | SFT FLOPs | SFT time | update time | sample time |"
             " sample + update time |", "|---|---|---|---|---|---|---|---|"]
    for r in result["ratios"]:
      t = r["time"]
      rows.append(f"| {r['rung']} | {r['model']} / {r['over']} | {r['params']:.2f} | "
                  f"{r['flops']['sft']:.2f} | {fmt(t.get('sft'))} | {fmt(t.get('update'))} | "
                  f"{fmt(t.get('sample'))} | {fmt(t.get('online_less_judge'))} |")
  rows.append(f"\nload average before/after: {result['load_average_before']} / "
              f"{result['load_average_after']}")
  return "\n".join(rows)


def _vocab(result: Json) -> str:
  return "/".join(sorted({str(m["vocab_size"]) for m in result["models"]}))


def _human(n: float) -> str:
  return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"

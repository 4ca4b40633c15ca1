"""Ahead-of-time check: will this experiment fit that slice? Compile it and see.

    python -m alignment.aot --config=configs/online.py:paper \\
        --mesh=data=2,fsdp=8,tensor=1 [--devices=16] [--hbm_gib=32] [--pm=t5-large]
    python -m alignment.aot --config=configs/online.py:paper --topology=v4:2x2x4 \\
        --mesh=data=2,fsdp=8,tensor=1

Lowers and compiles, for the target mesh, the loop's own train step (its
`build`: the very function the loop runs; online/offline: policy forward and
backward, the frozen reference's forward, the optimiser update) and, online,
the loop's sampler (prefill + the decode loop with its KV cache) and the proxy
PM's judgement of the sampled pairs (both orders), on abstract inputs: nothing
is allocated. The vocabulary is the loop's: `model.vocab_size`, else the data
task's (add --config.model.vocab_size=32128 for a real T5 checkpoint's). It prints per-device bytes of the parameters, the optimiser state,
the reference, the proxy PM, the KV cache (T5: the decoder's self-attention
cache AND the encoder keys/values of every cross-attention layer, one copy per
sample), and the compiler's own figures (arguments, outputs, temporaries =
activations), and whether the peak fits `--hbm_gib`.

The peak is the larger of two phases, since they never overlap in the online
loop: training (params + optimiser + reference + proxy PM resident, plus the
train step's temporaries) and sampling/judging (the same residents plus the
larger of the sampler's and the judge's temporaries).

Time before money: with a TPU topology (or --peak_tflops and --hbm_gbps for
other devices) it also estimates each phase's time per step from the compiled
programs' own cost analyses (FLOPs and bytes of memory traffic per device)
against the chip's peak and bandwidth, each program the slower of the two (a
roofline: a lower bound, real steps reach perhaps half of it). Sampling is the
prefill plus one decode step per new token, each compiled on its own (the
cost analysis counts the sampler's while loop once). Then chip-hours of one
online and one offline run of --steps steps, and of the paper-scale study
(configs/study.py:tpu: its online and offline runs at the base size).

Devices, three ways:
  on a TPU VM      the real chips (the TPU compiler); no flag needed.
  --topology=T     an abstract TPU slice, e.g. v4:2x2x4 (32 chips), v5e:4x4,
                   v5p:2x2x2, compiled by the real TPU compiler on any host
                   (`jax.experimental.topologies`; needs libtpu installed:
                   `pip install 'jax[tpu]'`, no TPU required). The figures are
                   the TPU's own.
  --devices=N      N fake CPU devices (set before JAX starts): parameter,
                   optimiser and cache bytes are exact per-shard sizes; the
                   CPU compiler's temporaries are an estimate of the TPU's
                   (it fuses and schedules differently).
"""
from __future__ import annotations

import argparse
import os
import sys

# HBM per chip (GiB) of the TPU generations `--topology` knows, for the default --hbm_gib
# (divided among a chip's devices: see _default_hbm).
HBM_GIB = {"v4": 32.0, "v5e": 16.0, "v5litepod": 16.0, "v5p": 95.0, "v6e": 32.0}
# Per chip: peak dense bfloat16 FLOP/s and HBM bandwidth (bytes/s), Google's published
# figures, for the time estimates (divided among a chip's devices like the HBM).
CHIP_PEAK = {"v4": (275e12, 1228e9), "v5e": (197e12, 819e9), "v5litepod": (197e12, 819e9),
             "v5p": (459e12, 2765e9), "v6e": (918e12, 1640e9)}


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", required=True, help="configs/<exp>.py:<variant>")
  p.add_argument("--mesh", default="", help="e.g. data=2,fsdp=8,tensor=1 (default: config's)")
  p.add_argument("--devices", type=int, default=0, help="fake this many CPU devices")
  p.add_argument("--topology", default="",
                 help="abstract TPU slice, e.g. v4:2x2x4 or v5e:4x4 (needs libtpu)")
  p.add_argument("--hbm_gib", type=float, default=0.0,
                 help="per-device memory to check against (default: the topology's HBM)")
  p.add_argument("--pm", default="", help="proxy PM zoo model (default: the policy's)")
  p.add_argument("--skip_sampler", action="store_true")
  p.add_argument("--skip_judge", action="store_true")
  p.add_argument("--json", default="", help="also write the figures to this JSON file")
  p.add_argument("--peak_tflops", type=float, default=0.0,
                 help="per-device peak TFLOP/s for the time estimates (default: the "
                      "topology's chip, divided among its devices)")
  p.add_argument("--hbm_gbps", type=float, default=0.0,
                 help="per-device memory bandwidth in GB/s for the time estimates (default: "
                      "the topology's chip)")
  p.add_argument("--steps", type=int, default=4000,
                 help="steps per run for the chip-hour estimates (the paper's 4000)")
  args, overrides = p.parse_known_args(argv)
  return args, overrides


class AotError(ValueError):
  """A bad --mesh, --topology or --devices: one line, no traceback."""


def _mesh_arg(text: str) -> dict:
  out = {}
  for part in filter(None, text.split(",")):
    k, _, v = part.partition("=")
    try:
      out[k.strip()] = int(v)
    except ValueError:
      raise AotError(f"--mesh={text!r}: {part!r} is not axis=integer") from None
  return out


def _gib(n: float) -> str:
  return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.2f} MiB"


def per_device_bytes(abstract_tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  total = 0
  for x in jax.tree.leaves(abstract_tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
  return total


def topology_devices(name: str):
  """The devices of an abstract TPU slice (`jax.experimental.topologies`)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=name).devices)
  except Exception as e:  # pylint: disable=broad-except  (no libtpu, unknown name)
    raise AotError(
        f"--topology={name}: cannot describe this TPU slice ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:200] if str(e) else ''}); it needs the TPU compiler "
        "(pip install 'jax[tpu]') and a name like v4:2x2x4, v5e:4x4, v5p:2x2x2") from None


def _kv_cache_per_device(model, abstract_params, d, scfg, mesh, rules) -> int:
  """Bytes per device of the sampler's decode state: self-attention caches and
  (T5) the encoder keys/values of every cross-attention layer, for 2B rows."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from alignment import sharding  # pylint: disable=g-import-not-at-top
  from alignment.models import layers as L  # pylint: disable=g-import-not-at-top
  rows = d.batch_size * scfg.num_samples
  prompt = jax.ShapeDtypeStruct((rows, d.prompt_len), jnp.int32)
  with sharding.use(mesh, rules):
    _, state = jax.eval_shape(
        lambda p, x: model.apply({"params": p}, x, x, scfg.max_new_tokens,
                                 L.dtype_from_name(scfg.cache_dtype), method="start_decode"),
        abstract_params, prompt)
  caches = [c for c in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, L.KVCache))
            if isinstance(c, L.KVCache)]
  rows_ways = sharding.data_parallel_size(dict(mesh.shape), rules)
  total = 0
  for c in caches:
    for a in (c.k_bgsk, c.v_bgsk):
      heads_ways = mesh.shape["tensor"] if a.shape[1] % mesh.shape["tensor"] == 0 else 1
      total += int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize // (rows_ways * heads_ways)
  return total


def build_programs(config, mesh, rules):
  """The loop's own programs for config (`<loop>.build`): (train Program, sampler or None).

  The very step the loop runs (same function, same static arguments), with the
  vocabulary it would use: `model.vocab_size`, else the data task's.
  """
  from alignment import sharding  # pylint: disable=g-import-not-at-top
  from alignment.data import tasks  # pylint: disable=g-import-not-at-top
  from alignment.train import offline, online, preference_model, roles, sft  # pylint: disable=g-import-not-at-top
  vocab = tasks.task_vocabulary(config.data.task)
  if config.experiment in ("online", "offline"):
    ref_mesh = roles.role_meshes(config, mesh)[roles.Role.REFERENCE]
    shared = sharding.same_mesh(mesh, ref_mesh)
    if config.experiment == "online":
      program = online.build(config, mesh, rules, vocab, reference_shared=shared)
      return program.train, program.sampler
    return offline.build(config, mesh, rules, vocab, reference_shared=shared), None
  builders = {"sft": sft.build, "pm": preference_model.build}
  if config.experiment not in builders:
    raise AotError(f"config.experiment={config.experiment!r}: the AOT check compiles the "
                   "train loops (sft, pm, offline, online)")
  return builders[config.experiment](config, mesh, rules, vocab), None


def _train_step_figures(config, program, devices, resolved_mesh: dict) -> dict:
  """What every loop has: the train step compiled, and the bytes per device of
  what stays resident (parameters, optimiser state, the reference)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  d = config.data
  abstract_state = program.abstract_state
  train_compiled = program.lower().compile()
  mem = train_compiled.memory_analysis()
  aligns = config.experiment in ("online", "offline")
  return {
      "config": f"{config.experiment} {config.model.name} batch={d.batch_size} "
                f"lengths={d.prompt_len}+{d.response_len}",
      "mesh": resolved_mesh, "devices": len(devices), "platform": devices[0].platform,
      "device_kind": getattr(devices[0], "device_kind", devices[0].platform),
      "params_total": int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract_state.params))),
      "per_device": {
          "params": per_device_bytes(abstract_state.params),
          "optimizer": per_device_bytes(abstract_state.opt_state),
          "reference": per_device_bytes(abstract_state.params) if aligns else 0,
      },
      "train_step_compiler": {
          "arguments": int(mem.argument_size_in_bytes), "outputs": int(mem.output_size_in_bytes),
          "temporaries": int(mem.temp_size_in_bytes),
          "generated_code": int(mem.generated_code_size_in_bytes)},
      "cost": {"train_step": _cost(train_compiled)},
  }


def _proxy_pm(config, program, pm_name: str, mesh, rules):
  """The online loop's proxy PM, (model, abstract parameters): the zoo model
  named (the policy's by default) at the policy's dtypes and vocabulary."""
  from alignment.models import heads, zoo  # pylint: disable=g-import-not-at-top
  model_cfg = program.model_config
  pm_cfg = zoo.get(pm_name or config.model.name, dtype=model_cfg.dtype,
                   param_dtype=model_cfg.param_dtype, vocab_size=model_cfg.vocab_size)
  pm_model = heads.PairwisePreferenceModel(pm_cfg)
  return pm_model, zoo.sharded_abstract_params(pm_model, config.data, mesh, rules)


def _sampler_figures(program, sampler, prompt, data, mesh, rules) -> tuple[dict, int, dict]:
  """The sampler compiled whole (for its memory), and its prefill and one decode
  step compiled on their own (for the costs: the whole one's while loop is
  counted once, see `estimate`): (costs, KV cache bytes per device, the
  compiler's memory figures)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from alignment import sharding  # pylint: disable=g-import-not-at-top
  from alignment.data import batches as B  # pylint: disable=g-import-not-at-top
  params = program.abstract_state.params
  key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh))
  scompiled = sampler.lower(params, B.PromptBatch(prompt, prompt), key).compile()
  smem = scompiled.memory_analysis()
  costs = {"sampler": _cost(scompiled)}
  kv_cache = _kv_cache_per_device(program.model, params, data, sampler.config, mesh, rules)
  compiler = {"arguments": int(smem.argument_size_in_bytes),
              "outputs": int(smem.output_size_in_bytes),
              "temporaries": int(smem.temp_size_in_bytes)}
  prefill, step = sampler.compile_phases(params, B.PromptBatch(prompt, prompt))
  costs["prefill"] = _cost(prefill)
  costs["decode_step"] = _cost(step)
  costs["new_tokens"] = int(sampler.config.max_new_tokens)
  return costs, kv_cache, compiler


def _judge_figures(pm_model, pm_abstract, prompt, rows, data, mesh, rules) -> tuple[dict, dict]:
  """The proxy PM's judgement of the sampled pairs (both orders) compiled:
  (its cost, the compiler's memory figures)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from alignment import judges, sharding  # pylint: disable=g-import-not-at-top
  judge = judges.ModelJudge(pm_model, pm_abstract, mesh, rules)
  resp = jax.ShapeDtypeStruct((data.batch_size, data.response_len), jnp.int32, sharding=rows)
  with sharding.use(mesh, rules):
    jcompiled = judge.compare_fn().lower(pm_abstract, prompt, prompt, resp, resp, resp,
                                         resp).compile()
  jmem = jcompiled.memory_analysis()
  return _cost(jcompiled), {"arguments": int(jmem.argument_size_in_bytes),
                            "temporaries": int(jmem.temp_size_in_bytes)}


def _add_phase_totals(out: dict):
  """Per-device totals of the two phases, which never overlap in the online loop:
  training (the residents plus the train step's temporaries) and sampling/judging
  (the residents plus the larger of the sampler's and the judge's temporaries)."""
  pd = out["per_device"]
  resident = pd["params"] + pd["optimizer"] + pd["reference"] + pd.get("proxy_pm", 0)
  out["per_device_resident"] = resident
  out["per_device_total_train"] = resident + out["train_step_compiler"]["temporaries"]
  sample_temps = max(out.get("sampler_compiler", {}).get("temporaries", 0),
                     out.get("judge_compiler", {}).get("temporaries", 0))
  if "sampler_compiler" in out or "judge_compiler" in out:
    out["per_device_total_sampling"] = resident + sample_temps


def analyse(config, mesh_shape: dict | None = None, pm_name: str = "",
            with_sampler: bool = True, devices=None, with_judge: bool = True) -> dict:
  """Compiles the loop's train step, and (online) its sampler and the judge, for
  config's mesh; returns the figures.

  devices: the devices to compile for (an abstract TPU topology's, or None
  for jax.devices()).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from alignment import sharding  # pylint: disable=g-import-not-at-top
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top

  devices = list(jax.devices() if devices is None else devices)
  if mesh_shape:
    for k, v in mesh_shape.items():
      config_lib.set_key(config, f"mesh.{k}", v, "--mesh")
  resolved = config_lib.validate(config, len(devices))
  mesh, rules = sharding.mesh_and_rules(config.mesh, devices)
  d = config.data
  program, sampler = build_programs(config, mesh, rules)
  out = _train_step_figures(config, program, devices, resolved)
  if sampler is not None:  # online: the proxy PM is resident, the sampler and judge run
    pm_model, pm_abstract = _proxy_pm(config, program, pm_name, mesh, rules)
    out["pm"] = pm_name or config.model.name
    out["per_device"]["proxy_pm"] = per_device_bytes(pm_abstract)
    rows = sharding.batch_sharding(mesh, rules, 2)
    prompt = jax.ShapeDtypeStruct((d.batch_size, d.prompt_len), jnp.int32, sharding=rows)
    if with_sampler:
      costs, kv_cache, compiler = _sampler_figures(program, sampler, prompt, d, mesh, rules)
      out["cost"].update(costs)
      out["per_device"]["kv_cache"] = kv_cache
      out["sampler_compiler"] = compiler
    if with_judge:
      out["cost"]["judge"], out["judge_compiler"] = _judge_figures(
          pm_model, pm_abstract, prompt, rows, d, mesh, rules)
  _add_phase_totals(out)
  return out


def _cost(compiled) -> dict:
  """The compiler's per-device cost analysis of one program: FLOPs and bytes
  of memory traffic (XLA counts a loop's body once: see `estimate`)."""
  c = compiled.cost_analysis()
  c = (c[0] if c else {}) if isinstance(c, (list, tuple)) else (c or {})
  return {"flops": float(c.get("flops", 0.0)),
          "bytes": float(c.get("bytes accessed", 0.0))}


def _seconds(cost: dict, peak_flops: float, bandwidth: float) -> float:
  """Roofline time of a program on one device: compute- or memory-bound."""
  return max(cost["flops"] / peak_flops, cost["bytes"] / bandwidth)


def estimate(fig: dict, peak_flops: float, bandwidth: float, chips: float, steps: int,
             runs: dict | None = None) -> dict:
  """Seconds per step from the compiled programs' cost analyses against a
  device's peak FLOP/s and memory bandwidth (each program the slower of its
  compute and its memory traffic: a lower bound; real steps reach perhaps half
  of it), and chip-hours for runs of `steps` steps.

  Sampling is the prefill plus `new_tokens` decode steps, each compiled on its
  own, since the sampler's while loop is counted once by the cost analysis (the
  bound assumes no row stops early). An online step samples, judges and
  updates; an offline step only updates (the same train step: a pair's
  forward and backward, the reference's forward).
  runs: {"online": n, "offline": m} runs of the whole study, for its total.
  """
  cost = fig["cost"]
  t = {"train_step": _seconds(cost["train_step"], peak_flops, bandwidth)}
  if "decode_step" in cost:
    t["prefill"] = _seconds(cost["prefill"], peak_flops, bandwidth)
    t["decode_step"] = _seconds(cost["decode_step"], peak_flops, bandwidth)
    t["sampling"] = t["prefill"] + cost["new_tokens"] * t["decode_step"]
  if "judge" in cost:
    t["judge"] = _seconds(cost["judge"], peak_flops, bandwidth)
  online = "sampling" in t
  if online:
    t["online_step"] = t["sampling"] + t.get("judge", 0.0) + t["train_step"]
  hours = lambda seconds: seconds * steps * chips / 3600
  out = {"seconds": t, "peak_flops_per_device": peak_flops,
         "bandwidth_per_device": bandwidth, "chips": chips, "steps": steps,
         "chip_hours": {"offline_run": hours(t["train_step"])}}
  if online:
    out["chip_hours"]["online_run"] = hours(t["online_step"])
  if runs and online:
    out["runs"] = dict(runs)
    out["chip_hours"]["study"] = (runs.get("online", 0) * out["chip_hours"]["online_run"] +
                                  runs.get("offline", 0) * out["chip_hours"]["offline_run"])
  return out


def paper_study_runs() -> dict:
  """How many online and offline runs the paper-scale study (configs/study.py:tpu)
  trains at its base model size: its Fig. 1 sweep, the golden policy, the
  replays, the Best-of-2 and the pair-source ablations."""
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  from alignment import study  # pylint: disable=g-import-not-at-top
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  c = config_lib.load(os.path.join(here, "configs", "study.py:tpu"))
  runs = {"online": 0, "offline": 0}
  for stage in study.plan(c, os.path.join(here, "runs", "never-written")):
    if stage.kind in runs and stage.config.model.name == c.model:
      runs[stage.kind] += 1
  return runs


def _ms(seconds: float) -> str:
  return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def render(fig: dict, hbm_gib: float = 0.0) -> str:
  pd = fig["per_device"]
  pm = f" (proxy PM {fig['pm']})" if "pm" in fig else ""
  lines = [f"{fig['config']}{pm} on {fig['devices']} "
           f"{fig.get('device_kind', fig['platform'])} devices, mesh {fig['mesh']}",
           f"  parameters (total)       {fig['params_total'] / 1e6:,.1f} M",
           f"  per device: params       {_gib(pd['params'])}",
           f"              optimizer    {_gib(pd['optimizer'])}"]
  if pd["reference"]:
    lines.append(f"              reference    {_gib(pd['reference'])}")
  if "proxy_pm" in pd:
    lines.append(f"              proxy PM     {_gib(pd['proxy_pm'])}")
  lines.append(f"              train temps  {_gib(fig['train_step_compiler']['temporaries'])}"
               "  (activations, compiler's figure)")
  if "kv_cache" in pd:
    lines += [f"              KV cache     {_gib(pd['kv_cache'])}  (inside sampler temps)",
              f"              sampler temps {_gib(fig['sampler_compiler']['temporaries'])}"]
  if "judge_compiler" in fig:
    lines.append(f"              judge temps  {_gib(fig['judge_compiler']['temporaries'])}")
  total = max(fig["per_device_total_train"], fig.get("per_device_total_sampling", 0))
  lines.append(f"  peak per device (train or sample) {_gib(total)}")
  if hbm_gib:
    verdict = "fits" if total <= hbm_gib * 2**30 else "DOES NOT FIT"
    lines.append(f"  against {hbm_gib:g} GiB per device: {verdict}")
  est = fig.get("estimate")
  if est:
    t = est["seconds"]
    lines.append(f"  time per step (roofline bound: {est['peak_flops_per_device'] / 1e12:g} "
                 f"TFLOP/s, {est['bandwidth_per_device'] / 1e9:g} GB/s per device)")
    if "sampling" in t:
      lines.append(f"              sampling     {_ms(t['sampling'])}  (prefill "
                   f"{_ms(t['prefill'])} + {fig['cost']['new_tokens']} x decode "
                   f"{_ms(t['decode_step'])})")
    if "judge" in t:
      lines.append(f"              judging      {_ms(t['judge'])}")
    lines.append(f"              update       {_ms(t['train_step'])}")
    ch = est["chip_hours"]
    runs = f"{est['steps']} steps on {est['chips']:g} chips"
    if "online_run" in ch:
      lines.append(f"              online step  {_ms(t['online_step'])}; an online run of "
                   f"{runs}: {ch['online_run']:,.1f} chip-hours")
    lines.append(f"              an offline run of {runs}: {ch['offline_run']:,.1f} chip-hours")
    if "study" in ch:
      lines.append(f"  the paper's study ({est['runs']['online']} online + "
                   f"{est['runs']['offline']} offline runs, configs/study.py:tpu): "
                   f"{ch['study']:,.0f} chip-hours at the bound")
  return "\n".join(lines)


def devices_per_chip(devices) -> float:
  """JAX devices per chip, from the devices' chip coordinates as the TPU
  compiler reports them (1 where they carry none)."""
  coords = [tuple(getattr(d, "coords", ())) for d in devices or ()]
  if coords and all(coords):
    return len(coords) / len(set(coords))
  return 1.0


def _default_hbm(topology: str, devices=None) -> float:
  """HBM per JAX device: a chip's HBM divided among its devices (how many share a
  chip is read from the compiler's device coordinates, not assumed)."""
  per_chip = HBM_GIB.get(topology.split(":")[0].lower(), 0.0) if topology else 0.0
  return per_chip / devices_per_chip(devices) if per_chip else 0.0


def _default_peak(topology: str, devices=None) -> tuple[float, float]:
  """(FLOP/s, bytes/s) per JAX device of the topology's chip; (0, 0) if unknown."""
  flops, bandwidth = CHIP_PEAK.get(topology.split(":")[0].lower(), (0.0, 0.0)) if topology \
      else (0.0, 0.0)
  share = devices_per_chip(devices)
  return flops / share, bandwidth / share


def main(argv=None) -> int:
  args, overrides = _parse(sys.argv[1:] if argv is None else argv)
  if min(args.peak_tflops, args.hbm_gbps) < 0 or args.steps < 1:
    print("error: --peak_tflops and --hbm_gbps must be >= 0 and --steps >= 1", file=sys.stderr)
    return 2
  if args.devices and args.topology:
    print("error: give --devices (fake CPU devices) or --topology (a TPU slice), not both",
          file=sys.stderr)
    return 2
  if (args.devices or args.topology) and "jax" not in sys.modules:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the topology is abstract: run on CPU
    if args.topology:  # not on a TPU VM: do not ask the metadata server about one
      os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    if args.devices:
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                 f" --xla_force_host_platform_device_count={args.devices}")
  import jax  # pylint: disable=g-import-not-at-top
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  try:
    unknown = [o for o in overrides if not o.startswith("--config.")]
    if unknown:
      raise config_lib.ConfigError(f"unknown flag(s) {unknown}; see --help")
    config = config_lib.load(args.config)
    config_lib.apply_overrides(config, [o[len("--config."):] for o in overrides],
                               where="--config")
    if args.devices and jax.device_count() != args.devices:
      raise config_lib.ConfigError(f"--devices={args.devices}: JAX already started with "
                                   f"{jax.device_count()} devices")
    devices = topology_devices(args.topology) if args.topology else None
    fig = analyse(config, _mesh_arg(args.mesh), args.pm, not args.skip_sampler, devices,
                  not args.skip_judge)
  except (config_lib.ConfigError, AotError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.topology:
    fig["topology"] = args.topology
  hbm = args.hbm_gib or _default_hbm(args.topology, devices)
  peak, bandwidth = _default_peak(args.topology, devices)
  peak = args.peak_tflops * 1e12 or peak
  bandwidth = args.hbm_gbps * 1e9 or bandwidth
  if peak and bandwidth:
    share = devices_per_chip(devices)
    fig["devices_per_chip"] = share
    runs = paper_study_runs() if config.experiment == "online" else None
    fig["estimate"] = estimate(fig, peak, bandwidth, fig["devices"] / share, args.steps, runs)
  print(render(fig, hbm))
  if args.json:
    import json  # pylint: disable=g-import-not-at-top
    with open(args.json, "w") as f:
      json.dump(dict(fig, hbm_gib=hbm), f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Ahead-of-time check: will this experiment fit that slice? Compile it and see.

    python -m alignment.aot --config=configs/online.py:paper \\
        --mesh=data=2,fsdp=8,tensor=1 [--devices=16] [--hbm_gib=32] [--pm=t5-large]

Lowers and compiles, for the target mesh, the alignment train step (policy
forward and backward, the frozen reference's forward, the optimiser update)
and the sampler (prefill + the decode loop with its KV cache), on abstract
inputs: nothing is allocated. It prints per-device bytes of the parameters,
the optimiser state, the reference, the proxy PM, the KV cache, and the
compiler's own figures (arguments, outputs, temporaries = activations), and
whether the total fits `--hbm_gib`.

Devices: on a TPU VM the real chips are used (the compiler is the TPU one). On
CPU, `--devices=N` fakes N host devices (set before JAX starts); the CPU
compiler's temporaries are then an estimate of the TPU's, while parameter,
optimiser and cache bytes are exact per-shard sizes.
"""
from __future__ import annotations

import argparse
import os
import sys


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", required=True, help="configs/<exp>.py:<variant>")
  p.add_argument("--mesh", default="", help="e.g. data=2,fsdp=8,tensor=1 (default: config's)")
  p.add_argument("--devices", type=int, default=0, help="fake this many CPU devices")
  p.add_argument("--hbm_gib", type=float, default=0.0, help="per-device memory to check against")
  p.add_argument("--pm", default="", help="proxy PM zoo model (default: the policy's)")
  p.add_argument("--skip_sampler", action="store_true")
  p.add_argument("--json", default="", help="also write the figures to this JSON file")
  args, overrides = p.parse_known_args(argv)
  return args, overrides


def _mesh_arg(text: str) -> dict:
  out = {}
  for part in filter(None, text.split(",")):
    k, _, v = part.partition("=")
    out[k.strip()] = int(v)
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


def analyse(config, mesh_shape: dict | None = None, pm_name: str = "",
            with_sampler: bool = True) -> dict:
  """Compiles the alignment step (and the sampler) for config's mesh; returns figures."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  from alignment import sampling, sharding  # pylint: disable=g-import-not-at-top
  from alignment.data import batches as B  # pylint: disable=g-import-not-at-top
  from alignment.models import heads, zoo  # pylint: disable=g-import-not-at-top
  from alignment.train import common, steps  # pylint: disable=g-import-not-at-top
  from alignment.train import state as state_lib  # pylint: disable=g-import-not-at-top

  if mesh_shape:
    for k, v in mesh_shape.items():
      config_lib.set_key(config, f"mesh.{k}", v, "--mesh")
  resolved = config_lib.validate(config, jax.device_count())
  mesh, rules = common.mesh_and_rules(config)
  d = config.data
  model_cfg = common.model_config(config.model, 0)  # 0: the zoo's own vocabulary
  model = heads.LanguageModel(model_cfg)
  optimizer = state_lib.make_optimizer(config.optimizer)
  abstract_state, state_shardings = state_lib.abstract(common.lm_init(model, d), optimizer,
                                                       mesh, rules, config.seed)
  pairs = B.PreferenceBatch(*(jax.ShapeDtypeStruct((d.batch_size, n), jnp.int32) for n in (
      d.prompt_len, d.prompt_len, d.response_len, d.response_len, d.response_len,
      d.response_len)))
  pair_shardings = sharding.batch_shardings(pairs, mesh, rules)
  pairs = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), pairs,
                       pair_shardings)
  loss_name = config.loss.name if "loss" in config else "ipo"
  loss_fn = steps.alignment_loss_fn(model, loss_name, 0.1)
  step = state_lib.make_step(loss_fn, optimizer, state_shardings,
                             {"pairs": pair_shardings, "ref_params": state_shardings.params},
                             mesh, rules)
  with sharding.use(mesh, rules):
    compiled = step.jitted.lower(abstract_state, {"pairs": pairs, "ref_params":
                                                  abstract_state.params}).compile()
  mem = compiled.memory_analysis()
  out = {
      "config": f"{config.model.name} batch={d.batch_size} lengths={d.prompt_len}+"
                f"{d.response_len}",
      "mesh": resolved, "devices": jax.device_count(), "platform": jax.devices()[0].platform,
      "params_total": int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract_state.params))),
      "per_device": {
          "params": per_device_bytes(abstract_state.params),
          "optimizer": per_device_bytes(abstract_state.opt_state),
          "reference": per_device_bytes(abstract_state.params),
      },
      "train_step_compiler": {
          "arguments": int(mem.argument_size_in_bytes), "outputs": int(mem.output_size_in_bytes),
          "temporaries": int(mem.temp_size_in_bytes),
          "generated_code": int(mem.generated_code_size_in_bytes)},
  }
  pm_cfg = zoo.get(pm_name or config.model.name, dtype=model_cfg.dtype,
                   param_dtype=model_cfg.param_dtype)
  pm_abstract = common.abstract_params(heads.PairwisePreferenceModel(pm_cfg), d, mesh, rules)
  out["per_device"]["proxy_pm"] = per_device_bytes(pm_abstract)
  if with_sampler:
    s = config.get("sampling", None)
    scfg = sampling.SamplingConfig(max_new_tokens=d.response_len, num_samples=2,
                                   cache_dtype=s.cache_dtype if s else "float32")
    sampler = sampling.Sampler(model, scfg, mesh, rules, params_sharding=state_shardings.params)
    rows = sharding.batch_sharding(mesh, rules, 2)
    prompt = jax.ShapeDtypeStruct((d.batch_size, d.prompt_len), jnp.int32, sharding=rows)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh))
    smem = sampler.lower(abstract_state.params, B.PromptBatch(prompt, prompt),
                         key).compile().memory_analysis()
    n_rows = 2 * d.batch_size
    kv_len = d.response_len if model_cfg.architecture == "t5" else d.prompt_len + d.response_len
    layers = (model_cfg.num_decoder_layers if model_cfg.architecture == "t5"
              else model_cfg.num_layers)
    itemsize = 2 if scfg.cache_dtype == "bfloat16" else 4
    cache = jax.ShapeDtypeStruct((layers, 2, n_rows, model_cfg.num_kv_heads, kv_len,
                                  model_cfg.head_dim), np.float16 if itemsize == 2 else
                                 np.float32)
    cache_spec = jax.sharding.PartitionSpec(None, None, *sharding.batch_sharding(
        mesh, rules, 1).spec, "tensor" if model_cfg.num_kv_heads % resolved["tensor"] == 0
        else None)
    cache = jax.ShapeDtypeStruct(cache.shape, cache.dtype,
                                 sharding=jax.sharding.NamedSharding(mesh, cache_spec))
    out["per_device"]["kv_cache"] = per_device_bytes([cache])
    out["sampler_compiler"] = {"arguments": int(smem.argument_size_in_bytes),
                               "outputs": int(smem.output_size_in_bytes),
                               "temporaries": int(smem.temp_size_in_bytes)}
  pd = out["per_device"]
  out["per_device_total_train"] = (pd["params"] + pd["optimizer"] + pd["reference"]
                                   + pd["proxy_pm"]
                                   + out["train_step_compiler"]["temporaries"])
  if with_sampler:
    out["per_device_total_sampling"] = (pd["params"] + pd["optimizer"] + pd["reference"]
                                        + pd["proxy_pm"]
                                        + out["sampler_compiler"]["temporaries"])
  return out


def render(fig: dict, hbm_gib: float = 0.0) -> str:
  pd = fig["per_device"]
  lines = [f"{fig['config']} on {fig['devices']} {fig['platform']} devices, mesh {fig['mesh']}",
           f"  parameters (total)       {fig['params_total'] / 1e6:,.1f} M",
           f"  per device: params       {_gib(pd['params'])}",
           f"              optimizer    {_gib(pd['optimizer'])}",
           f"              reference    {_gib(pd['reference'])}",
           f"              proxy PM     {_gib(pd['proxy_pm'])}",
           f"              train temps  {_gib(fig['train_step_compiler']['temporaries'])}"
           "  (activations, compiler's figure)"]
  if "kv_cache" in pd:
    lines += [f"              KV cache     {_gib(pd['kv_cache'])}",
              f"              sampler temps {_gib(fig['sampler_compiler']['temporaries'])}"]
  total = max(fig["per_device_total_train"], fig.get("per_device_total_sampling", 0))
  lines.append(f"  peak per device (train or sample) {_gib(total)}")
  if hbm_gib:
    verdict = "fits" if total <= hbm_gib * 2**30 else "DOES NOT FIT"
    lines.append(f"  against {hbm_gib:g} GiB per device: {verdict}")
  return "\n".join(lines)


def main(argv=None) -> int:
  args, overrides = _parse(sys.argv[1:] if argv is None else argv)
  if args.devices and "jax" not in sys.modules:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax  # pylint: disable=g-import-not-at-top
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  try:
    config = config_lib.load(args.config)
    config_lib.apply_overrides(config, [o[len("--config."):] for o in overrides
                                        if o.startswith("--config.")], where="--config")
    if args.devices and jax.device_count() != args.devices:
      raise config_lib.ConfigError(f"--devices={args.devices}: JAX already started with "
                                   f"{jax.device_count()} devices")
    fig = analyse(config, _mesh_arg(args.mesh), args.pm, not args.skip_sampler)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(render(fig, args.hbm_gib))
  if args.json:
    import json  # pylint: disable=g-import-not-at-top
    with open(args.json, "w") as f:
      json.dump(fig, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Named model sizes, and parameter counts computed without allocating anything.

`python -m alignment.zoo` (or `python -m alignment.models.zoo`) prints every
named model with its parameter count from `jax.eval_shape` of the real
initialiser, next to the published count where one exists.

Sizes:
- T5.1.1 (`t5-small` ... `t5-xxl`) as released by Google (vocabulary 32128,
  gated-GELU, untied embeddings); `t5-nano`/`t5-tiny`/`t5-mini`/`t5-midi`/`t5-maxi`
  are ours, for tests and the embedded study on CPU.
- Llama-style: `llama-1b` and `llama-3b` follow Llama 3.2 (tied embeddings,
  llama3 RoPE scaling by 32: what their config.json converts to),
  `llama-8b` follows Llama 3 8B; `llama-nano`/`llama-tiny`/`llama-mini`/`llama-midi`/
  `llama-maxi` are ours.

Ours (vocabulary 512) are a log-spaced ladder for scaling sweeps on a workstation,
about x5 in parameters per rung (57.7K, 263K, 1.31M, 6.56M, 32.0M in T5): each rung
doubles d_model and adds a layer to each T5 stack (two to the Llama stack), with
d_ff = 2 d_model in T5 and 3 d_model (SwiGLU) in Llama, so that each Llama rung has
within 11% of its T5 namesake's parameters (tests/study/test_cost.py checks both).

Any field can be overridden: `get("t5-tiny", vocab_size=512, dtype="bfloat16")`.

A params export (`checkpoint.export_params`: params + model_config.json) is
loaded here, not in `checkpoint`, because loading it builds its model:
`load_model_config` reads the recorded config, `load_export` builds the model
and restores the parameters into `sharded_abstract_params`, its sharded target.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from alignment import checkpoint, sharding
from alignment.models import heads, validate
from alignment.models.decoder import DecoderConfig
from alignment.models.t5 import T5Config

T5_SIZES = {
    "t5-nano": T5Config(vocab_size=512, d_model=32, num_heads=2, head_dim=16, d_ff=64,
                        num_encoder_layers=1, num_decoder_layers=1),
    "t5-tiny": T5Config(vocab_size=512, d_model=64, num_heads=4, head_dim=16, d_ff=128,
                        num_encoder_layers=2, num_decoder_layers=2),
    "t5-mini": T5Config(vocab_size=512, d_model=128, num_heads=4, head_dim=32, d_ff=256,
                        num_encoder_layers=3, num_decoder_layers=3),
    # Between t5-mini and t5-small (which carries T5's 32k vocabulary): the judge axis's
    # PM two sizes above the study's t5-tiny policy, trainable on CPU in minutes.
    "t5-midi": T5Config(vocab_size=512, d_model=256, num_heads=4, head_dim=64, d_ff=512,
                        num_encoder_layers=4, num_decoder_layers=4),
    # The ladder's top rung, x4.9 above t5-midi: the largest policy or PM a 2-hour CPU
    # scaling sweep can afford (--plan: 2.1 s per SFT step at the study's shapes on 2 quiet
    # cores); t5-small's width, but 5+5 layers and vocabulary 512.
    "t5-maxi": T5Config(vocab_size=512, d_model=512, num_heads=8, head_dim=64, d_ff=1024,
                        num_encoder_layers=5, num_decoder_layers=5),
    "t5-small": T5Config(d_model=512, num_heads=6, head_dim=64, d_ff=1024,
                         num_encoder_layers=8, num_decoder_layers=8),
    "t5-base": T5Config(d_model=768, num_heads=12, head_dim=64, d_ff=2048,
                        num_encoder_layers=12, num_decoder_layers=12),
    "t5-large": T5Config(d_model=1024, num_heads=16, head_dim=64, d_ff=2816,
                         num_encoder_layers=24, num_decoder_layers=24),
    "t5-xl": T5Config(d_model=2048, num_heads=32, head_dim=64, d_ff=5120,
                      num_encoder_layers=24, num_decoder_layers=24),
    "t5-xxl": T5Config(d_model=4096, num_heads=64, head_dim=64, d_ff=10240,
                       num_encoder_layers=24, num_decoder_layers=24),
}

DECODER_SIZES = {
    "llama-nano": DecoderConfig(vocab_size=512, d_model=32, num_heads=2, num_kv_heads=1,
                                head_dim=16, d_ff=64, num_layers=2, rope_theta=10000.0),
    "llama-tiny": DecoderConfig(vocab_size=512, d_model=64, num_heads=4, num_kv_heads=2,
                                head_dim=16, d_ff=192, num_layers=4, rope_theta=10000.0),
    "llama-mini": DecoderConfig(vocab_size=512, d_model=128, num_heads=4, num_kv_heads=2,
                                head_dim=32, d_ff=384, num_layers=6, rope_theta=10000.0),
    # t5-midi's decoder-only mirror (6.56M): the Llama family's rung of a scaling sweep.
    "llama-midi": DecoderConfig(vocab_size=512, d_model=256, num_heads=4, num_kv_heads=2,
                                head_dim=64, d_ff=768, num_layers=8, rope_theta=10000.0),
    # t5-maxi's decoder-only mirror (32.0M): the Llama family's top rung on CPU.
    "llama-maxi": DecoderConfig(vocab_size=512, d_model=512, num_heads=8, num_kv_heads=4,
                                head_dim=64, d_ff=1536, num_layers=10, rope_theta=10000.0),
    "llama-1b": DecoderConfig(vocab_size=128256, d_model=2048, num_heads=32, num_kv_heads=8,
                              head_dim=64, d_ff=8192, num_layers=16, tie_embeddings=True,
                              rope_type="llama3", rope_factor=32.0),
    "llama-3b": DecoderConfig(vocab_size=128256, d_model=3072, num_heads=24, num_kv_heads=8,
                              head_dim=128, d_ff=8192, num_layers=28, tie_embeddings=True,
                              rope_type="llama3", rope_factor=32.0),
    "llama-8b": DecoderConfig(vocab_size=128256, d_model=4096, num_heads=32, num_kv_heads=8,
                              head_dim=128, d_ff=14336, num_layers=32),
}

SIZES = {**T5_SIZES, **DECODER_SIZES}

# Published parameter counts (T5.1.1 model cards and the T5X checkpoint list; Meta's).
PUBLISHED = {
    "t5-small": 77e6, "t5-base": 248e6, "t5-large": 783e6, "t5-xl": 2.85e9,
    "t5-xxl": 11.1e9, "llama-1b": 1.24e9, "llama-3b": 3.21e9, "llama-8b": 8.03e9,
}


def names() -> list[str]:
  return list(SIZES)


def get(name: str, **overrides):
  """The config of a named model, with fields overridden."""
  try:
    cfg = SIZES[name]
  except KeyError:
    raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(SIZES)}") from None
  fields = {f.name for f in dataclasses.fields(cfg) if f.init}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"model {name!r} has no field(s) {unknown}; fields: {sorted(fields)}")
  return dataclasses.replace(cfg, **overrides)


def abstract_params(cfg, head: str = "lm", prompt_len: int = 8, response_len: int = 8):
  """ShapeDtypeStructs of a model's parameters (jax.eval_shape, nothing allocated)."""
  model = heads.make_model(cfg, head)
  p = jnp.zeros((1, prompt_len), jnp.int32)
  r = jnp.zeros((1, response_len), jnp.int32)
  args = (p, p, r, r, r, r) if head == "pairwise" else (p, p, r, r)
  variables = jax.eval_shape(lambda k: model.init(k, *args), jax.random.key(0))
  return variables["params"]


@functools.lru_cache(maxsize=None)
def count_params(cfg, head: str = "lm") -> int:
  """The parameters `heads.make_model(cfg, head)` initialises (shapes only), once per
  config and head in a process: `python -m alignment.zoo`, --plan's H5 rows and the
  families benchmark each ask for the same sizes."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  tree = nn.unbox(abstract_params(cfg, head))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def sharded_abstract_params(model, data_section, mesh, rules):
  """The parameters' ShapeDtypeStructs with shardings: a restore target for
  `checkpoint.load_params`, laid out as the train step lays them out. Traced once
  per model, lengths, mesh and rules in a process (a study loads the same exports
  in every stage); each call gets its own containers."""
  key = (model, data_section.prompt_len, data_section.response_len, mesh, rules)
  try:
    hash(key)
  except TypeError:  # unhashable rules (lists): traced every time
    return _sharded_abstract_params(*key)
  return jax.tree.map(lambda x: x, _shared_abstract_params(*key))


@functools.lru_cache(maxsize=32)
def _shared_abstract_params(model, prompt_len: int, response_len: int, mesh, rules):
  return _sharded_abstract_params(model, prompt_len, response_len, mesh, rules)


def _sharded_abstract_params(model, prompt_len: int, response_len: int, mesh, rules):
  init = heads.init_fn(model, prompt_len, response_len)
  with sharding.use(mesh, rules):
    key = jax.ShapeDtypeStruct((2,), np.uint32)  # abstract: also for TPU topologies (aot)
    boxed = jax.eval_shape(init, key)
  shardings = sharding.logical_shardings(boxed, mesh, rules)
  return sharding.abstract_with_shardings(sharding.strip_boxes(boxed), shardings)


def load_model_config(path: str):
  """The zoo config written beside an export's parameters (model_config.json), its
  sizes, flags and dtypes checked before any model is built from it
  (`validate.check_model_config`); CheckpointError, one line, otherwise."""
  try:
    with epath.Path(path).open() as f:
      d = json.load(f)
    arch = d.pop("architecture")
    cls = {"t5": T5Config, "decoder": DecoderConfig}[arch]
    cfg = cls(**d)
  except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError,
          RecursionError) as e:
    raise checkpoint.CheckpointError(f"{path}: not a model config: {e}") from None
  try:
    return validate.check_model_config(cfg, path)
  except validate.ModelFileError as e:
    raise checkpoint.CheckpointError(str(e)) from None


def load_export(path: str, head: str, data_section, mesh, rules):
  """(model, params) of a params export (model_config.json + params), sharded: the
  model built from the config the export recorded, with `head` on it."""
  config_path = os.path.join(path, checkpoint.MODEL_CONFIG_FILE)
  if not epath.Path(config_path).exists():
    raise checkpoint.CheckpointError(f"{path}: not a params export (no model_config.json)")
  model = heads.make_model(load_model_config(config_path), head)
  return model, checkpoint.load_params(
      path, sharded_abstract_params(model, data_section, mesh, rules))


def _human(n: float) -> str:
  return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def table() -> str:
  rows = ["| model | arch | layers | d_model | heads (kv) | d_ff | vocab | params | published | diff |",
          "|---|---|---|---|---|---|---|---|---|---|"]
  for name, cfg in SIZES.items():
    n = count_params(cfg)
    pub = PUBLISHED.get(name)
    diff = f"{(n - pub) / pub * 100:+.2f}%" if pub else ""
    layers = (f"{cfg.num_encoder_layers}+{cfg.num_decoder_layers}"
              if cfg.architecture == "t5" else str(cfg.num_layers))
    rows.append(f"| {name} | {cfg.architecture} | {layers} | {cfg.d_model} | "
                f"{cfg.num_heads} ({cfg.num_kv_heads}) | {cfg.d_ff} | {cfg.vocab_size} | "
                f"{_human(n)} | {_human(pub) if pub else ''} | {diff} |")
  return "\n".join(rows)


def main(argv=None) -> int:
  del argv
  print(table())
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))


def from_section(model_section, vocab_size: int):
  """The zoo config named by a `model` section, vocabulary taken from the data if 0."""
  overrides = dict(dtype=model_section.dtype, param_dtype=model_section.param_dtype,
                   remat=model_section.remat)
  vocab = model_section.vocab_size or vocab_size
  if vocab:
    overrides["vocab_size"] = vocab
  return get(model_section.name, **overrides)

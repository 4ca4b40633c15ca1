"""Experiment configs: shared sections, loading, overrides and validation.

Every file in `configs/` has `get_config(arg)` returning a LOCKED
`ml_collections.ConfigDict` built from the sections below, so a misspelt key
(`--config.optimzer.learning_rate=...`) is an error, not a silent no-op.
`validate(config, num_devices)` checks everything that can be checked before
anything compiles (mesh against devices, batch against the data-parallel
size, lengths, dtypes, names) and raises one `ConfigError` naming the key.

A gin file maps onto these configs (`alignment.gin_config.from_gin`).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Iterable

import ml_collections

from alignment import sharding

ConfigDict = ml_collections.ConfigDict

EXPERIMENTS = ("sft", "pm", "offline", "online", "eval")
DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
  """A user error in a config: one message naming the key and what is wrong."""

  def __init__(self, message: str):
    # The value quoted in it may be an override's whole text: keep the key (first) and the
    # advice (last), cut the middle.
    if len(message) > 400:
      message = f"{message[:280]} ... ({len(message)} characters) ... {message[-80:]}"
    super().__init__(message)


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


def model_section(name: str = "t5-tiny", **kw) -> ConfigDict:
  """A zoo model. vocab_size 0 means: take the data vocabulary's size."""
  return ConfigDict(dict(dict(name=name, vocab_size=0, dtype="float32",
                              param_dtype="float32", remat=False), **kw))


def mesh_section(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ConfigDict:
  return ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor,
                         rules=[list(r) for r in sharding.DEFAULT_RULES]))


def data_section(**kw) -> ConfigDict:
  base = dict(
      task="",                # seqio task or mixture (its vocabulary is the model's)
      batch_size=32,
      prompt_len=40,          # the embedded environment's posts fit in 40 tokens
      response_len=32,
      shuffle_seed=0,
      max_records=0,          # use only the first N training records (0 = all)
      virtual_shards=8,       # fixed split of the records: batches do not depend on the
                              # process count, which must divide it (data/pipeline.py);
                              # 0: one shard per process (batches depend on the count)
  )
  base.update(kw)
  return ConfigDict(base)


def optimizer_section(**kw) -> ConfigDict:
  base = dict(learning_rate=1e-5, schedule="constant", warmup_steps=0, decay_steps=0,
              weight_decay=0.0, grad_clip=1.0, b1=0.9, b2=0.999, eps=1e-8)
  base.update(kw)
  return ConfigDict(base)


def train_section(**kw) -> ConfigDict:
  base = dict(num_steps=100, log_every=10, checkpoint_every=50, keep_checkpoints=3,
              async_checkpoint=True, on_nonfinite="stop")
  base.update(kw)
  return ConfigDict(base)


def loss_section(name: str = "ipo", beta: float = 0.1, reduction: str = "sum") -> ConfigDict:
  return ConfigDict(dict(name=name, beta=beta, reduction=reduction))


def sampling_section(**kw) -> ConfigDict:
  """The online sampler; a sample has data.response_len tokens (EOS may end it sooner)."""
  base = dict(temperature=1.0, top_k=0, top_p=1.0, cache_dtype="float32",
              # gather the weights over data x fsdp once per sampling call instead of for
              # every token (sampling.Sampler's `gather`): faster decoding on an FSDP mesh,
              # for the model's weights in its compute dtype per device while sampling
              gather_params=False)
  base.update(kw)
  return ConfigDict(base)


RL_METHODS = ("contrastive", "rloo", "grpo")
KL_MODES = ("reward", "k3", "exact")


def rl_section(**kw) -> ConfigDict:
  """What the online loop optimises (alignment.train.online).

  method: "contrastive" (2 samples per prompt, judged, the `loss` section's
    pairwise loss: online IPO/DPO/SLiC/Best-of-2), "rloo" (REINFORCE with a
    leave-one-out baseline, sequence level) or "grpo" (group-normalised
    advantages, clipped ratio, `updates` minibatch updates per batch).
  samples: k responses per prompt (contrastive: 2; rloo/grpo: >= 2).
  kl: the KL to the reference, with weight kl_coef: "reward" (k1 penalty on the
    reward: r - kl_coef log pi/pi_ref), "k3" (k3 estimator as a loss) or "exact"
    (the exact per-token KL as a loss; needs the reference on the policy's mesh).
  staleness: sample with the policy's parameters this many steps old (0: on
    policy; k >= 1 is what an asynchronous generator k steps behind the trainer
    sees); is_cap > 0 corrects RLOO/GRPO for it with importance weights
    min(pi / pi_behaviour, is_cap) per response (0: no correction). overlap: with
    staleness >= 1, sample (and judge) the next batch before this step's update
    (`rollouts.Rollouts`); the results are the same bit for bit, only the timing
    changes.
  Rewards come from the judge: a reward model's r(x, y) (judge.kind="reward"),
  a pairwise PM's mean P(beating each sibling) (judge.kind="proxy"), or the
  golden judge's score (judge.kind="golden").
  siblings: with a pairwise judge, how many siblings each sample is compared
    with: 0 (or samples - 1) all of them, k(k - 1)/2 pairs a prompt; m in
    [1, samples - 2], samples x m even, m fixed ones in a balanced design,
    k m / 2 pairs (`algorithms.sibling_pairs`). The expected RLOO gradient is the
    same; its variance grows as m shrinks (README, "Policy-gradient RL").
  """
  base = dict(method="contrastive", samples=2, kl="reward", kl_coef=0.05, clip_eps=0.2,
              updates=1, grpo_eps=1e-4, staleness=0, is_cap=0.0, overlap=True, siblings=0)
  base.update(kw)
  return ConfigDict(base)


def eval_section(**kw) -> ConfigDict:
  """Evaluation (alignment.evaluation): sizes, sampling, tasks, and what to compare."""
  base = dict(
      every=0,                 # evaluate inside a loop every N steps (0: at the end only)
      steps=[],                # or exactly at these steps (e.g. log-spaced; overrides every)
      save_params=False,       # export the parameters at each evaluation (eval/step_N/)
      pairs_dir="",            # classifier pairs from this pair-set directory (else pairs_task)
      kl_prompts=256,          # train prompts for the exact KL (paper: 256)
      win_prompts=2048,        # eval prompts for win rates (paper: 2048)
      proxy_prompts=0,         # the first N of them for the proxy's metrics (0: all)
      classifier_pairs=256,    # held-out D_golden pairs (paper: 256)
      batch_size=64,
      temperature=1.0,
      seed=0,
      prompts_task="env_prompts",
      pairs_task="env_pairs_golden",
      policy="",               # experiment eval: an export or a run's checkpoint directory
      sft="",                  # pi_sft export (KL and classifier baseline)
      reference="",            # win-rate reference policy export ("" = SFT)
      proxy="",                # proxy PM export ("" = no proxy win rate)
      golden_checkpoint="",    # a golden PM's export as the golden judge ("" = the
                               # environment's program; real data: configs/study.py:real)
      samples=3,               # the first N win prompts whose samples each evaluation
                               # keeps with their texts and golden scores
                               # (eval/step_N_samples.json; a study's report shows them)
  )
  base.update(kw)
  return ConfigDict(base)


ROLES = ("policy", "reference", "proxy_pm", "golden")


def roles_section() -> ConfigDict:
  """Where each role runs (alignment.sharding, "Role meshes").

  devices "" shares the whole mesh (`mesh`); "a:b" gives the role local
  devices a..b-1 of every process, as a mesh of shape (data, fsdp, tensor)
  (one entry may be -1). E.g. policy on 0:4 and reference, proxy PM on 4:8.
  The golden judge of the environment is a program run on the hosts: its
  entry must stay "" (it is for a model golden judge).
  """
  return ConfigDict({r: ConfigDict(dict(devices="", data=-1, fsdp=1, tensor=1))
                     for r in ROLES})


def base_config(experiment: str, **sections) -> ConfigDict:
  """The shared skeleton; experiments add or replace sections, then lock."""
  c = ConfigDict()
  c.experiment = experiment
  c.seed = 0
  c.model = model_section()
  c.mesh = mesh_section()
  c.data = data_section()
  c.optimizer = optimizer_section()
  c.train = train_section()
  c.roles = roles_section()
  for k, v in sections.items():
    c[k] = v
  return c


def lock(c: ConfigDict) -> ConfigDict:
  c.lock()
  return c


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load(spec: str) -> ConfigDict:
  """'configs/x.py:arg' -> get_config('arg') of that file (locked)."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise ConfigError(f"{path}: no such config file")
  module_spec = importlib.util.spec_from_file_location(
      "_config_" + os.path.basename(path).removesuffix(".py"), path)
  if module_spec is None:  # a directory, or a file not named .py
    raise ConfigError(f"{path}: not a Python config file (configs/<exp>.py)")
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"{path}: cannot import: {e}") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path}: has no get_config(arg)")
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"{spec}: get_config failed: {e}") from None
  config.lock()
  return config


def _parse_value(text: str) -> Any:
  import ast  # pylint: disable=g-import-not-at-top
  if text in ("true", "false"):
    return text == "true"
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, MemoryError, RecursionError):  # the last two: the parser's
    return text                                                   # stack, e.g. "-" * 10**5


def apply_overrides(config: ConfigDict, overrides: Iterable[str], where: str = "override"):
  """Applies 'a.b=value' strings (Python literals) to a locked config."""
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise ConfigError(f"{where} {item!r}: expected key=value")
    set_key(config, key.strip().removeprefix("config."), _parse_value(text.strip()), where)
  return config


def set_key(config: ConfigDict, dotted: str, value: Any, where: str):
  node = config
  parts = dotted.split(".")
  for i, part in enumerate(parts[:-1]):
    if part not in node or not isinstance(node[part], ConfigDict):
      raise ConfigError(f"{where}: config has no section {'.'.join(parts[:i + 1])!r}")
    node = node[part]
  leaf = parts[-1]
  if leaf not in node:
    known = ", ".join(sorted(node.keys()))
    raise ConfigError(f"{where}: config has no key {dotted!r} (known here: {known})")
  old = node[leaf]
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    try:
      value = float(value)
    except OverflowError:  # an integer of over 308 digits
      raise ConfigError(f"{where}: {dotted}={value}: too large for a float") from None
  if isinstance(old, (list, tuple)) and isinstance(value, (list, tuple)):
    value = type(old)(value)
  if old is not None and type(old) is not type(value):  # None too: checks compare numbers
    raise ConfigError(f"{where}: {dotted} must be {type(old).__name__}, "
                      f"got {value!r} ({type(value).__name__})")
  try:
    node[leaf] = value
  except (TypeError, AttributeError, KeyError) as e:
    raise ConfigError(f"{where}: cannot set {dotted}: {e}") from None


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _check(cond: bool, message: str):
  if not cond:
    raise ConfigError(message)


# Each section checks itself (`check_<section>(section)`, keys named as
# config.<section>.<key>); `validate` runs the checks of the sections a config
# has, then the checks that join sections (mesh, roles and batch sizes).


def check_model(m: ConfigDict):
  from alignment.models import zoo  # pylint: disable=g-import-not-at-top  (models import config)
  _check(m.name in zoo.SIZES,
         f"config.model.name={m.name!r}: not in the zoo ({', '.join(zoo.SIZES)})")
  for key in ("dtype", "param_dtype"):
    _check(m[key] in DTYPES, f"config.model.{key}={m[key]!r}: choose one of {DTYPES}")
  _check(isinstance(m.vocab_size, int) and m.vocab_size >= 0,
         f"config.model.vocab_size={m.vocab_size!r}: 0 (the data's) or a positive integer")


def check_data(d: ConfigDict):
  for key in ("batch_size", "prompt_len", "response_len"):
    _check(isinstance(d[key], int) and d[key] > 0,
           f"config.data.{key}={d[key]!r}: must be a positive integer")
  _check(d.prompt_len <= 4096 and d.response_len <= 4096,
         f"config.data: prompt_len={d.prompt_len}, response_len={d.response_len} exceed 4096")
  vs = d.get("virtual_shards", 0)
  _check(isinstance(vs, int) and vs >= 0 and (vs == 0 or d.batch_size % vs == 0),
         f"config.data.virtual_shards={vs!r}: must be a positive divisor of "
         f"data.batch_size={d.batch_size} (or 0)")
  import jax  # pylint: disable=g-import-not-at-top
  _check(vs % jax.process_count() == 0,
         f"config.data.virtual_shards={vs} is not a multiple of the {jax.process_count()} "
         "processes; each process reads whole virtual shards (set it to a multiple)")


def check_train(t: ConfigDict):
  _check(t.num_steps >= 0, f"config.train.num_steps={t.num_steps}: must be >= 0")
  for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
    _check(t[key] > 0, f"config.train.{key}={t[key]}: must be positive")
  _check(t.on_nonfinite in ("stop", "skip"),
         f"config.train.on_nonfinite={t.on_nonfinite!r}: choose 'stop' or 'skip'")


def check_optimizer(o: ConfigDict):
  _check(o.learning_rate >= 0, f"config.optimizer.learning_rate={o.learning_rate}: must be >= 0")
  _check(o.schedule in ("constant", "cosine", "linear"),
         f"config.optimizer.schedule={o.schedule!r}: choose constant, cosine or linear")
  for key in ("warmup_steps", "decay_steps"):
    _check(o[key] >= 0, f"config.optimizer.{key}={o[key]}: must be >= 0")


def check_loss(l: ConfigDict):
  from alignment import losses  # pylint: disable=g-import-not-at-top
  _check(l.name in losses.names(), f"config.loss.name={l.name!r}: choose one of {losses.names()}")
  _check(l.beta > 0, f"config.loss.beta={l.beta}: must be positive")
  _check(l.reduction in ("sum", "mean"),
         f"config.loss.reduction={l.reduction!r}: choose 'sum' or 'mean'")


def check_sampling(s: ConfigDict):
  _check(s.temperature >= 0, f"config.sampling.temperature={s.temperature}: must be >= 0")
  _check(0 < s.top_p <= 1, f"config.sampling.top_p={s.top_p}: must be in (0, 1]")
  _check(s.top_k >= 0, f"config.sampling.top_k={s.top_k}: must be >= 0")
  _check(s.cache_dtype in DTYPES,
         f"config.sampling.cache_dtype={s.cache_dtype!r}: choose one of {DTYPES}")
  if "mixture" in s:
    _check(0 <= s.mixture <= 1, f"config.sampling.mixture={s.mixture}: must be in [0, 1]")
  if "gather_params" in s:
    _check(isinstance(s.gather_params, bool),
           f"config.sampling.gather_params={s.gather_params!r}: must be True or False")


def check_judge(j: ConfigDict):
  _check(j.kind in ("proxy", "reward", "golden"),
         f"config.judge.kind={j.kind!r}: choose proxy (a pairwise PM's export), reward (a "
         "reward model's export) or golden")
  _check(not j.get("golden_checkpoint", "") or j.kind == "golden",
         f"config.judge.golden_checkpoint is the golden judge's model; it needs "
         f"judge.kind='golden' (not {j.kind!r})")


def check_rl(r: ConfigDict):
  _check(r.method in RL_METHODS, f"config.rl.method={r.method!r}: choose one of {RL_METHODS}")
  if r.method == "contrastive":
    _check(r.samples == 2, f"config.rl.samples={r.samples}: the contrastive losses compare 2 "
           "samples per prompt")
  else:
    _check(isinstance(r.samples, int) and r.samples >= 2,
           f"config.rl.samples={r.samples!r}: {r.method} needs k >= 2 samples per prompt")
  _check(r.kl in KL_MODES, f"config.rl.kl={r.kl!r}: choose one of {KL_MODES}")
  _check(r.kl_coef >= 0, f"config.rl.kl_coef={r.kl_coef}: must be >= 0")
  _check(0 < r.clip_eps < 1, f"config.rl.clip_eps={r.clip_eps}: must be in (0, 1)")
  _check(isinstance(r.updates, int) and r.updates >= 1,
         f"config.rl.updates={r.updates!r}: must be a positive integer")
  _check(r.updates == 1 or r.method == "grpo",
         f"config.rl.updates={r.updates}: several updates per batch are GRPO's (rl.method)")
  _check(isinstance(r.staleness, int) and r.staleness >= 0,
         f"config.rl.staleness={r.staleness!r}: a number of steps >= 0")
  _check(isinstance(r.overlap, bool), f"config.rl.overlap={r.overlap!r}: true or false")
  _check(r.is_cap >= 0, f"config.rl.is_cap={r.is_cap}: must be >= 0 (0: no correction)")
  _check(r.is_cap == 0 or r.method != "contrastive",
         f"config.rl.is_cap={r.is_cap}: the importance correction is for rloo/grpo; the "
         "contrastive losses take stale pairs as they are")
  m = r.get("siblings", 0)
  _check(isinstance(m, int) and not isinstance(m, bool) and m >= 0,
         f"config.rl.siblings={m!r}: a number of siblings >= 0 (0: all)")
  _check(m == 0 or r.method != "contrastive",
         f"config.rl.siblings={m}: siblings are for rloo/grpo; the contrastive losses judge "
         "their one pair")
  _check(m <= r.samples - 1,
         f"config.rl.siblings={m}: each sample has rl.samples - 1 = {r.samples - 1} siblings "
         "(0: all)")
  _check((m * r.samples) % 2 == 0,
         f"config.rl.siblings={m}: with rl.samples={r.samples} every sample meets as many "
         "siblings only if samples x siblings is even")


def check_eval(e: ConfigDict):
  """The evaluation section: its cadence (every loop) and, where present, its sizes."""
  _check(e.get("every", 0) >= 0, f"config.eval.every={e.get('every')}: must be >= 0")
  steps = list(e.get("steps", None) or [])
  _check(all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in steps),
         f"config.eval.steps={steps}: must be positive integers")
  if "samples" in e:
    n = e.samples
    _check(isinstance(n, int) and not isinstance(n, bool) and n >= 0,
           f"config.eval.samples={n!r}: a count of win prompts whose samples each "
           "evaluation keeps (0: none)")
  if "win_prompts" in e:
    _check(isinstance(e.batch_size, int) and e.batch_size > 0,
           f"config.eval.batch_size={e.batch_size!r}: must be a positive integer")
    for key in ("kl_prompts", "win_prompts", "classifier_pairs"):
      _check(e[key] > 0 and e[key] % e.batch_size == 0,
             f"config.eval.{key}={e[key]}: must be a positive multiple of "
             f"eval.batch_size={e.batch_size}")
    _check(e.proxy_prompts == 0 or (0 < e.proxy_prompts <= e.win_prompts and
                                    e.proxy_prompts % e.batch_size == 0),
           f"config.eval.proxy_prompts={e.proxy_prompts}: 0 (all) or a multiple of "
           f"eval.batch_size={e.batch_size} up to eval.win_prompts={e.win_prompts}")


def check_criterion(c: ConfigDict):
  """SFT trained to a criterion (configs/sft.py): `patience` evaluations without an
  improvement of the held-out loss by more than `tol` (relative) stop the run."""
  p, tol = c.patience, c.tol
  _check(isinstance(p, int) and not isinstance(p, bool) and p >= 0,
         f"config.criterion.patience={p!r}: a number of evaluations >= 0 (0: off)")
  _check(isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 <= tol < 1,
         f"config.criterion.tol={tol!r}: a relative improvement in [0, 1)")


SECTION_CHECKS = {"model": check_model, "data": check_data, "train": check_train,
                  "optimizer": check_optimizer, "loss": check_loss, "sampling": check_sampling,
                  "judge": check_judge, "eval": check_eval, "rl": check_rl,
                  "criterion": check_criterion}


def validate(config: ConfigDict, num_devices: int) -> dict[str, int]:
  """Checks the config; returns the resolved mesh shape. Raises ConfigError."""
  _check(config.experiment in EXPERIMENTS,
         f"config.experiment={config.experiment!r}: choose one of {EXPERIMENTS}")
  try:
    rules = sharding.rules_from_config(config.mesh.rules)
    mesh_shape = sharding.resolve_mesh_shape(
        {a: config.mesh[a] for a in sharding.MESH_AXES}, num_devices)
  except sharding.MeshError as e:
    raise ConfigError(f"config.mesh: {e}") from None
  d = config.data
  dp = sharding.data_parallel_size(mesh_shape, rules)
  if isinstance(d.batch_size, int) and d.batch_size > 0:  # the error a user meets first
    _check(d.batch_size % dp == 0,
           f"config.data.batch_size={d.batch_size} is not divisible by the data-parallel size "
           f"{dp} (mesh {mesh_shape})")
  for name, check in SECTION_CHECKS.items():
    if name in config:
      check(config[name])
  if "head" in config:
    _check(config.head in ("pairwise", "reward"),
           f"config.head={config.head!r}: choose 'pairwise' (the PM) or 'reward' (a "
           "Bradley-Terry reward model)")
  if "rl" in config and config.rl.method != "contrastive":
    r = config.rl
    _check(d.batch_size % r.updates == 0 and
           (d.batch_size * r.samples // r.updates) % dp == 0,
           f"config.rl.updates={r.updates}: each update takes data.batch_size / updates "
           f"prompts x rl.samples rows, which must divide into whole prompts and by the "
           f"data-parallel size {dp}")
    _check(not config.train.get("write_stream", False),
           f"config.train.write_stream: the D_online stream holds judged pairs; "
           f"rl.method={r.method!r} writes none (set it False)")
    _check(config.sampling.get("mixture", 0) == 0,
           f"config.sampling.mixture={config.sampling.mixture}: mixture sampling is for the "
           "contrastive methods")
  role_dp = {}
  if "roles" in config:
    import jax  # pylint: disable=g-import-not-at-top
    local = max(1, num_devices // jax.process_count())
    _check(not config.roles.golden.devices,
           f"config.roles.golden.devices={config.roles.golden.devices!r}: the golden judge "
           "here is the environment's program, run on the hosts; leave it ''")
    for role in ROLES:
      spec = config.roles[role]
      if not spec.devices:
        continue
      try:
        part = sharding.parse_device_slice(spec.devices, local, f"config.roles.{role}.devices")
        shape = sharding.resolve_mesh_shape({a: spec[a] for a in sharding.MESH_AXES},
                                            (part.stop - part.start) * jax.process_count())
      except sharding.MeshError as e:
        raise ConfigError(f"config.roles.{role}: {e}") from None
      role_dp[role] = sharding.data_parallel_size(shape, rules)
  for role, ways in role_dp.items():
    _check(d.batch_size % ways == 0,
           f"config.data.batch_size={d.batch_size} is not divisible by the data-parallel size "
           f"{ways} of config.roles.{role}")
  if "eval" in config:
    e = config.eval
    if "win_prompts" in e:
      _check(e.batch_size % dp == 0,
             f"config.eval.batch_size={e.batch_size} is not divisible by the data-parallel "
             f"size {dp}")
    steps = list(e.get("steps", None) or [])
    _check(all(x <= config.train.num_steps for x in steps),
           f"config.eval.steps={steps}: must be integers in [1, train.num_steps="
           f"{config.train.num_steps}]")
  if "criterion" in config:  # SFT's alone (alignment.train.program.run_supervised says why)
    _check(config.experiment == "sft",
           f"config.criterion: only SFT trains to a criterion (its held-out loss); "
           f"experiment {config.experiment!r} has none (remove the section)")
    e = config.get("eval", None) or {}
    _check(config.criterion.patience == 0 or e.get("every", 0) > 0 or
           bool(list(e.get("steps", None) or [])),
           f"config.criterion.patience={config.criterion.patience}: the criterion watches the "
           "held-out loss of the evaluations: set eval.every > 0 or list eval.steps")
  return mesh_shape

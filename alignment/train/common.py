"""What every training loop shares, so that no loop is copied and tweaked.

- `setup_host`: logging, TensorFlow kept off accelerators, JAX safety switches.
- `mesh_and_rules`, `model_config`: the mesh and a zoo config from the config.
- `RunLog`: metrics to <workdir>/metrics.jsonl, TensorBoard (<workdir>/tb) and
  a console progress line; on resume it drops records past the restored step,
  so the file equals an uninterrupted run's.
- `Preemption`: SIGTERM sets a flag the loop polls; the loop then saves a
  checkpoint and exits cleanly.
- `check_finite`: names the step and the quantities that are NaN or Inf.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from typing import Any, Mapping, Optional

import jax
import numpy as np
from etils import epath

from alignment import faults, sharding
from alignment.models import zoo

log = logging.getLogger("alignment")


class NonFiniteError(RuntimeError):
  """A NaN/Inf appeared: names the step and the quantities."""


def setup_host():
  """Idempotent per-process set-up; call at the top of every loop."""
  jax.config.update("jax_threefry_partitionable", True)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:  # TensorFlow is an input pipeline here: it must never take an accelerator.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (ImportError, RuntimeError, ValueError):
    pass  # not installed, already initialised, or no such device type
  ours = logging.getLogger("alignment")  # our own messages, whatever absl configured
  if not ours.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
  for noisy in ("absl", "orbax", "jax._src", "tensorflow"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def mesh_and_rules(config, devices=None):
  rules = sharding.rules_from_config(config.mesh.rules)
  mesh = sharding.make_mesh({a: config.mesh[a] for a in sharding.MESH_AXES}, devices)
  return mesh, rules


def role_meshes(config, mesh):
  """{Role: mesh}: each role's own sub-mesh (config.roles) or the shared `mesh`."""
  from alignment import judges  # pylint: disable=g-import-not-at-top
  roles = config.get("roles", None)
  if roles is None:
    return {role: mesh for role in judges.Role}
  try:
    return {role: sharding.role_mesh(roles[role.value], mesh, where=f"config.roles.{role.value}")
            for role in judges.Role}
  except sharding.MeshError as e:
    raise config_error(str(e)) from None


class Reference:
  """The frozen reference policy, on the policy's mesh or on its own (config.roles).

  Shared mesh (the default): its parameters go into the train step, which
  scores the pairs with them in the same program. Own mesh: the pairs are
  resharded onto it, scored there, and only the log-probs ([B] each) are
  resharded back into the step. `on_policy_mesh()` is a reshard of the
  weights themselves (jax.device_put), for what needs them beside the policy
  (evaluation's KL, mixture sampling).
  """

  def __init__(self, config, model, policy_mesh, mesh, rules, policy_param_shardings):
    from alignment.train import steps  # pylint: disable=g-import-not-at-top
    self.policy_mesh, self.mesh, self.rules = policy_mesh, mesh, rules
    self.shared = sharding.same_mesh(policy_mesh, mesh)
    self.policy_param_shardings = policy_param_shardings
    self.params = load_reference(config, model, mesh, rules)
    self._copy = self.params if self.shared else None
    reduction = config.loss.reduction if "loss" in config else "sum"
    rows = sharding.batch_sharding(mesh, rules, 1)
    self._logps = jax.jit(lambda p, pairs: steps.pair_logps(model, p, pairs, reduction),
                          out_shardings=(rows, rows))

  def step_shardings(self, param_shardings) -> dict:
    if self.shared:
      return {"ref_params": param_shardings}
    rows = sharding.batch_sharding(self.policy_mesh, self.rules, 1)
    return {"ref_logps": (rows, rows)}

  def step_inputs(self, pairs) -> dict:
    """What the train step needs of the reference for these pairs."""
    if self.shared:
      return {"ref_params": self.params}
    with sharding.use(self.mesh, self.rules):
      logps = self._logps(self.params, sharding.move_rows(pairs, self.mesh, self.rules))
    return {"ref_logps": sharding.move_rows(logps, self.policy_mesh, self.rules)}

  def on_policy_mesh(self):
    if self._copy is None:
      self._copy = jax.device_put(self.params, self.policy_param_shardings)
    return self._copy


def model_config(model_section, vocab_size: int):
  """The zoo config named by a `model` section, vocabulary taken from the data if 0."""
  overrides = dict(dtype=model_section.dtype, param_dtype=model_section.param_dtype,
                   remat=model_section.remat)
  vocab = model_section.vocab_size or vocab_size
  if vocab:
    overrides["vocab_size"] = vocab
  return zoo.get(model_section.name, **overrides)


def restore_or_create(ckpt, model_init, optimizer, mesh, rules, seed: int, meta: dict,
                      data_iter=None, init_params_from: str = "",
                      init_keys: Optional[tuple[str, ...]] = None):
  """The train state to start from: the newest checkpoint, else fresh.

  Resume order: (1) the newest complete checkpoint in `ckpt` (state, data
  iterator, RNG), after checking that its metadata matches `meta` (model name
  and vocabulary); (2) a fresh state whose parameters come from
  `init_params_from` (a params export or run directory), if given - only the
  top-level subtrees `init_keys` when given (a preference model takes the SFT
  policy's "backbone"); (3) a fresh random state.
  Returns (state, shardings, start_step).
  """
  from alignment import checkpoint  # pylint: disable=g-import-not-at-top
  from alignment.train import state as state_lib  # pylint: disable=g-import-not-at-top
  target, shardings = state_lib.abstract(model_init, optimizer, mesh, rules, seed)
  if ckpt.latest_step() is not None:
    try:
      saved_meta = ckpt.read_meta()
    except Exception:  # pylint: disable=broad-except  (unreadable: restore() falls back)
      saved_meta = {}
    for key, want in meta.items():
      if key in saved_meta and saved_meta[key] != want:
        raise checkpoint.CheckpointError(
            f"{ckpt.directory}: checkpoint was written with {key}={saved_meta[key]!r} but "
            f"the config asks for {want!r}; use a new --workdir or the matching config")
    state, data_state, _ = ckpt.restore(target)
    if data_iter is not None:
      data_iter.set_state(data_state)
    log.info("resumed from %s at step %d", ckpt.directory, int(state.step))
    return state, shardings, int(state.step)
  state, shardings = state_lib.create(model_init, optimizer, mesh, rules, seed)
  if init_params_from:
    keys = init_keys or tuple(target.params)
    loaded = checkpoint.load_params(init_params_from, {k: target.params[k] for k in keys})
    state = state.replace(params={**state.params, **loaded})
    log.info("parameters %s initialised from %s", list(keys), init_params_from)
  return state, shardings, 0


def to_host(metrics: Mapping[str, Any]) -> dict[str, float]:
  return {k: float(np.asarray(v)) for k, v in jax.device_get(dict(metrics)).items()}


def check_finite(step: int, metrics: Mapping[str, float], watch=None) -> None:
  """Raises NonFiniteError naming the step and the non-finite quantities."""
  names = [k for k, v in metrics.items()
           if (watch is None or k in watch) and not math.isfinite(v)]
  if names:
    raise NonFiniteError(f"step {step}: non-finite {', '.join(sorted(names))} "
                         f"({', '.join(f'{k}={metrics[k]}' for k in sorted(names))}); "
                         "the last good checkpoint is intact")


class Preemption:
  """SIGTERM (a TPU VM preemption notice) -> `requested` becomes True."""

  def __init__(self):
    self.requested = False
    self._previous = None
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. inside some test runners)
      self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    log.warning("SIGTERM received: saving a checkpoint and stopping")
    self.requested = True

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class RunLog:
  """Metrics sink: JSONL + TensorBoard + console progress (process 0 only)."""

  def __init__(self, workdir: str, total_steps: int, resume_step: int = 0,
               every: int = 10, name: str = ""):
    self.workdir = workdir
    self.total = total_steps
    self.every = max(1, every)
    self.name = name
    self.main = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")  # a local path or gs://...
    self._t0 = time.time()
    self._s0 = resume_step
    self._writer = None
    if self.main:
      epath.Path(workdir).mkdir(parents=True, exist_ok=True)
      self._truncate(resume_step)
      from clu import metric_writers  # pylint: disable=g-import-not-at-top
      self._writer = metric_writers.create_default_writer(
          os.path.join(workdir, "tb"), just_logging=False, asynchronous=False)

  def _truncate(self, step: int):
    """Keeps only records up to `step` (those of the checkpoint we resume from)."""
    path = epath.Path(self.path)
    if not path.exists():
      return
    with path.open() as f:
      keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = epath.Path(self.path + ".tmp")
    with tmp.open("w") as f:
      f.writelines(keep)
    tmp.replace(self.path)

  def write(self, step: int, metrics: Mapping[str, float], console: Optional[bool] = None):
    if not self.main:
      return
    record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self._append(json.dumps(record, sort_keys=True) + "\n")
    self._writer.write_scalars(int(step), {k: v for k, v in record.items() if k != "step"})
    if console if console is not None else (step % self.every == 0 or step == self.total):
      self._console(step, metrics)

  def _append(self, line: str):
    if "://" not in self.path:
      with open(self.path, "a") as f:
        f.write(line)
      return
    path = epath.Path(self.path)  # object stores cannot append: rewrite (small file)
    path.write_text((path.read_text() if path.exists() else "") + line)

  def _console(self, step, metrics):
    done = step - self._s0
    elapsed = time.time() - self._t0
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())[:10])
    pct = 100.0 * step / max(self.total, 1)
    print(f"[{self.name}] step {step}/{self.total} ({pct:.0f}%) {rate:.2f} steps/s "
          f"eta {eta:.0f}s | {shown}", file=sys.stderr, flush=True)

  def close(self):
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()


class Run:
  """The bookkeeping around a loop's step: timing, logging, NaN/Inf, checkpoints, SIGTERM.

      run = Run(config, workdir, ckpt, start_step, name="sft", meta=meta)
      for step in range(start_step, config.train.num_steps):
        state, metrics = train_step(state, next(data))
        if run.end_of_step(step + 1, state, metrics, data.get_state()):
          break
      run.close(state, data.get_state())

  `end_of_step` returns True when the loop must stop (preemption). A watched
  non-finite metric raises NonFiniteError (config.train.on_nonfinite="stop")
  before anything is saved, or is counted as a skipped batch ("skip"; the
  step has already left the state unchanged).
  """

  def __init__(self, config, workdir: str, ckpt, start_step: int, name: str, meta: dict,
               watch=("loss", "grad_norm")):
    self.config = config
    self.ckpt = ckpt
    self.meta = meta
    self.total = int(config.train.num_steps)
    self.watch = tuple(watch)
    self.log = RunLog(workdir, self.total, start_step, config.train.log_every, name)
    self.preemption = Preemption()
    self.skipped = 0
    self._last = time.perf_counter()
    self.last_metrics: dict[str, float] = {}
    self.stopped_early = False

  def end_of_step(self, step: int, state, metrics, data_state: dict,
                  extra: Optional[Mapping[str, float]] = None) -> bool:
    faults.hit("after_step", step)
    m = to_host(metrics)
    if extra:
      m.update(extra)
    nonfinite = m.pop("nonfinite", 0.0) > 0
    if nonfinite or any(not math.isfinite(m[k]) for k in self.watch if k in m):
      if self.config.train.on_nonfinite == "stop":
        self.ckpt.wait()
        check_finite(step, m, self.watch)
        check_finite(step, m)
        raise NonFiniteError(f"step {step}: non-finite values; the last good checkpoint "
                             "is intact")
      self.skipped += 1
      log.warning("step %d: non-finite %s; batch skipped (%d so far)", step,
                  [k for k, v in m.items() if not math.isfinite(v)], self.skipped)
    now = time.perf_counter()
    m["step_time"] = now - self._last
    self._last = now
    if "tokens" in m:
      m["tokens_per_s"] = m.pop("tokens") / max(m["step_time"], 1e-9)
    m["skipped_batches"] = float(self.skipped)
    self.last_metrics = m
    self.log.write(step, m)
    every = self.config.train.checkpoint_every
    stop = self.preemption.requested
    if step % every == 0 or step == self.total or stop:
      self.ckpt.save(step, state, data_state, self.meta)
    if stop:
      self.stopped_early = True
      log.warning("stopping at step %d after SIGTERM; checkpoint saved", step)
    return stop

  def write(self, step: int, metrics: Mapping[str, float]):
    """Extra records (evaluations) into the same log."""
    self.log.write(step, dict(metrics), console=True)

  def close(self):
    self.ckpt.close()
    self.log.close()
    self.preemption.close()
    self._last = time.perf_counter()


def read_metrics(workdir: str) -> list[dict]:
  path = epath.Path(workdir, "metrics.jsonl")
  if not path.exists():
    return []
  with path.open() as f:
    return [json.loads(line) for line in f if line.strip()]


def task_vocabulary(task: str):
  """The seqio vocabulary of a task's prompts (what the golden judge decodes with)."""
  import seqio  # pylint: disable=g-import-not-at-top
  from alignment.data import tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  try:
    source = seqio.get_mixture_or_task(task)
  except ValueError:
    raise config_lib.ConfigError(f"config.data.task={task!r}: no such seqio task or mixture "
                                 "(registered: env_*, env_byte_*, imported tasks)") from None
  return source.output_features["prompt"].vocabulary


def model_vocab_size(vocab, multiple: int = 128) -> int:
  """The vocabulary rounded up, so the embedding splits evenly over `tensor`."""
  return -(-vocab.vocab_size // multiple) * multiple


def first_rows(batch, n: int = 1):
  """The first n rows of every leaf: an example for model.init."""
  return jax.tree.map(lambda x: np.asarray(x)[:n], batch)


def abstract_params(model, data_section, mesh, rules):
  """The parameters' ShapeDtypeStructs with shardings (a restore target)."""
  from alignment.models import heads  # pylint: disable=g-import-not-at-top
  p = np.zeros((1, data_section.prompt_len), np.int32)
  r = np.zeros((1, data_section.response_len), np.int32)
  args = (p, p, r, r, r, r) if isinstance(model, heads.PairwisePreferenceModel) else (p, p, r, r)
  with sharding.use(mesh, rules):
    key = jax.ShapeDtypeStruct((2,), np.uint32)  # abstract: also for TPU topologies (aot)
    boxed = jax.eval_shape(lambda k: model.init(k, *args)["params"], key)
  shardings = sharding.logical_shardings(boxed, mesh, rules)
  return sharding.abstract_with_shardings(sharding.strip_boxes(boxed), shardings)


def load_export(path: str, head: str, data_section, mesh, rules):
  """(model, params) of a params export (model_config.json + params), sharded."""
  from alignment import checkpoint  # pylint: disable=g-import-not-at-top
  from alignment.models import convert, heads  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(path, "model_config.json")
  if not epath.Path(config_path).exists():
    raise checkpoint.CheckpointError(f"{path}: not a params export (no model_config.json)")
  model = heads.make_model(convert.load_model_config(config_path), head)
  return model, checkpoint.load_params(path, abstract_params(model, data_section, mesh, rules))


def load_model_judge(path: str, data_section, mesh, rules):
  """A `judges.ModelJudge` from a preference-model export."""
  from alignment import judges  # pylint: disable=g-import-not-at-top
  model, params = load_export(path, "pairwise", data_section, mesh, rules)
  return judges.ModelJudge(model, params, mesh, rules)


def config_error(message: str):
  from alignment import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.ConfigError(message)


def lm_init(model, data_section):
  """model_init(rng) -> boxed params of a LanguageModel, from dummy inputs."""
  p = np.zeros((1, data_section.prompt_len), np.int32)
  r = np.zeros((1, data_section.response_len), np.int32)
  return lambda rng: model.init(rng, p, p, r, r)["params"]


def load_reference(config, model, mesh, rules):
  """The frozen reference policy's parameters, sharded like the policy's.

  `init.reference` if set, else `init.policy` (the SFT export the policy
  starts from), else the policy's own initial parameters (same seed).
  """
  from alignment import checkpoint  # pylint: disable=g-import-not-at-top
  path = config.init.reference or config.init.policy
  target = abstract_params(model, config.data, mesh, rules)
  if path:
    return checkpoint.load_params(path, target)
  init = lm_init(model, config.data)
  key = jax.random.split(jax.random.PRNGKey(np.uint32(config.seed)))[0]
  shardings = jax.tree.map(lambda x: x.sharding, target)
  with sharding.use(mesh, rules):
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    return jax.jit(lambda k: nn.unbox(init(k)), out_shardings=shardings)(key)


def make_evaluator(config, model, sft_params, mesh, rules, proxy=None):
  """An `evaluation.Evaluator` when the config evaluates inside the loop, else None."""
  if not config.eval.get("every", 0) and not config.eval.get("steps", None):
    return None
  return build_evaluator(config, model, sft_params, mesh, rules, proxy)


def build_evaluator(config, model, sft_params, mesh, rules, proxy=None):
  """The `evaluation.Evaluator` of config.eval: golden judge, optional proxy PM, and
  the win-rate reference `eval.reference` (SFT when empty), for every caller alike."""
  from alignment import evaluation, judges  # pylint: disable=g-import-not-at-top
  e = config.eval
  vocab = task_vocabulary(e.prompts_task)
  golden = judges.GoldenJudge(vocab)
  if proxy is None and e.proxy:
    proxy = load_model_judge(e.proxy, config.data, mesh, rules)
  reference = reference_model = None
  if e.reference:
    reference_model, reference = load_export(e.reference, "lm", config.data, mesh, rules)
  return evaluation.Evaluator(model, sft_params, mesh, rules, golden, e, config.data,
                              e.prompts_task, e.pairs_task, proxy=proxy,
                              reference_params=reference, vocab_size=vocab.vocab_size,
                              reference_model=reference_model)


def is_eval_step(config, step: int) -> bool:
  """`eval.steps` when listed (e.g. log-spaced: a curve moves most early on), else
  every `eval.every` steps and the last one."""
  e = config.eval
  if e.get("steps", None):
    return step in set(int(s) for s in e.steps)
  return bool(e.get("every", 0)) and (step % e.every == 0 or step == config.train.num_steps)


def maybe_evaluate(run, evaluator, config, step: int, params):
  """At an evaluation step: logs eval/* and writes the per-item arrays behind them to
  <workdir>/eval/step_<N>.npz; with `eval.save_params`, the parameters too
  (<workdir>/eval/step_<N>/, a params export: e.g. the peak policy of a curve)."""
  if evaluator is None or not is_eval_step(config, step):
    return
  from alignment import checkpoint, evaluation  # pylint: disable=g-import-not-at-top
  metrics, arrays = evaluator.evaluate(params)
  run.write(step, {f"eval/{k}": v for k, v in metrics.items()})
  path = evaluation.arrays_path(run.log.workdir, step)
  if config.eval.get("save_params", False):
    checkpoint.export_params(params, evaluator.model.cfg, path.removesuffix(".npz"))
  if run.log.main:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    evaluation.save_arrays(path, arrays)

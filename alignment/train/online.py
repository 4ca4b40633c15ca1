"""Online alignment: sample two responses per prompt, ask the judge, apply the loss.

Each step draws a batch of train prompts, samples two responses for each from
the CURRENT policy (`alignment.sampling`, temperature `sampling.temperature`),
asks the judge which is better, and applies the same registry loss as the
offline loop to (winner, loser) against the frozen reference. The judge is
the proxy PM (`judge.kind="proxy"`, `judge.checkpoint` = its export, asked
both ways: `judges.ModelJudge`) or the golden judge (`judge.kind="golden"`:
the "golden policy" of the paper's win rates).

Roles (`config.roles`): the policy (state, sampler, data), the reference and
the proxy PM share the mesh by default, or each takes a sub-mesh; batches,
verdicts and reference log-probs then cross by reshards (`roles.Reference`,
`judge_compare` below), and the results equal the shared mesh's.

`sampling.mixture` = a in (0, 1] draws each response from the reference
policy with probability a and from the policy otherwise (a sequence-level
mixture, after IPO-MD's mixture of the current and reference policies).

With `train.write_stream`, every step's prompts, both responses and the
verdict are written to DIR/stream (`alignment.data.stream`), so the offline
loop can replay D_online in order, shuffled, or shuffled within windows.

    python -m alignment.main --config=configs/online.py:tiny --workdir=DIR \\
        --config.init.policy=SFT/export --config.judge.checkpoint=PM/export
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from alignment import algorithms, checkpoint, distributed, evaluation, faults, judges, sampling, sharding
from alignment import config as config_lib
from alignment.data import batches as B
from alignment.data import pipeline, stream, tasks
from alignment.data import vocab as vocab_lib
from alignment.models import heads, zoo
from alignment.train import bookkeeping, roles, steps
from alignment.train import state as state_lib


@dataclasses.dataclass(frozen=True)
class Phases:
  """One online step in its three phases; the loop runs them in turn and the
  benchmark (`python -m alignment.bench online`) times each.

  sample(params, prompts, step) -> SampleOutput: 2 responses per prompt, rows 2i, 2i + 1.
  judge(prompts, out, step) -> ((y1, m1, y2, m2), Comparison): the two samples of each
    prompt and the judge's verdict on them (a model judge on its own mesh is resharded to).
  update(state, out, verdict) -> (state, metrics, judge statistics): pairs (winner,
    loser), then the train step (policy and frozen reference in one program).
  """
  sample: Callable[..., sampling.SampleOutput]
  judge: Callable[..., Any]
  update: Callable[..., Any]


def make_judge(config, vocab, meshes, rules):
  """The proxy PM (asked both ways, on its role's mesh) or the golden judge."""
  if config.judge.kind == "proxy":
    if not config.judge.checkpoint:
      raise config_lib.ConfigError("config.judge.checkpoint: the proxy PM's export is required "
                                   "with judge.kind='proxy'")
    return judges.load_model_judge(config.judge.checkpoint, config.data,
                                   meshes[judges.Role.PROXY_PM], rules)
  if config.judge.kind == "golden":
    return judges.GoldenJudge(vocab)
  raise config_lib.ConfigError(f"config.judge.kind={config.judge.kind!r}: choose proxy or golden")


def make_phases(config, model, judge, reference, optimizer, state_shardings, mesh,
                rules) -> Phases:
  """The sampler, judge call and train step of `config` (an online config)."""
  d, s = config.data, config.sampling
  sampler = sampling.Sampler(
      model, sampling.SamplingConfig(max_new_tokens=d.response_len, temperature=s.temperature,
                                     top_k=s.top_k, top_p=s.top_p, num_samples=2,
                                     cache_dtype=s.cache_dtype,
                                     vocab_size=tasks.task_vocabulary(d.task).vocab_size),
      mesh, rules, params_sharding=state_shardings.params)
  sample_key = jax.random.PRNGKey(np.uint32(config.seed + 1))
  loss_fn = steps.alignment_loss_fn(model, config.loss.name, config.loss.beta,
                                    config.loss.reduction)
  example = B.PreferenceBatch(*(np.zeros((d.batch_size, n), np.int32) for n in (
      d.prompt_len, d.prompt_len, d.response_len, d.response_len, d.response_len,
      d.response_len)))
  batch_shardings = {"pairs": sharding.batch_shardings(example, mesh, rules),
                     **reference.step_shardings(state_shardings.params),
                     "judge_ok": sharding.replicated(mesh)}
  train_step = state_lib.make_step(loss_fn, optimizer, state_shardings, batch_shardings,
                                   mesh, rules)
  make_pairs = jax.jit(algorithms.pairs_from_samples, out_shardings=batch_shardings["pairs"])
  # Explicit shardings: each process then holds the same rows of prompts and samples.
  split = jax.jit(algorithms.split_samples, out_shardings=(batch_shardings["pairs"].chosen,) * 4)
  stats = jax.jit(algorithms.judge_stats, out_shardings=sharding.replicated(mesh))
  mix = jax.jit(algorithms.mix_samples, static_argnums=3, out_shardings=sampler.out_sharding)

  def sample(params, batch, step):
    key = jax.random.fold_in(sample_key, step)
    out = sampler(params, batch, key)
    if s.mixture > 0:
      ref_out = sampler(reference.on_policy_mesh(), batch, jax.random.fold_in(key, 1))
      with sharding.use(mesh, rules):
        out = mix(out, ref_out, jax.random.fold_in(key, 2), float(s.mixture))
    return out

  def judge_samples(batch, out, step):
    with sharding.use(mesh, rules):
      rows = split(out)
    judge_mesh = getattr(judge, "mesh", None)  # a model judge on its own mesh: reshard
    if judge_mesh is None or sharding.same_mesh(judge_mesh, mesh):
      verdict = judge.compare(batch, *rows)
    else:
      verdict = judge.compare(*sharding.move_rows((batch, *rows), judge_mesh, rules))
      verdict = sharding.move_rows(verdict, mesh, rules)
    if faults.hit("judge", step + 1):  # fault injection (tests only)
      verdict = verdict.replace(prob_first=jnp.full_like(verdict.prob_first, jnp.nan))
    return rows, verdict.replace(first_wins=jnp.asarray(verdict.first_wins))

  def update(state, out, verdict):
    with sharding.use(mesh, rules):
      pairs = make_pairs(out, verdict.first_wins)
      batch_stats = stats(verdict.prob_first, verdict.first_wins, out.lengths)
    state, metrics = train_step(state, {"pairs": pairs, **reference.step_inputs(pairs),
                                        "judge_ok": batch_stats["judge_ok"]})
    return state, metrics, batch_stats

  return Phases(sample, judge_samples, update)


def run(config, workdir: str) -> dict:
  # ---- set-up --------------------------------------------------------------
  distributed.setup_host()
  shared_mesh, rules = sharding.mesh_and_rules(config.mesh)
  meshes = roles.role_meshes(config, shared_mesh)  # each role's mesh (config.roles)
  mesh = meshes[judges.Role.POLICY]
  d = config.data
  vocab = tasks.task_vocabulary(d.task)
  model_cfg = zoo.from_section(config.model, vocab_lib.model_vocab_size(vocab))
  model = heads.LanguageModel(model_cfg)

  # ---- data ----------------------------------------------------------------
  prompts = pipeline.make_iterator(
      d.task, "train", "prompts", d.batch_size, prompt_length=d.prompt_len,
      response_length=d.response_len, mesh=mesh, rules=rules, seed=d.shuffle_seed,
      virtual_shards=d.virtual_shards or None)

  # ---- state ---------------------------------------------------------------
  optimizer = state_lib.make_optimizer(config.optimizer)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 config.train.keep_checkpoints, config.train.async_checkpoint)
  meta = {"experiment": "online", "model": config.model.name,
          "vocab_size": model_cfg.vocab_size, "vocabulary": vocab_lib.vocabulary_name(vocab)}
  init = heads.init_fn(model, d.prompt_len, d.response_len)
  state, state_shardings, start = state_lib.restore_or_create(
      ckpt, init, optimizer, mesh, rules, config.seed, meta, prompts, config.init.policy)
  reference = roles.Reference(config, model, mesh, meshes[judges.Role.REFERENCE], rules,
                              state_shardings.params)

  # ---- judge, evaluation, stream ----------------------------------------------
  judge = make_judge(config, vocab, meshes, rules)
  proxy = judge if isinstance(judge, judges.ModelJudge) else None
  evaluator = evaluation.make_evaluator(config, model, reference.on_policy_mesh(), mesh, rules,
                                        proxy=proxy)  # None unless the config evaluates in-loop
  writer = None
  if config.train.write_stream:
    writer = stream.StreamWriter(
        os.path.join(workdir, "stream"), global_batch_size=d.batch_size,
        prompt_length=d.prompt_len, response_length=d.response_len,
        vocab=vocab_lib.vocabulary_name(vocab), resume_step=start)

  # ---- step: sample, judge, update ------------------------------------------
  phases = make_phases(config, model, judge, reference, optimizer, state_shardings, mesh,
                       rules)

  # ---- loop ----------------------------------------------------------------
  run_ = bookkeeping.Run(config, workdir, ckpt, start, "online", meta,
                         watch=("loss", "grad_norm", "judge_prob_chosen"))
  for step in range(start, config.train.num_steps):
    batch = next(prompts)
    t0 = time.perf_counter()
    out = phases.sample(state.params, batch, step)
    jax.block_until_ready(out.tokens)
    t1 = time.perf_counter()
    (y1, m1, y2, m2), verdict = phases.judge(batch, out, step)
    jax.block_until_ready(verdict.first_wins)
    t2 = time.perf_counter()
    state, metrics, batch_stats = phases.update(state, out, verdict)
    if writer is not None:  # each process writes the rows it holds, at their positions
      host = [distributed.local_rows(x) for x in (batch.prompt, batch.prompt_mask, y1, m1, y2,
                                                  m2, verdict.first_wins, verdict.prob_first)]
      writer.write(step, prompt=host[0], prompt_mask=host[1], response_1=host[2],
                   response_1_mask=host[3], response_2=host[4], response_2_mask=host[5],
                   verdict=np.asarray(host[6]).astype(np.int32),
                   proxy_prob=np.asarray(host[7], np.float32),
                   positions=distributed.local_row_indices(y1))
    extra = {k: float(v) for k, v in jax.device_get(batch_stats).items() if k != "judge_ok"}
    extra.update(sample_time=t1 - t0, judge_time=t2 - t1)
    evaluation.maybe_evaluate(run_, evaluator, config, step + 1, state.params)
    if writer is not None and (
        (step + 1) % config.train.checkpoint_every == 0 or step + 1 == config.train.num_steps
        or run_.preemption.requested):
      writer.flush()  # the stream never runs ahead of the checkpoint it resumes from
    if run_.end_of_step(step + 1, state, metrics, prompts.get_state(), extra=extra):
      break
  final = dict(run_.last_metrics)
  if writer is not None:
    writer.flush()
  run_.close()

  # ---- export --------------------------------------------------------------
  if not run_.stopped_early:
    checkpoint.export_params(state.params, model_cfg, os.path.join(workdir, "export"))
  return final

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
from alignment.models import heads
from alignment.train import bookkeeping, roles, steps
from alignment.train import program as program_lib


@dataclasses.dataclass(frozen=True)
class OnlineProgram:
  """The online loop's programs (`build`): the alignment step and the sampler.

  train: the alignment step (`program.Program`) on an `AlignmentInput`, with the
    veto step(state, batch, accept): accept is "every verdict is finite".
  sampler: 2 responses per prompt of `data.response_len` tokens at
    `sampling.*`, reading the parameters where the train state keeps them.
  """
  train: program_lib.Program
  sampler: sampling.Sampler


def build(config, mesh, rules, vocab, reference_shared: bool = True) -> OnlineProgram:
  """The online step of `config` on `mesh` (nothing allocated).

  vocab: the data's vocabulary (the model's is it rounded up; the sampler never
  draws past it); reference_shared: whether the reference runs on the policy's
  mesh (its parameters go into the step) or on its own (its log-probs do).
  """
  d, s, l = config.data, config.sampling, config.loss
  train = program_lib.build(
      "online", heads.LanguageModel, config, mesh, rules, vocab,
      loss_fn_of=lambda m: steps.alignment_loss_fn(m, l.name, l.beta, l.reduction),
      batch_spec_of=lambda abstract: roles.alignment_input_spec(
          program_lib.pair_batch_spec(d, mesh, rules), abstract.params, reference_shared,
          mesh, rules),
      accepts_veto=True)
  sampler = sampling.Sampler(
      train.model, sampling.SamplingConfig(max_new_tokens=d.response_len, temperature=s.temperature,
                                     top_k=s.top_k, top_p=s.top_p, num_samples=2,
                                     cache_dtype=s.cache_dtype, vocab_size=vocab.vocab_size),
      mesh, rules, params_sharding=train.state_shardings.params)
  return OnlineProgram(train, sampler)


@dataclasses.dataclass(frozen=True)
class Phases:
  """One online step in its three phases; the loop runs them in turn and the
  benchmark (`python -m alignment.bench online`) times each.

  sample(params, prompts, step) -> SampleOutput: 2 responses per prompt, rows 2i, 2i + 1.
  judge(prompts, out, step) -> (SampledPairs, Comparison): the two samples of each
    prompt, typed, and the judge's verdict on them (a model judge on its own mesh
    is resharded to).
  update(state, sampled, verdict) -> (state, metrics, judge statistics): ranked
    pairs (winner, loser), then the train step (policy and frozen reference in one
    program), vetoed when a verdict is not finite.
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


def lengths_of(sampled: B.SampledPairs):
  """[2B] response lengths (real tokens, EOS included) in sampling order."""
  return jnp.stack([jnp.sum(sampled.response_1_mask, -1),
                    jnp.sum(sampled.response_2_mask, -1)], 1).reshape(-1)


def make_phases(program: OnlineProgram, config, judge, reference) -> Phases:
  """The sampler, judge call and train step of `program`, with this judge and reference."""
  train, sampler = program.train, program.sampler
  mesh, rules = train.mesh, train.rules
  s = config.sampling
  sample_key = jax.random.PRNGKey(np.uint32(config.seed + 1))
  pair_shardings = train.batch_shardings.pairs
  # Explicit shardings: each process then holds the same rows of prompts and samples.
  split = jax.jit(algorithms.split_samples,
                  out_shardings=B.SampledPairs(*(pair_shardings.chosen,) * 6))
  rank = jax.jit(algorithms.ranked_pairs, out_shardings=pair_shardings)
  stats = jax.jit(lambda sampled, prob, first: algorithms.judge_stats(
      prob, first, lengths_of(sampled)), out_shardings=sharding.replicated(mesh))
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
    del batch  # the sampler's output carries its prompts
    with sharding.use(mesh, rules):
      sampled = split(out)
    judge_mesh = getattr(judge, "mesh", None)  # a model judge on its own mesh: reshard
    if judge_mesh is None or sharding.same_mesh(judge_mesh, mesh):
      verdict = judge.compare_pairs(sampled)
    else:
      verdict = judge.compare_pairs(sharding.move_rows(sampled, judge_mesh, rules))
      verdict = sharding.move_rows(verdict, mesh, rules)
    if faults.hit("judge", step + 1):  # fault injection (tests only)
      verdict = verdict.replace(prob_first=jnp.full_like(verdict.prob_first, jnp.nan))
    return sampled, verdict.replace(first_wins=jnp.asarray(verdict.first_wins))

  def update(state, sampled, verdict):
    with sharding.use(mesh, rules):
      pairs = rank(sampled, verdict.first_wins)
      batch_stats = stats(sampled, verdict.prob_first, verdict.first_wins)
    state, metrics = train.step(state, reference.step_inputs(pairs), batch_stats["judge_ok"])
    return state, metrics, batch_stats

  return Phases(sample, judge_samples, update)


def run(config, workdir: str) -> dict:
  # ---- set-up --------------------------------------------------------------
  meshes, mesh, rules, reference_shared = roles.policy_set_up(config)  # config.roles
  d = config.data
  vocab = tasks.task_vocabulary(d.task)
  program = build(config, mesh, rules, vocab, reference_shared=reference_shared)
  model, model_cfg = program.train.model, program.train.model_config

  # ---- data ----------------------------------------------------------------
  prompts = pipeline.make_iterator(
      d.task, "train", "prompts", d.batch_size, prompt_length=d.prompt_len,
      response_length=d.response_len, mesh=mesh, rules=rules, seed=d.shuffle_seed,
      virtual_shards=d.virtual_shards or None)

  # ---- state ---------------------------------------------------------------
  ckpt, meta, state, start = program.train.start(workdir, config, vocab, prompts,
                                                  config.init.policy)
  reference = roles.Reference(config, model, mesh, meshes[judges.Role.REFERENCE], rules,
                              program.train.state_shardings.params)

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
  phases = make_phases(program, config, judge, reference)

  # ---- loop ----------------------------------------------------------------
  run_ = bookkeeping.Run(config.train, workdir, ckpt, start, "online", meta,
                         watch=("loss", "grad_norm", "judge_prob_chosen"))
  for step in range(start, config.train.num_steps):
    batch = next(prompts)
    t0 = time.perf_counter()
    out = phases.sample(state.params, batch, step)
    jax.block_until_ready(out.tokens)
    t1 = time.perf_counter()
    sampled, verdict = phases.judge(batch, out, step)
    jax.block_until_ready(verdict.first_wins)
    t2 = time.perf_counter()
    state, metrics, batch_stats = phases.update(state, sampled, verdict)
    if writer is not None:  # each process writes the rows it holds, at their positions
      rows = {f.name: distributed.local_rows(getattr(sampled, f.name))
              for f in dataclasses.fields(sampled)}
      writer.write(step, **rows,
                   verdict=np.asarray(distributed.local_rows(verdict.first_wins)).astype(np.int32),
                   proxy_prob=np.asarray(distributed.local_rows(verdict.prob_first), np.float32),
                   positions=distributed.local_row_indices(sampled.response_1))
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

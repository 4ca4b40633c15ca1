"""Online alignment: sample two responses per prompt, ask the judge, apply the loss.

Each step draws a batch of train prompts, samples two responses for each from
the CURRENT policy (`alignment.sampling`, temperature `sampling.temperature`),
asks the judge which is better, and applies the same registry loss as the
offline loop to (winner, loser) against the frozen reference. The judge is
the proxy PM (`judge.kind="proxy"`, `judge.checkpoint` = its export, asked
both ways: `judges.ModelJudge`) or the golden judge (`judge.kind="golden"`:
the "golden policy" of the paper's win rates); `judges.build` makes it.

A step runs in three phases (`Phases`: sample, judge, update; `make_phases`),
`contrastive_phases` or `policy_gradient_phases` by `rl.method`; the judge phase
hands the update a typed judgement, `JudgedPairs` or `JudgedRewards`.
`alignment.train.rollouts.Rollouts` runs the phases in turn, or the next step's
sampling and judging ahead with `rl.staleness`.

Roles (`config.roles`): the policy (state, sampler, data), the reference and
the proxy PM share the mesh by default, or each takes a sub-mesh; batches,
verdicts and reference log-probs then cross by reshards (`roles.Reference`, the
judge phases below), and the results equal the shared mesh's.

`rl.method` picks what is optimised (`config.rl_section`): "contrastive" (the
above: 2 samples, a verdict, the `loss` section's pairwise loss) or policy
gradient with k = `rl.samples` samples per prompt: "rloo" (REINFORCE with a
leave-one-out baseline) or "grpo" (group-normalised advantages, the clipped
ratio, `rl.updates` minibatch updates per batch). Their rewards come from the
judge: a reward model's r(x, y) (`judge.kind="reward"`), a pairwise PM's mean
probability of beating each sibling, or `rl.siblings` of them (`"proxy"`), or the
golden score (`"golden"`); the KL to the reference enters as a k1 reward penalty,
a k3 loss or the exact per-token KL as a loss (`rl.kl`, weight `rl.kl_coef`). The maths
is in `alignment.algorithms` (tests/test_policy_gradient.py: formulas and a
bandit whose optimum is known).

`sampling.mixture` = a in (0, 1] draws each response from the reference
policy with probability a and from the policy otherwise (a sequence-level
mixture, after IPO-MD's mixture of the current and reference policies).

With `train.write_stream`, every step's prompts, both responses and the
verdict are written to DIR/stream (`stream.OnlineWriter`), so the offline
loop can replay D_online in order, shuffled, or shuffled within windows.

    python -m alignment.main --config=configs/online.py:tiny --workdir=DIR \\
        --config.init.policy=SFT/export --config.judge.checkpoint=PM/export
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from alignment import algorithms, checkpoint, evaluation, faults, judges, layout, sampling
from alignment import programs, scoring, sharding
from alignment import config as config_lib
from alignment.data import batches as B
from alignment.data import pipeline, stream, tasks
from alignment.data import vocab as vocab_lib
from alignment.models import heads
from alignment.train import bookkeeping, roles, steps
from alignment.train import rollouts as rollouts_lib
from alignment.train import program as program_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OnlineProgram:
  """The online loop's programs (`build`): the update step and the sampler.

  train: the update step (`program.Program`), with the veto step(state, batch,
    accept): accept is "every verdict (reward) is finite". Contrastive: on an
    `AlignmentInput` of B judged pairs; rloo/grpo: on a `RolloutInput` of
    B x k / rl.updates sampled responses.
  sampler: rl.samples responses per prompt of `data.response_len` tokens at
    `sampling.*`, reading the parameters where the train state keeps them.
  """
  train: program_lib.Program
  sampler: sampling.Sampler


def rollout_spec(config, abstract_params, mesh, rules) -> steps.RolloutInput:
  """The abstract `RolloutInput` of one policy-gradient update (a minibatch)."""
  d, r = config.data, config.rl
  n = d.batch_size * r.samples // r.updates
  rows2, rows1 = sharding.batch_sharding(mesh, rules, 2), sharding.batch_sharding(mesh, rules, 1)
  sds = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype,
                                                  sharding=rows2 if len(shape) == 2 else rows1)
  tokens = lambda length: sds((n, length), jnp.int32)
  return steps.RolloutInput(
      prompt=tokens(d.prompt_len), prompt_mask=tokens(d.prompt_len),
      response=tokens(d.response_len), response_mask=tokens(d.response_len),
      advantages=sds((n,), jnp.float32), old_logps=sds((n, d.response_len), jnp.float32),
      ref_logps=sds((n, d.response_len), jnp.float32),
      ref_params=abstract_params if r.kl == "exact" else None)


def build(config, mesh, rules, vocab, reference_shared: bool = True) -> OnlineProgram:
  """The online step of `config` on `mesh` (nothing allocated).

  vocab: the data's vocabulary (the model's is it rounded up; the sampler never
  draws past it); reference_shared: whether the reference runs on the policy's
  mesh (its parameters go into the step) or on its own (its log-probs do).
  """
  d, s, l, r = config.data, config.sampling, config.loss, config.rl
  if r.method == "contrastive":
    train = program_lib.build(
        "online", heads.LanguageModel, config, mesh, rules, vocab,
        loss_fn_of=lambda m: steps.alignment_loss_fn(m, l.name, l.beta, l.reduction),
        batch_spec_of=lambda abstract: roles.alignment_input_spec(
            program_lib.pair_batch_spec(d, mesh, rules), abstract.params, reference_shared,
            mesh, rules),
        accepts_veto=True, traced_from=(reference_shared,))
  else:
    if r.kl == "exact" and not reference_shared:
      raise config_lib.ConfigError("config.rl.kl='exact' needs the reference's full "
                                   "distributions in the step: leave config.roles.reference "
                                   "on the policy's mesh, or use kl='k3' or 'reward'")
    train = program_lib.build(
        "online", heads.LanguageModel, config, mesh, rules, vocab,
        loss_fn_of=lambda m: steps.policy_gradient_loss_fn(m, r.method, r.kl, r.kl_coef,
                                                           r.clip_eps),
        batch_spec_of=lambda abstract: rollout_spec(config, abstract.params, mesh, rules),
        accepts_veto=True, traced_from=(reference_shared,))
  sampler = sampling.Sampler(
      train.model, sampling.SamplingConfig(max_new_tokens=d.response_len, temperature=s.temperature,
                                           top_k=s.top_k, top_p=s.top_p, num_samples=r.samples,
                                           cache_dtype=s.cache_dtype, vocab_size=vocab.vocab_size,
                                           **sampling.with_model_eos(
                                               vocab_lib.sampling_ids(vocab),
                                               config.init.get("policy", ""))),
      mesh, rules, params_sharding=train.state_shardings.params,
      gather=bool(s.get("gather_params", False)))
  return OnlineProgram(train, sampler)


def lengths_of(sampled: B.SampledPairs):
  """[2B] response lengths (real tokens, EOS included) in sampling order."""
  return jnp.stack([jnp.sum(sampled.response_1_mask, -1),
                    jnp.sum(sampled.response_2_mask, -1)], 1).reshape(-1)


def make_phases(program: OnlineProgram, config, judge, reference) -> rollouts_lib.Phases:
  """The sampler, judge call and train step of `program`, with this judge and reference
  (contrastive: judged pairs; rloo/grpo: rewards of k samples per prompt)."""
  if config.rl.method != "contrastive":
    return policy_gradient_phases(program, config, judge, reference)
  return contrastive_phases(program, config, judge, reference)


def _contrastive_programs(mesh, rules, pair_shardings, out_sharding):
  """(split, rank, stats, mix) jitted: the contrastive step's small programs around the
  judge and the update, with explicit shardings (each process then holds the same
  rows of prompts and samples); one set per mesh and shardings in a process
  (`programs.shared`), so a study's next online stage does not compile them again;
  rules are the context they run in (`contrastive_phases`)."""
  del rules
  split = jax.jit(algorithms.split_samples,
                  out_shardings=B.SampledPairs(*(pair_shardings.chosen,) * 6))
  rank = jax.jit(algorithms.ranked_pairs, out_shardings=pair_shardings)
  stats = jax.jit(lambda sampled, prob, first: algorithms.judge_stats(
      prob, first, lengths_of(sampled)), out_shardings=sharding.replicated(mesh))
  mix = jax.jit(algorithms.mix_samples, static_argnums=3, out_shardings=out_sharding)
  return split, rank, stats, mix


def contrastive_phases(program: OnlineProgram, config, judge, reference) -> rollouts_lib.Phases:
  """Two samples per prompt (the reference's with probability `sampling.mixture`),
  the judge's verdict on each pair, then one step on the (winner, loser) pairs."""
  train, sampler = program.train, program.sampler
  mesh, rules = train.mesh, train.rules
  s = config.sampling
  sample_key = jax.random.PRNGKey(np.uint32(config.seed + 1))
  split, rank, stats, mix = programs.shared(
      _contrastive_programs, mesh, rules, train.batch_shardings.pairs, sampler.out_sharding)

  def sample(params, batch, step):
    key = jax.random.fold_in(sample_key, step)
    out = sampler(params, batch, key)
    if s.mixture > 0:
      ref_out = sampler(reference.on_policy_mesh(), batch, jax.random.fold_in(key, 1))
      with sharding.use(mesh, rules):
        out = mix(out, ref_out, jax.random.fold_in(key, 2), float(s.mixture))
    return out

  def judge_samples(batch, out, step) -> rollouts_lib.JudgedPairs:
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
    return rollouts_lib.JudgedPairs(sampled, verdict.replace(first_wins=jnp.asarray(verdict.first_wins)))

  def update(state, judged: rollouts_lib.JudgedPairs):
    sampled, verdict = judged.sampled, judged.verdict
    with sharding.use(mesh, rules):
      pairs = rank(sampled, verdict.first_wins)
      batch_stats = stats(sampled, verdict.prob_first, verdict.first_wins)
    state, metrics = train.step(state, reference.step_inputs(pairs), batch_stats["judge_ok"])
    return state, metrics, batch_stats

  return rollouts_lib.Phases(sample, judge_samples, update)


# ---------------------------------------------------------------------------
# Policy gradient (RLOO, GRPO): k samples per prompt, a reward each
# ---------------------------------------------------------------------------


def policy_gradient_phases(program: OnlineProgram, config, judge, reference) -> rollouts_lib.Phases:
  """RLOO/GRPO's phases: sample k responses per prompt; rewards from the judge
  (`reward_fn`: a reward model's r, a pairwise PM's sibling wins, or golden scores);
  the advantages over each prompt's k samples and `rl.updates` minibatch updates
  (`pg_update_fn`)."""
  sample_key = jax.random.PRNGKey(np.uint32(config.seed + 1))
  rewards_of = reward_fn(program, config, judge)

  def sample(params, batch, step):
    return program.sampler(params, batch, jax.random.fold_in(sample_key, step))

  def judge_samples(batch, out, step) -> rollouts_lib.JudgedRewards:
    del batch  # the sampler's output carries its prompts
    rewards = jnp.asarray(rewards_of(out), jnp.float32)
    if faults.hit("judge", step + 1):  # fault injection (tests only)
      rewards = jnp.full_like(rewards, jnp.nan)
    return rollouts_lib.JudgedRewards(out, rewards)

  return rollouts_lib.Phases(sample, judge_samples, pg_update_fn(program, config, reference))


def reward_fn(program: OnlineProgram, config, judge) -> Callable:
  """out -> [B x k] rewards of the sampler's output, on the policy's mesh: a reward
  model's or the golden judge's r(x, y) per row, or a pairwise PM's sibling wins
  (each pair of `algorithms.sibling_pairs(k, rl.siblings)` judged once, both orders
  in the judge's one call: all k(k - 1)/2, or k m / 2 with m = rl.siblings;
  `algorithms.sibling_win_matrix`, `sibling_win_rewards`). A model judge on its own
  mesh gets the rows resharded to it, and its results back."""
  train, k = program.train, config.rl.samples
  mesh, rules = train.mesh, train.rules
  rows = train.batch_spec.response.sharding
  m = config.rl.get("siblings", 0)
  pairs = algorithms.sibling_pairs(k, m)
  if len(pairs) < k * (k - 1) // 2 and hasattr(judge, "rewards"):
    raise config_lib.ConfigError(f"config.rl.siblings={m}: this judge scores each sample "
                                 "alone (a reward model or the golden program); siblings "
                                 "are for a pairwise judge (set 0)")
  compared = None if len(pairs) == k * (k - 1) // 2 else algorithms.compared_matrix(pairs, k)
  # The k samples of each prompt, one at a time (a pairwise judge compares them two by two).
  nth = jax.jit(lambda out, i: (out.prompt[i::k], out.prompt_mask[i::k], out.tokens[i::k],
                                out.mask[i::k]), static_argnums=1, out_shardings=(rows,) * 4)
  siblings = jax.jit(lambda p: algorithms.sibling_win_rewards(p, compared), out_shardings=rows)
  judge_mesh = getattr(judge, "mesh", None)  # a model judge on its own mesh: reshard
  split_judge = judge_mesh is not None and not sharding.same_mesh(judge_mesh, mesh)
  to_judge = lambda x: sharding.move_rows(x, judge_mesh, rules) if split_judge else x
  from_judge = lambda x: sharding.move_rows(x, mesh, rules) if split_judge else x

  def rewards_of(out):
    prompts = B.PromptBatch(out.prompt, out.prompt_mask)
    if hasattr(judge, "rewards"):  # a reward model or the golden judge: r(x, y) per row
      return from_judge(judge.rewards(*to_judge((prompts, out.tokens, out.mask))))
    with sharding.use(mesh, rules):  # a pairwise PM: P(i beats j) for each pair of siblings
      parts = [to_judge(nth(out, i)) for i in range(k)]
    pair_probs = {}
    for i, j in pairs:
      c = judge.compare(B.PromptBatch(*parts[i][:2]), *parts[i][2:], *parts[j][2:])
      pair_probs[i, j] = from_judge(c.prob_first)
    matrix = algorithms.sibling_win_matrix(pair_probs, k)  # [B, k, k]
    with sharding.use(mesh, rules):
      return siblings(matrix).reshape(-1)

  return rewards_of


def rollout_fn(model, config) -> Callable:
  """The pure (ref_params, params, out, rewards) -> (RolloutInput, batch statistics) of
  one batch of k samples per prompt: the sequences' log-probs under the reference,
  the advantages (`algorithms.pg_advantages`), weighted by min(pi / pi_behaviour,
  rl.is_cap) when stale samples are corrected (params: the current policy's)."""
  r, k = config.rl, config.rl.samples

  def logps_of(params, out):
    logits = model.apply({"params": params}, out.prompt, out.prompt_mask, out.tokens, out.mask)
    return scoring.token_logprobs(logits, out.tokens, out.mask)

  def prepare_fn(ref_params, params, out, rewards):
    ref_t = logps_of(ref_params, out)
    old_t = out.logprobs  # the sampling (behaviour) policy's, untempered
    seq = lambda t: jnp.sum(t, -1).reshape(-1, k)
    rewards_bk = rewards.astype(jnp.float32).reshape(-1, k)
    adv = algorithms.pg_advantages(r.method, rewards_bk, seq(old_t), seq(ref_t), r.kl,
                                   r.kl_coef, r.grpo_eps)
    if r.is_cap > 0:  # stale samples: weight by min(pi / pi_behaviour, cap); the ratio
      now_t = logps_of(params, out)  # then starts from the current policy
      adv = adv * algorithms.truncated_importance_weights(seq(now_t), seq(old_t), r.is_cap)
      old_t = now_t
    rollout = steps.RolloutInput(out.prompt, out.prompt_mask, out.tokens, out.mask,
                                 adv.reshape(-1), old_t, ref_t)
    lengths = jnp.sum(out.mask, -1).astype(jnp.float32)
    stats = {"reward_mean": jnp.mean(rewards_bk),
             "reward_std_in_group": jnp.mean(jnp.std(rewards_bk, -1)),
             "judge_ok": jnp.all(jnp.isfinite(rewards_bk)),
             "response_length": jnp.mean(lengths), "tokens": jnp.sum(lengths)}
    return rollout, stats

  return prepare_fn


def pg_update_fn(program: OnlineProgram, config, reference) -> Callable:
  """(state, rollouts_lib.JudgedRewards) -> (state, metrics, batch statistics): the batch's
  `rollout_fn` on the policy's mesh, cut into `rl.updates` minibatches of the step's
  batch spec, one train step each (the exact KL's with the reference's parameters),
  each vetoed unless every reward is finite."""
  train, r = program.train, config.rl
  mesh, rules, mb_spec = train.mesh, train.rules, train.batch_spec
  rows, row = mb_spec.response.sharding, mb_spec.advantages.sharding
  n_mb = mb_spec.response.shape[0]
  full = steps.RolloutInput(rows, rows, rows, rows, row, rows, rows)
  prepare = jax.jit(rollout_fn(train.model, config),
                    out_shardings=(full, sharding.replicated(mesh)))
  take = jax.jit(lambda ro, u: jax.tree.map(lambda x: x[u * n_mb:(u + 1) * n_mb], ro),
                 static_argnums=1, out_shardings=full)

  def update(state, judged: rollouts_lib.JudgedRewards):
    ref = reference.on_policy_mesh()
    with sharding.use(mesh, rules):
      rollout, batch_stats = prepare(ref, state.params if r.is_cap > 0 else None, judged.out,
                                     judged.rewards)
      minibatches = [take(rollout, u) for u in range(r.updates)]
    for mb in minibatches:
      if r.kl == "exact":
        mb = mb.replace(ref_params=ref)
      state, metrics = train.step(state, mb, batch_stats["judge_ok"])
    return state, metrics, batch_stats

  return update


def open_stream(config, workdir: str, vocab, start: int) -> stream.OnlineWriter | None:
  """D_online's writer with `train.write_stream` (DIR/stream, cut back to `start`
  when resuming), else None."""
  if not config.train.write_stream:
    return None
  d = config.data
  return stream.OnlineWriter(layout.stream(workdir), global_batch_size=d.batch_size,
                             prompt_length=d.prompt_len, response_length=d.response_len,
                             vocab=vocab_lib.vocabulary_name(vocab), resume_step=start)


def saves_checkpoint(run_: bookkeeping.Run, train_cfg, step: int) -> bool:
  """Whether `run_.end_of_step(step)` saves a checkpoint (its rule: every
  `train.checkpoint_every` steps, the last step, and on a preemption)."""
  return (step % train_cfg.checkpoint_every == 0 or step == train_cfg.num_steps
          or run_.preemption.requested)


def step_extras(r: rollouts_lib.Rollout, batch_stats: dict, step: int) -> dict[str, float]:
  """The step's logged values beside the train step's metrics: the batch statistics
  (less the veto flag), and the time the loop waited for its samples and verdicts
  (all of sampling and judging on policy, what the overlap did not hide with
  staleness) and how many steps old the sampling parameters were."""
  extra = {k: float(v) for k, v in jax.device_get(batch_stats).items() if k != "judge_ok"}
  extra.update(sample_time=r.waited_sample, judge_time=r.waited_judge,
               sampling_lag=step - r.sampling_step)
  return extra


def run(config, workdir: str) -> dict:
  # ---- set-up: meshes (config.roles), the program ------------------------------
  meshes, mesh, rules, reference_shared = roles.policy_set_up(config)
  d, t = config.data, config.train
  vocab = tasks.task_vocabulary(d.task)
  program = build(config, mesh, rules, vocab, reference_shared=reference_shared)
  model, model_cfg = program.train.model, program.train.model_config

  # ---- data ----------------------------------------------------------------
  prompts = pipeline.make_iterator(
      d.task, "train", "prompts", d.batch_size, prompt_length=d.prompt_len,
      response_length=d.response_len, mesh=mesh, rules=rules, seed=d.shuffle_seed,
      virtual_shards=d.virtual_shards or None)

  # ---- state: the policy (resumed if a checkpoint is there), the reference ----
  ckpt, meta, state, start = program.train.start(workdir, config, vocab, prompts,
                                                  config.init.policy)
  reference = roles.Reference(model, mesh, meshes[roles.Role.REFERENCE], rules,
                              program.train.state_shardings.params, config.init, config.data,
                              config.seed, config.loss.reduction)

  # ---- judge, evaluation (None unless the config evaluates in-loop), stream ----
  judge = judges.build(config.judge, d, vocab, meshes[roles.Role.PROXY_PM], rules)
  proxy = judge if config.judge.kind in ("proxy", "reward") else None  # not a golden PM
  evaluator = evaluation.make_evaluator(config.eval, config.data, model,
                                        reference.on_policy_mesh(), mesh, rules, proxy=proxy,
                                        sft_export=reference.export)
  writer = open_stream(config, workdir, vocab, start)

  # ---- step: sample, judge, update ------------------------------------------
  phases = make_phases(program, config, judge, reference)

  # ---- loop ----------------------------------------------------------------
  run_ = bookkeeping.Run(t, workdir, ckpt, start, "online", meta,
                         watch=("loss", "grad_norm", "judge_prob_chosen", "reward_mean"))
  rollouts = rollouts_lib.Rollouts(phases, prompts, config.rl.staleness, config.rl.overlap)
  stale = config.rl.staleness > 0  # older parameters go into each checkpoint, and come back
  if stale and start > 0:
    rollouts_lib.restore_stale_params(rollouts.stale, ckpt, start, state.params)
  for step in range(start, t.num_steps):
    r, state, metrics, batch_stats = rollouts.step(step, state, t.num_steps)
    extra = step_extras(r, batch_stats, step)
    evaluation.maybe_evaluate(run_, evaluator, config.eval, t.num_steps, step + 1, state.params,
                              tokens=program.train.tokens)
    if writer is not None:  # flushed with each checkpoint: never ahead of the one it resumes
      writer.write(step, r.judged.sampled, r.judged.verdict.first_wins,
                   r.judged.verdict.prob_first, r.sampling_step,
                   flush=saves_checkpoint(run_, t, step + 1))
    if run_.end_of_step(step + 1, state, metrics, rollouts.data_state(), extra=extra,
                        history=functools.partial(rollouts.stale.needed, step + 1)
                        if stale else None):
      break
  final = dict(run_.last_metrics)
  if writer is not None:
    writer.close()
  run_.close()

  # ---- export --------------------------------------------------------------
  if not run_.stopped_early:
    checkpoint.export_params(state.params, model_cfg, layout.export(workdir),
                             tokens=program.train.tokens)
  return final

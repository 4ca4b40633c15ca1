"""Supervised fine-tuning: the policy every alignment run starts from.

As in the paper, the SFT policy is fine-tuned on BOTH responses of every
preference pair (the `env_sft` mixture is response a and response b of each
D_golden example), so it imitates a writer of mixed quality and leaves
head-room. Mean next-token cross-entropy over response tokens.

    python -m alignment.main --config=configs/sft.py:tiny --workdir=DIR

Writes DIR/checkpoints (resumable), DIR/metrics.jsonl, DIR/tb, and on
completion DIR/export (the parameters, for the stages that follow).

Trained to a criterion: with `criterion.patience` > 0 the run stops at the first
evaluation (`eval.every` / `eval.steps`) where the held-out loss has not improved
by more than `criterion.tol` (relative) on its best before the last `patience`
evaluations (`program.Criterion`); `train.num_steps` is then the cap. A scaling
study trains every size so, and none is an undertrained one. The stop saves the
checkpoint of its step, records `criterion/stopped_at` (and the best loss) in
metrics.jsonl, then evaluates and exports as a full run does; the returned
summary says `steps_trained` and `criterion_fired` either way. The loop is
`program.run_supervised`'s (the preference model's too: see there why the rule is
SFT's alone). patience 0 (the default) is a fixed `train.num_steps`.
"""
from __future__ import annotations

import jax

from alignment import distributed, sharding, timing
from alignment.data import pipeline
from alignment.models import heads
from alignment.train import steps
from alignment.train import program as program_lib


def build(config, mesh, rules, vocab) -> program_lib.Program:
  """The SFT step of `config` on `mesh` (nothing allocated)."""
  return program_lib.build(
      "sft", heads.LanguageModel, config, mesh, rules, vocab, loss_fn_of=steps.sft_loss_fn,
      batch_spec_of=lambda abstract: program_lib.sft_batch_spec(config.data, mesh, rules))


def run(config, workdir: str) -> dict:
  # ---- set-up --------------------------------------------------------------
  mesh, rules, vocab = program_lib.set_up(config)
  d = config.data
  program = build(config, mesh, rules, vocab)

  # ---- data ----------------------------------------------------------------
  train_data = pipeline.make_iterator(
      d.task, "train", "sft", d.batch_size, prompt_length=d.prompt_len,
      response_length=d.response_len, mesh=mesh, rules=rules, seed=d.shuffle_seed,
      virtual_shards=d.virtual_shards or None)
  eval_rows = pipeline.fixed_batch(d.task, "validation", "sft",
                                   d.batch_size * config.eval.num_batches,
                                   prompt_length=d.prompt_len, response_length=d.response_len)

  # ---- state ---------------------------------------------------------------
  ckpt, meta, state, start = program.start(workdir, config, vocab, train_data,
                                            config.init.policy)

  # ---- held-out loss ---------------------------------------------------------
  loss_fn = steps.sft_loss_fn(program.model)
  batch_shardings = program.batch_shardings
  eval_loss = jax.jit(lambda p, b: loss_fn(p, b, None),
                      in_shardings=(program.state_shardings.params, batch_shardings))

  @timing.timed("evaluation")
  def evaluate(params) -> dict:
    totals: dict[str, float] = {}
    for i in range(config.eval.num_batches):
      rows = jax.tree.map(lambda x: x[i * d.batch_size:(i + 1) * d.batch_size], eval_rows)
      rows = distributed.host_to_global(rows, batch_shardings)  # as is in one process
      with sharding.use(mesh, rules):
        loss, metrics = eval_loss(params, rows)
      for k, v in {"loss": loss, **metrics}.items():
        totals[k] = totals.get(k, 0.0) + float(v) / config.eval.num_batches
    return {f"eval/{k}": v for k, v in totals.items()}

  # ---- loop, then the export ------------------------------------------------
  return program_lib.run_supervised(program, state, start, train_data, config, workdir, ckpt,
                                    meta, evaluate,
                                    extra={"tokens": d.batch_size * (d.prompt_len +
                                                                     d.response_len)},
                                    criterion=program_lib.Criterion.of(config.get("criterion")))

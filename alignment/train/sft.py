"""Supervised fine-tuning: the policy every alignment run starts from.

As in the paper, the SFT policy is fine-tuned on BOTH responses of every
preference pair (the `env_sft` mixture is response a and response b of each
D_golden example), so it imitates a writer of mixed quality and leaves
head-room. Mean next-token cross-entropy over response tokens.

    python -m alignment.main --config=configs/sft.py:tiny --workdir=DIR

Writes DIR/checkpoints (resumable), DIR/metrics.jsonl, DIR/tb, and on
completion DIR/export (the parameters, for the stages that follow).
"""
from __future__ import annotations

import os

import jax

from alignment import checkpoint, distributed, evaluation, sharding
from alignment.data import pipeline, tasks
from alignment.data import vocab as vocab_lib
from alignment.models import heads, zoo
from alignment.train import bookkeeping, steps
from alignment.train import program as program_lib


def build(config, mesh, rules, vocab) -> program_lib.Program:
  """The SFT step of `config` on `mesh` (nothing allocated)."""
  model_cfg = zoo.from_section(config.model, vocab_lib.model_vocab_size(vocab))
  return program_lib.build(
      "sft", heads.LanguageModel(model_cfg), model_cfg, config.optimizer, config.data, mesh,
      rules, loss_fn_of=steps.sft_loss_fn,
      batch_spec_of=lambda abstract: program_lib.sft_batch_spec(config.data, mesh, rules))


def run(config, workdir: str) -> dict:
  # ---- set-up --------------------------------------------------------------
  distributed.setup_host()
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  d = config.data
  vocab = tasks.task_vocabulary(d.task)
  program = build(config, mesh, rules, vocab)
  model_cfg = program.model_config

  # ---- data ----------------------------------------------------------------
  train_data = pipeline.make_iterator(
      d.task, "train", "sft", d.batch_size, prompt_length=d.prompt_len,
      response_length=d.response_len, mesh=mesh, rules=rules, seed=d.shuffle_seed,
      virtual_shards=d.virtual_shards or None)
  eval_rows = pipeline.fixed_batch(d.task, "validation", "sft",
                                   d.batch_size * config.eval.num_batches,
                                   prompt_length=d.prompt_len, response_length=d.response_len)

  # ---- state ---------------------------------------------------------------
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 config.train.keep_checkpoints, config.train.async_checkpoint)
  meta = {"experiment": "sft", "model": config.model.name, "vocab_size": model_cfg.vocab_size,
          "vocabulary": vocab_lib.vocabulary_name(vocab)}
  state, start = program.restore_or_create(ckpt, config.seed, meta, train_data,
                                           config.init.policy)

  # ---- held-out loss ---------------------------------------------------------
  loss_fn = steps.sft_loss_fn(program.model)
  batch_shardings = program.batch_shardings
  eval_loss = jax.jit(lambda p, b: loss_fn(p, b, None),
                      in_shardings=(program.state_shardings.params, batch_shardings))

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

  # ---- loop ----------------------------------------------------------------
  run_ = bookkeeping.Run(config.train, workdir, ckpt, start, "sft", meta)
  tokens_per_batch = d.batch_size * (d.prompt_len + d.response_len)
  for step in range(start, config.train.num_steps):
    state, metrics = program.step(state, next(train_data))
    if run_.end_of_step(step + 1, state, metrics, train_data.get_state(),
                        extra={"tokens": tokens_per_batch}):
      break
    if evaluation.is_eval_step(config, step + 1):
      run_.write(step + 1, evaluate(state.params))
  final = dict(run_.last_metrics)
  run_.close()

  # ---- export --------------------------------------------------------------
  if not run_.stopped_early:
    final.update(evaluate(state.params))
    checkpoint.export_params(state.params, model_cfg, os.path.join(workdir, "export"))
  return final

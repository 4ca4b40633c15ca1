"""Pairwise preference model training: the proxy PM of the paper.

(x, y1, y2) -> logit of P(y1 beats y2), trained by maximum likelihood on the
golden labels of D_golden with the order of each pair randomised per step.
The backbone starts from the SFT policy (`init.backbone`), as the paper's PMs
start from fine-tuned T5; the score head starts near zero (P = 1/2).

Held-out evaluation asks the model both ways, as every use of it does
(`judges.ModelJudge`): accuracy of the debiased verdict against the golden
label, and the position bias it removes (the raw model's mean P(first wins)
over both orders; 1/2 is unbiased).

    python -m alignment.main --config=configs/pm.py:tiny --workdir=DIR \\
        --config.init.backbone=SFT_DIR/export

Pairs come from `data.task` (its train split; held out: its validation split), or
from pair-set directories a study writes (`data.replay_dir` for training,
uniformly shuffled; `eval.pairs_dir` held out), e.g. D_golden of SFT samples.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from alignment import checkpoint, distributed, evaluation, judges, sharding
from alignment.data import batches as B
from alignment.data import pipeline, stream, tasks
from alignment.data import vocab as vocab_lib
from alignment.models import heads, zoo
from alignment.train import bookkeeping, steps
from alignment.train import program as program_lib


def held_out_metrics(model, mesh, rules, params, pairs, batch_size: int) -> dict:
  """Debiased accuracy, raw accuracy and position bias on fixed pairs."""
  compare = judges.ModelJudge(model, params, mesh, rules)
  raw = jax.jit(lambda p, *a: model.apply({"params": p}, *a))
  n = pairs.prompt.shape[0] // batch_size * batch_size
  correct, raw_correct, first = 0.0, 0.0, 0.0
  for i in range(0, n, batch_size):
    b = jax.tree.map(lambda x: x[i:i + batch_size], pairs)
    b = distributed.host_to_global(b, sharding.batch_sharding(mesh, rules, 2))  # one: as is
    prompts = B.PromptBatch(b.prompt, b.prompt_mask)
    verdict = compare.compare(prompts, b.chosen, b.chosen_mask, b.rejected, b.rejected_mask)
    correct += float(jnp.sum(verdict.first_wins))
    with sharding.use(mesh, rules):
      r_cr = raw(params, b.prompt, b.prompt_mask, b.chosen, b.chosen_mask, b.rejected,
                 b.rejected_mask)
      r_rc = raw(params, b.prompt, b.prompt_mask, b.rejected, b.rejected_mask, b.chosen,
                 b.chosen_mask)
    raw_correct += float(jnp.sum(r_cr > 0) + jnp.sum(r_rc < 0)) / 2
    first += float(jnp.sum(jax.nn.sigmoid(r_cr)) + jnp.sum(jax.nn.sigmoid(r_rc))) / 2
  return {"eval/accuracy": correct / n, "eval/raw_accuracy": raw_correct / n,
          "eval/position_bias": first / n, "eval/pairs": float(n)}


def build(config, mesh, rules, vocab) -> program_lib.Program:
  """The preference model's step of `config` on `mesh` (nothing allocated)."""
  model_cfg = zoo.from_section(config.model, vocab_lib.model_vocab_size(vocab))
  return program_lib.build(
      "pm", heads.PairwisePreferenceModel(model_cfg), model_cfg, config.optimizer, config.data,
      mesh, rules, loss_fn_of=steps.preference_model_loss_fn,
      batch_spec_of=lambda abstract: program_lib.pair_batch_spec(config.data, mesh, rules))


def run(config, workdir: str) -> dict:
  # ---- set-up --------------------------------------------------------------
  distributed.setup_host()
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  d = config.data
  vocab = tasks.task_vocabulary(d.task)
  program = build(config, mesh, rules, vocab)
  model, model_cfg = program.model, program.model_config

  # ---- data ----------------------------------------------------------------
  if d.replay_dir:  # a pair set written by a study (D_golden of SFT samples), shuffled
    train_data = stream.replay_iterator(
        d.replay_dir, order="uniform", seed=d.shuffle_seed, global_batch_size=d.batch_size,
        mesh=mesh, rules=rules, virtual_shards=d.virtual_shards or None)
  else:
    train_data = pipeline.make_iterator(
        d.task, "train", "pairs", d.batch_size, prompt_length=d.prompt_len,
        response_length=d.response_len, mesh=mesh, rules=rules, seed=d.shuffle_seed,
        max_records=d.max_records or None, virtual_shards=d.virtual_shards or None)
  num_held_out = d.batch_size * config.eval.num_batches
  if config.eval.pairs_dir:
    held_out = stream.fixed_pairs(config.eval.pairs_dir, num_held_out)
  else:
    held_out = pipeline.fixed_batch(d.task, "validation", "pairs", num_held_out,
                                    prompt_length=d.prompt_len, response_length=d.response_len)

  # ---- state ---------------------------------------------------------------
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 config.train.keep_checkpoints, config.train.async_checkpoint)
  meta = {"experiment": "pm", "model": config.model.name, "vocab_size": model_cfg.vocab_size,
          "vocabulary": vocab_lib.vocabulary_name(vocab)}
  state, start = program.restore_or_create(ckpt, config.seed, meta, train_data,
                                           config.init.backbone, init_keys=("backbone",))
  evaluate = lambda params: held_out_metrics(model, mesh, rules, params, held_out,
                                             d.batch_size)

  # ---- loop ----------------------------------------------------------------
  run_ = bookkeeping.Run(config.train, workdir, ckpt, start, "pm", meta)
  for step in range(start, config.train.num_steps):
    state, metrics = program.step(state, next(train_data))
    if run_.end_of_step(step + 1, state, metrics, train_data.get_state()):
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

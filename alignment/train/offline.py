"""Offline alignment: a registry loss on a fixed set of preference pairs.

The pairs are D_golden (`data.task`), an online run's saved stream replayed
(`data.replay_dir`, in its original order, uniformly shuffled, or shuffled
within windows of `data.replay_window` batches), or any imported task. The
policy starts from the SFT export (`init.policy`); the reference is frozen
(`init.reference`, default the same export). Everything but the source of the
pairs is identical to the online loop: the same step, loss and metrics.

    python -m alignment.main --config=configs/offline.py:tiny --workdir=DIR \\
        --config.init.policy=SFT/export

With `eval.every` > 0 the policy is evaluated every that many steps (and at
the end) against SFT: exact KL, golden win rate, classifier accuracy, ...
(`alignment.evaluation`), logged as eval/* in DIR/metrics.jsonl.
"""
from __future__ import annotations

from alignment import checkpoint, evaluation, layout
from alignment import config as config_lib
from alignment.data import pipeline, stream, tasks
from alignment.models import heads
from alignment.train import bookkeeping, roles, steps
from alignment.train import program as program_lib

REPLAY_ORDERS = {"ordered": "ordered", "shuffled": "uniform", "window": "window"}


def build(config, mesh, rules, vocab, reference_shared: bool = True) -> program_lib.Program:
  """The offline step of `config` on `mesh` (nothing allocated): the same
  alignment step as online, on a fixed pair set, without the judge's veto."""
  d, l = config.data, config.loss
  return program_lib.build(
      "offline", heads.LanguageModel, config, mesh, rules, vocab,
      loss_fn_of=lambda m: steps.alignment_loss_fn(m, l.name, l.beta, l.reduction),
      batch_spec_of=lambda abstract: roles.alignment_input_spec(
          program_lib.pair_batch_spec(d, mesh, rules), abstract.params, reference_shared,
          mesh, rules),
      traced_from=(reference_shared,))


def run(config, workdir: str) -> dict:
  # ---- set-up --------------------------------------------------------------
  meshes, mesh, rules, reference_shared = roles.policy_set_up(config)  # config.roles
  d = config.data
  vocab = tasks.task_vocabulary(d.task)
  program = build(config, mesh, rules, vocab, reference_shared=reference_shared)
  model, model_cfg = program.model, program.model_config

  # ---- data ----------------------------------------------------------------
  if d.replay_dir:
    if d.replay_order not in REPLAY_ORDERS:
      raise config_lib.ConfigError(f"config.data.replay_order={d.replay_order!r}: choose one of "
                                   f"{sorted(REPLAY_ORDERS)}")
    train_data = stream.replay_iterator(
        d.replay_dir, order=REPLAY_ORDERS[d.replay_order], window_batches=d.replay_window,
        seed=d.shuffle_seed, global_batch_size=d.batch_size, mesh=mesh, rules=rules,
        virtual_shards=d.virtual_shards or None)
    if d.replay_skip:  # start k batches into the stream (the paper's shifted replay)
      train_data.set_state(dict(train_data.get_state(), batch=d.replay_skip))
  else:
    train_data = pipeline.make_iterator(
        d.task, "train", "pairs", d.batch_size, prompt_length=d.prompt_len,
        response_length=d.response_len, mesh=mesh, rules=rules, seed=d.shuffle_seed,
        max_records=d.max_records or None, virtual_shards=d.virtual_shards or None)

  # ---- state ---------------------------------------------------------------
  ckpt, meta, state, start = program.start(workdir, config, vocab, train_data,
                                            config.init.policy)
  reference = roles.Reference(model, mesh, meshes[roles.Role.REFERENCE], rules,
                              program.state_shardings.params, config.init, config.data,
                              config.seed, config.loss.reduction)
  evaluator = evaluation.make_evaluator(config.eval, config.data, model,
                                        reference.on_policy_mesh(), mesh, rules,
                                        sft_export=reference.export)

  # ---- loop ----------------------------------------------------------------
  run_ = bookkeeping.Run(config.train, workdir, ckpt, start, "offline", meta)
  tokens = d.batch_size * (d.prompt_len + 2 * d.response_len)
  for step in range(start, config.train.num_steps):
    pairs = next(train_data)
    state, metrics = program.step(state, reference.step_inputs(pairs))
    # Evaluate before the checkpoint of this step, so a resumed log keeps the record.
    evaluation.maybe_evaluate(run_, evaluator, config.eval, config.train.num_steps, step + 1,
                              state.params, tokens=program.tokens)
    if run_.end_of_step(step + 1, state, metrics, train_data.get_state(),
                        extra={"tokens": tokens}):
      break
  final = dict(run_.last_metrics)
  run_.close()

  # ---- export --------------------------------------------------------------
  if not run_.stopped_early:
    checkpoint.export_params(state.params, model_cfg, layout.export(workdir),
                             tokens=program.tokens)
  return final

"""Preference model training: the proxy PM of the paper, or a scalar reward model.

`head="pairwise"` (the paper's PM): (x, y1, y2) -> logit of P(y1 beats y2),
trained by maximum likelihood on the golden labels of D_golden with the order
of each pair randomised per step. `head="reward"`: a Bradley-Terry reward model
r(x, y), P(y1 beats y2) = sigmoid(r1 - r2), on the same pairs (the scalar
rewards of policy-gradient RL; `judges.RewardJudge`).
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

import jax
import jax.numpy as jnp

from alignment import distributed, judges, sharding, timing
from alignment.data import batches as B
from alignment.data import pipeline, stream
from alignment.models import heads
from alignment.train import steps
from alignment.train import program as program_lib


HEADS = {"pairwise": heads.PairwisePreferenceModel, "reward": heads.RewardModel}


@timing.timed("evaluation")
def held_out_metrics(model, mesh, rules, params, pairs, batch_size: int) -> dict:
  """Debiased accuracy, raw accuracy and position bias on fixed pairs (a reward
  model is antisymmetric: its raw accuracy is its accuracy, its bias 1/2)."""
  if isinstance(model, heads.RewardModel):
    compare = judges.RewardJudge(model, params, mesh, rules)

    def raw(p, x, xm, y1, m1, y2, m2):  # the logit r1 - r2, with compare's parameters
      del p
      return (compare.rewards(B.PromptBatch(x, xm), y1, m1) -
              compare.rewards(B.PromptBatch(x, xm), y2, m2))
  else:
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
  """The step of `config` on `mesh` (nothing allocated): the pairwise PM
  (`head="pairwise"`) or a Bradley-Terry scalar reward model (`head="reward"`)."""
  reward = config.head == "reward"
  return program_lib.build(
      "rm" if reward else "pm", HEADS[config.head], config, mesh, rules, vocab,
      loss_fn_of=steps.reward_model_loss_fn if reward else steps.preference_model_loss_fn,
      batch_spec_of=lambda abstract: program_lib.pair_batch_spec(config.data, mesh, rules))


def run(config, workdir: str) -> dict:
  # ---- set-up --------------------------------------------------------------
  mesh, rules, vocab = program_lib.set_up(config)
  d = config.data
  program = build(config, mesh, rules, vocab)
  model = program.model

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
  ckpt, meta, state, start = program.start(workdir, config, vocab, train_data,
                                            config.init.backbone, init_keys=("backbone",))
  evaluate = lambda params: held_out_metrics(model, mesh, rules, params, held_out,
                                             d.batch_size)

  # ---- loop, then the export ------------------------------------------------
  return program_lib.run_supervised(program, state, start, train_data, config, workdir, ckpt,
                                    meta, evaluate)

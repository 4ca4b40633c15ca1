"""Each loop's Program (`<loop>.build`), the step guard's veto and the typed step input."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import aot, programs, sharding
from alignment import config as config_lib
from alignment.data import batches as B
from alignment.train import state as state_lib
from alignment.train import steps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_veto_refuses_the_update_and_says_so():
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  rules = sharding.DEFAULT_RULES
  cfg = config_lib.optimizer_section(learning_rate=0.1, grad_clip=0.0, b2=0.99)
  init = lambda rng: {"w": jnp.ones((3,))}
  state, shardings = state_lib.create(init, state_lib.make_optimizer(cfg), mesh, rules, 0)
  loss_fn = lambda params, batch, rng: (jnp.sum((params["w"] - batch) ** 2), {})
  step = state_lib.make_step(loss_fn, cfg, shardings, sharding.replicated(mesh), mesh, rules,
                             accepts_veto=True)
  target = jnp.zeros((3,))
  w0 = np.asarray(state.params["w"])
  vetoed, m = step(state, target, jnp.asarray(False))
  assert float(m["nonfinite"]) == 1.0 and np.isfinite(float(m["loss"]))
  np.testing.assert_array_equal(np.asarray(vetoed.params["w"]), w0)  # kept as it was
  assert int(vetoed.step) == 1  # the step (and its key) still advance: the batch is spent
  taken, m = step(vetoed, target, jnp.asarray(True))
  assert float(m["nonfinite"]) == 0.0
  assert np.all(np.asarray(taken.params["w"]) < w0)


def test_alignment_input_takes_exactly_one_reference():
  from alignment.models import heads, zoo  # pylint: disable=g-import-not-at-top
  model = heads.LanguageModel(zoo.get("t5-nano", vocab_size=64))
  pairs = B.PreferenceBatch(*(np.ones((2, n), np.int32) for n in (3, 3, 4, 4, 4, 4)))
  params = model.init(jax.random.PRNGKey(0), pairs.prompt, pairs.prompt_mask, pairs.chosen,
                      pairs.chosen_mask)["params"]
  loss_fn = steps.alignment_loss_fn(model, "ipo", 0.1)
  for bad in (steps.AlignmentInput(pairs),
              steps.AlignmentInput(pairs, ref_params=params,
                                   ref_logps=(jnp.zeros(2), jnp.zeros(2)))):
    with pytest.raises(ValueError, match="exactly one of ref_params and ref_logps"):
      loss_fn(params, bad, None)
  # Scored in the step, or scored elsewhere and passed in: the same loss.
  rc, rr = steps.pair_logps(model, params, pairs, "sum")
  inside, _ = loss_fn(params, steps.AlignmentInput(pairs, ref_params=params), None)
  outside, _ = loss_fn(params, steps.AlignmentInput(pairs, ref_logps=(rc, rr)), None)
  np.testing.assert_allclose(float(inside), float(outside), rtol=1e-6)


@pytest.mark.parametrize("experiment", ["sft", "pm", "offline"])
def test_each_loop_builds_a_program_the_aot_check_compiles(experiment):
  config = config_lib.load(os.path.join(ROOT, "configs", f"{experiment}.py:tiny"))
  fig = aot.analyse(config)
  assert fig["train_step_compiler"]["temporaries"] > 0
  assert fig["per_device"]["params"] > 0 and fig["per_device"]["optimizer"] > 0
  assert (fig["per_device"]["reference"] > 0) == (experiment == "offline")
  assert "sampler_compiler" not in fig and "proxy_pm" not in fig["per_device"]
  assert aot.render(fig).startswith(f"{experiment} t5-nano")


def test_policy_gradient_program_compiles_with_its_minibatch_and_k_samples():
  config = config_lib.load(os.path.join(ROOT, "configs", "online.py:tiny"))
  config_lib.apply_overrides(config, ["rl.method='grpo'", "rl.samples=4", "rl.updates=2",
                                      "rl.kl='exact'", "train.write_stream=False",
                                      "judge.kind='golden'"])
  fig = aot.analyse(config)
  assert fig["train_step_compiler"]["temporaries"] > 0 and fig["sampler_compiler"]
  from alignment.data import tasks  # pylint: disable=g-import-not-at-top
  from alignment.train import online  # pylint: disable=g-import-not-at-top
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  program = online.build(config, mesh, rules, tasks.task_vocabulary(config.data.task))
  spec = program.train.batch_spec
  assert spec.response.shape == (config.data.batch_size * 4 // 2, config.data.response_len)
  assert spec.ref_params is not None and program.sampler.config.num_samples == 4


def test_the_online_sampler_takes_its_vocabulary_s_ids(tmp_path):
  """A Llama-3-style tokenizer.json (EOS its last id, no PAD): the online program's
  sampler stops at that EOS and keeps no id out (id 0 is a real token there), and
  its export record names the tokenizer; the package's vocabulary keeps 1 and 0."""
  from hf_tokenizer import FIXTURES, build_tokenizer  # pylint: disable=g-import-not-at-top
  from alignment.data import import_pairs, tasks  # pylint: disable=g-import-not-at-top
  from alignment.data import vocab as V  # pylint: disable=g-import-not-at-top
  from alignment.train import online  # pylint: disable=g-import-not-at-top
  config = config_lib.load(os.path.join(ROOT, "configs", "online.py:tiny"))
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  ours = online.build(config, mesh, rules, tasks.task_vocabulary(config.data.task))
  assert (ours.sampler.config.eos_id, ours.sampler.config.pad_id) == (1, 0)
  tok = build_tokenizer(str(tmp_path / "tok" / "tokenizer.json"))
  data = str(tmp_path / "imp")
  import_pairs.import_file(os.path.join(FIXTURES, "tldr.jsonl"), "tldr", data, vocab=tok,
                           max_prompt_tokens=config.data.prompt_len,
                           max_response_tokens=config.data.response_len, on_long="truncate",
                           name=f"bpe_{tmp_path.name}")
  config_lib.apply_overrides(config, [f"data.task={data!r}", "model.name='llama-nano'"])
  vocab = tasks.task_vocabulary(data)
  program = online.build(config, mesh, rules, vocab)
  assert vocab.eos_id == vocab.vocab_size - 1 > 1
  assert (program.sampler.config.eos_id, program.sampler.config.pad_id) == (vocab.eos_id, None)
  assert program.train.tokens == V.token_record(vocab)
  assert program.train.tokens["vocabulary"] == os.path.abspath(tok)


# Run under XLA's default CPU back end, as `make study` and every run compile: the
# session's cheap codegen (tests/xla_env.py) gives two programs doing the same arithmetic
# bits that can differ in the last place (here 1 element in 35, 1 ulp), the default back
# end the same bits.
_RATE_BITS = """
import jax, numpy as np
from alignment import config as config_lib
from alignment.train import state as state_lib
rng = np.random.default_rng(0)
params = {"w": rng.normal(size=(7, 5)).astype(np.float32),
          "b": rng.normal(size=(5,)).astype(np.float32)}
grads = [jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
         for _ in range(8)]
bad = []
for schedule, warmup in (("constant", 0), ("constant", 2), ("cosine", 3), ("linear", 2)):
  for rate in (0.1, 3e-5 * 0.3, 1e-5 / 3):
    cfg = config_lib.optimizer_section(
        learning_rate=rate, schedule=schedule, warmup_steps=warmup, decay_steps=5,
        weight_decay=0.01, grad_clip=0.5, b2=0.99)
    fixed = state_lib.make_optimizer(cfg)
    as_constant = jax.jit(lambda g, s, p: fixed.update(g, s, p))
    as_input = jax.jit(lambda g, s, p, r: state_lib.make_optimizer(cfg, r).update(g, s, p))
    s1 = s2 = fixed.init(params)
    for i, g in enumerate(grads):
      u1, s1 = as_constant(g, s1, params)
      u2, s2 = as_input(g, s2, params, np.float32(rate))
      bad += [(schedule, warmup, rate, i, k) for k in params
              if not np.array_equal(np.asarray(u1[k]), np.asarray(u2[k]))]
print("differ:", bad if bad else "none")
"""


def test_the_learning_rate_as_an_input_gives_the_bits_of_the_rate_as_a_constant():
  """The train step takes its learning rate as an input (`state.Step`); the optimiser's
  updates are bit for bit those of the rate compiled in as a constant, the way the step
  was built before: with and without warm-up, each schedule, clipping and weight decay,
  over steps that cross the warm-up, under the default back end (`_RATE_BITS`)."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  out = subprocess.run([sys.executable, "-c", _RATE_BITS], cwd=ROOT, env=env, text=True,
                       capture_output=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "differ: none" in out.stdout, out.stdout


def test_programs_built_again_in_a_process_are_not_traced_again():
  """A study builds the same samplers, evaluation scorers and restore targets in every
  stage: built again they are the same jitted programs (traced and compiled once), and
  anything that differs (here the number of samples) gets its own."""
  from alignment import evaluation, sampling  # pylint: disable=g-import-not-at-top
  from alignment.data import tasks  # pylint: disable=g-import-not-at-top
  from alignment.models import zoo  # pylint: disable=g-import-not-at-top
  from alignment.train import online  # pylint: disable=g-import-not-at-top
  config = config_lib.load(os.path.join(ROOT, "configs", "online.py:tiny"))
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  vocab = tasks.task_vocabulary(config.data.task)
  a, b = (online.build(config, mesh, rules, vocab) for _ in range(2))
  assert a.sampler is not b.sampler and a.sampler._jitted is b.sampler._jitted
  small = [programs.shared(online._contrastive_programs, mesh, rules,
                           p.train.batch_shardings.pairs, p.sampler.out_sharding)
           for p in (a, b)]  # the contrastive phases' split, rank, stats and mix
  assert all(x is y for x, y in zip(*small))
  config_lib.apply_overrides(config, ["rl.method='rloo'", "rl.samples=4"])
  assert online.build(config, mesh, rules, vocab).sampler._jitted is not a.sampler._jitted
  model = a.train.model
  plain = [sampling.Sampler(model, sampling.SamplingConfig(max_new_tokens=4), mesh, rules)
           for _ in range(2)]
  assert plain[0]._jitted is plain[1]._jitted is not a.sampler._jitted
  assert evaluation._scorers(model, mesh, rules) == evaluation._scorers(model, mesh, rules)
  targets = [zoo.sharded_abstract_params(model, config.data, mesh, rules) for _ in range(2)]
  assert targets[0] == targets[1] and targets[0] is not targets[1]
  unhashable = [list(r) for r in rules]  # rules as lists: built every time, as they were
  assert (sampling.Sampler(model, plain[0].config, mesh, unhashable)._jitted
          is not plain[0]._jitted)
  from alignment import judges  # pylint: disable=g-import-not-at-top
  from alignment.models import heads  # pylint: disable=g-import-not-at-top
  pm, rm = heads.make_model(model.cfg, "pairwise"), heads.make_model(model.cfg, "reward")
  assert judges.ModelJudge(pm, None, mesh, rules)._compare is \
      judges.ModelJudge(pm, None, mesh, rules)._compare
  assert judges.RewardJudge(rm, None, mesh, rules)._rewards is \
      judges.RewardJudge(rm, None, mesh, rules)._rewards
  assert judges.ModelJudge(pm, None, mesh, unhashable)._compare is not \
      judges.ModelJudge(pm, None, mesh, rules)._compare


def test_train_steps_are_shared_by_stages_of_one_shape(monkeypatch):
  """A study's arms, seeds and learning rates build the same train step: what a step
  never reads (seed, data order and source, evaluation, initialisation, bookkeeping,
  the number of steps) and its learning rate (an input: a rate search's pilots, a grid over rates) do not
  keep them apart, and the shared step gives the bits a freshly built one gives, each
  at its own rate. Anything it is traced from does: the loss, the rest of the
  optimiser, the input's shape, where the reference runs, a planned fault."""
  from alignment.data import tasks  # pylint: disable=g-import-not-at-top
  from alignment.train import offline  # pylint: disable=g-import-not-at-top
  base = config_lib.load(os.path.join(ROOT, "configs", "offline.py:tiny"))
  mesh, rules = sharding.mesh_and_rules(base.mesh)
  vocab = tasks.task_vocabulary(base.data.task)

  def build(overrides=(), shared=True):
    c = config_lib.load(os.path.join(ROOT, "configs", "offline.py:tiny"))
    config_lib.apply_overrides(c, list(overrides))
    return offline.build(c, mesh, rules, vocab, reference_shared=shared)

  first = build()
  other = ["seed=7", "data.shuffle_seed=3", "data.replay_dir='/elsewhere'",
           "eval.steps=[1]", "init.policy='/some/export'", "train.checkpoint_every=1",
           "train.log_every=3", "train.num_steps=3"]
  second = build(other)
  assert second.step.jitted is first.step.jitted and second.model is not first.model
  faster = build(other + ["optimizer.learning_rate=0.01"])
  assert faster.step.jitted is first.step.jitted
  assert (faster.step.learning_rate, first.step.learning_rate) == (
      0.01, base.optimizer.learning_rate)
  assert faster.abstract_state is first.abstract_state
  for apart in (["loss.beta=0.3"], ["optimizer.b2=0.95"], ["optimizer.schedule='cosine'"],
                ["data.batch_size=4"], ["loss.name='dpo'"]):
    assert build(apart).step.jitted is not first.step.jitted, apart
  assert build(shared=False).step.jitted is not first.step.jitted
  monkeypatch.setenv("ALIGNMENT_FAULT", "nan@loss:1")
  assert build().step.jitted is not first.step.jitted
  monkeypatch.delenv("ALIGNMENT_FAULT")

  def one_step(program):
    state, _ = state_lib.create(program.init, program.optimizer, mesh, rules, 7)
    batch = jax.tree.map(lambda x: jax.device_put(np.ones(x.shape, x.dtype), x.sharding),
                         program.batch_spec)
    new, metrics = program.step(state, batch)
    return jax.tree.map(np.asarray, (new.params, metrics))

  got, got_faster = one_step(second), one_step(faster)
  programs.clear()
  fresh = build(other)
  assert fresh.step.jitted is not first.step.jitted
  jax.tree.map(np.testing.assert_array_equal, one_step(fresh), got)
  programs.clear()
  jax.tree.map(np.testing.assert_array_equal,
               one_step(build(other + ["optimizer.learning_rate=0.01"])), got_faster)
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got[0]),
                                                    jax.tree.leaves(got_faster[0]))]
  assert any(moved)  # each at its own rate


def test_an_evaluator_built_again_reuses_what_it_compares_with(tmp_path, monkeypatch):
  """A study's stages build an evaluator each, against the same SFT and reference: the
  reference's samples and golden scores and the SFT's log-probs of the held-out pairs
  are computed once per process, keyed on the parameters' checksums, and equal what
  a fresh evaluator computes; other SFT parameters are computed afresh."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from alignment import evaluation  # pylint: disable=g-import-not-at-top
  from alignment.data import tasks  # pylint: disable=g-import-not-at-top
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from alignment.models import heads, zoo  # pylint: disable=g-import-not-at-top
  config = config_lib.load(os.path.join(ROOT, "configs", "eval.py:tiny"))
  config_lib.apply_overrides(config, ["eval.win_prompts=32", "eval.kl_prompts=16",
                                      "eval.classifier_pairs=16", "eval.batch_size=16"])
  vocab = tasks.task_vocabulary(config.data.task)
  model = heads.LanguageModel(zoo.from_section(config.model, vocab_lib.model_vocab_size(vocab)))
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  init = jax.jit(heads.init_fn(model, config.data.prompt_len, config.data.response_len))
  params = [nn.unbox(init(jax.random.PRNGKey(k))) for k in (2, 3)]
  computed = []
  for name in ("_sample", "_pair_logps", "_golden_scores"):
    real = getattr(evaluation.Evaluator, name)
    monkeypatch.setattr(evaluation.Evaluator, name,
                        lambda self, *a, _n=name, _f=real, **k: computed.append(_n) or
                        _f(self, *a, **k))
  build = lambda p: evaluation.build_evaluator(config.eval, config.data, model, p, mesh, rules)
  evaluation.forget()
  first = build(params[0])
  assert sorted(computed) == ["_golden_scores", "_pair_logps", "_sample"]
  computed.clear()
  again = build(params[0])
  assert computed == [] and again.ref_samples is first.ref_samples
  assert not again.ref_samples["tokens"].flags.writeable
  other = build(params[1])  # another SFT (and reference): all of it again
  assert sorted(computed) == ["_golden_scores", "_pair_logps", "_sample"]
  evaluation.forget()
  fresh = build(params[0])
  (m1, a1), (m2, a2) = again.evaluate(params[1]), fresh.evaluate(params[1])
  assert m1 == m2
  for k in a1:
    np.testing.assert_array_equal(a1[k], a2[k], err_msg=k)
  assert other.evaluate(params[1])[0] != m1  # its reference and SFT are the policy itself


@pytest.mark.parametrize("override,message", [
    ("rl.samples=3", "the contrastive losses compare 2 samples"),
    ("rl.method='ppo'", "config.rl.method='ppo'"),
    ("rl.updates=2", "several updates per batch are GRPO's"),
])
def test_rl_section_checks_itself(override, message):
  config = config_lib.load(os.path.join(ROOT, "configs", "online.py:tiny"))
  config_lib.apply_overrides(config, [override])
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(config, 8)


def test_policy_gradient_refuses_the_stream_it_cannot_write():
  config = config_lib.load(os.path.join(ROOT, "configs", "online.py:tiny"))
  config_lib.apply_overrides(config, ["rl.method='rloo'", "rl.samples=4"])
  with pytest.raises(config_lib.ConfigError, match="config.train.write_stream"):
    config_lib.validate(config, 8)


def test_stale_params_hand_out_the_parameters_of_k_steps_before():
  from alignment.train import rollouts  # pylint: disable=g-import-not-at-top
  params = {"w": jnp.zeros(3)}
  fresh = rollouts.StaleParams(0)
  fresh.record(5, params)
  assert fresh.at(5) == (params, 5)  # k = 0: the very same parameters
  stale = rollouts.StaleParams(2)
  handed = []
  for step in range(10, 15):
    stale.record(step, params)
    p, s = stale.at(step)
    handed.append((float(p["w"][0]), s))
    params = {"w": params["w"] + 1.0}  # the update (which may donate the old buffers)
  assert handed == [(0.0, 10), (0.0, 10), (0.0, 10), (1.0, 11), (2.0, 12)]
  # Before step 15's parameters exist, step 15 may already sample (the overlap): those
  # of step 13, recorded.
  assert float(stale.at(15)[0]["w"][0]) == 3.0 and stale.at(15)[1] == 13
  with pytest.raises(ValueError, match="step 20"):
    stale.at(20)


def test_a_model_with_fewer_ids_than_its_data_vocabulary_is_refused_before_compiling():
  from alignment.data import tasks  # pylint: disable=g-import-not-at-top
  from alignment.train import sft  # pylint: disable=g-import-not-at-top
  config = config_lib.load(os.path.join(ROOT, "configs", "sft.py:tiny"))
  vocab = tasks.task_vocabulary(config.data.task)  # the environment's 165 words and specials
  mesh, rules = sharding.mesh_and_rules(config.mesh)
  config_lib.set_key(config, "model.vocab_size", vocab.vocab_size - 1, "test")
  with pytest.raises(config_lib.ConfigError, match=(
      rf"config.model \(t5-nano, vocab_size={vocab.vocab_size - 1}\) and config.data.task="
      rf"'env_tiny_sft': the model has {vocab.vocab_size - 1} token ids, fewer than the "
      rf"{vocab.vocab_size} of its data's vocabulary sentencepiece; set "
      rf"config.model.vocab_size=0 \(the data's\) or at least {vocab.vocab_size}")):
    sft.build(config, mesh, rules, vocab)
  config_lib.set_key(config, "model.vocab_size", vocab.vocab_size, "test")
  assert sft.build(config, mesh, rules, vocab).model_config.vocab_size == vocab.vocab_size

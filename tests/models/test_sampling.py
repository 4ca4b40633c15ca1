"""The sampler against independent oracles.

- greedy decoding equals Hugging Face `generate` token for token;
- sampled frequencies match the model's softmax after temperature, top-k and
  top-p, recomputed here in numpy from the training forward (chi-square);
- the sampler's log-probs equal re-scoring with `scoring`;
- the 2 x 2 x 2 mesh samples what one device samples.
"""
import flax.linen as nn
import jax
import numpy as np
import pytest
from scipy import stats

import hf_models  # noqa: E402  (skips the module without torch/transformers)

from alignment import sampling, scoring, sharding  # noqa: E402
from alignment.data.batches import PAD_ID, PromptBatch  # noqa: E402
from alignment.models import heads, zoo  # noqa: E402

# Needs torch and transformers: the module imports hf_models (HF generate is an oracle,
# and its `ragged` makes the other tests' prompts).
pytestmark = [pytest.mark.hf]


def _init(cfg, prompt_len=4, seed=0):
  model = heads.LanguageModel(cfg)
  p = np.ones((1, prompt_len), np.int32)
  params = jax.jit(lambda k: nn.unbox(model.init(k, p, p, p, p)))(jax.random.key(seed))
  return model, params["params"]


# --------------------------------------------------------------------------
# Config validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -1),
    ("num_samples", 0), ("max_new_tokens", 0), ("cache_dtype", "int8"), ("eos_id", PAD_ID),
    ("eos_id", -1), ("pad_id", -1), ("pad_id", 1.5),
])
def test_config_rejects_out_of_range_values(field, value):
  with pytest.raises(sampling.SamplingConfigError, match=rf"SamplingConfig\.{field}="):
    sampling.SamplingConfig(**{field: value})


def test_config_accepts_the_edges():
  assert sampling.SamplingConfig(temperature=0).is_greedy
  assert not sampling.SamplingConfig(top_p=1.0, top_k=0, eos_id=None).is_greedy


# --------------------------------------------------------------------------
# Greedy decoding against Hugging Face generate
# --------------------------------------------------------------------------


# EOS ids are tokens that greedy decoding of these seeds emits mid-sequence in
# some rows and never in others, so that per-row stopping is exercised.
@pytest.mark.parametrize("arch,eos_id", [("t5", 94), ("llama", 59)])
def test_greedy_equals_hf_generate(arch, eos_id):
  hf = hf_models.tiny_hf_t5(init_factor=3.0) if arch == "t5" else hf_models.tiny_hf_llama()
  cfg, params = hf_models.to_zoo(hf)
  prompt, pmask = hf_models.ragged(np.random.default_rng(0), 8, 7, 96, left=True)
  t = 12
  theirs = hf_models.hf_greedy(hf, prompt, pmask, t, eos_id, PAD_ID)
  config = sampling.SamplingConfig(max_new_tokens=t, greedy=True, eos_id=eos_id)
  out = sampling.Sampler(heads.LanguageModel(cfg), config)(
      params, PromptBatch(prompt, pmask), jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(out.tokens), theirs)
  finished = np.asarray(out.finished)
  assert finished.any() and not finished.all()  # the oracle covered both cases
  lengths = np.asarray(out.lengths)
  for row, length in zip(np.asarray(out.tokens), lengths):
    assert (row[:length - 1] != eos_id).all()
  np.testing.assert_array_equal(np.asarray(out.mask),
                                (np.arange(t)[None] < lengths[:, None]).astype(np.int32))


# --------------------------------------------------------------------------
# Sampled frequencies against the model's softmax
# --------------------------------------------------------------------------


def _reference_probs(logits_v, temperature, top_k, top_p, pad_drawable=False):
  """The sampling distribution, written out independently of `sampling`: PAD is
  never drawn (suppressed before anything else, as Hugging Face's suppress_tokens)."""
  z = np.asarray(logits_v, np.float64) / temperature
  if not pad_drawable:
    z[PAD_ID] = -np.inf
  order = np.argsort(-z, kind="stable")
  keep = np.zeros(z.shape, bool)
  keep[order[:top_k or len(z)]] = True
  probs = np.where(keep, np.exp(z - z.max()), 0.0)
  probs /= probs.sum()
  if top_p < 1:
    mass = 0.0
    for i in order:  # most likely first, until the kept mass reaches top_p
      if not keep[i]:
        break
      if mass >= top_p:
        keep[i] = False
      mass += probs[i]
    probs = np.where(keep, probs, 0.0) / np.sum(np.where(keep, probs, 0.0))
  return probs


def _chi_square_pvalue(counts, expected_probs):
  """p-value of counts against probabilities; impossible outcomes seen give 0."""
  n = counts.sum()
  expected = expected_probs * n
  if np.any((expected_probs == 0) & (counts > 0)):
    return 0.0
  big = expected >= 5  # pool the rare cells so the chi-square approximation holds
  obs = np.append(counts[big], counts[~big].sum())
  exp = np.append(expected[big], expected[~big].sum())
  if exp[-1] == 0:
    obs, exp = obs[:-1], exp[:-1]
  return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


FREQ_V, FREQ_N = 12, 24000


@pytest.fixture(scope="module")
def two_token_model():
  """A t5-nano over 12 tokens, its prompt, and the forward's logits for every prefix.

  first_v: logits of token 0; second_vv[a]: logits of token 1 after token 0 = a.
  """
  cfg = zoo.get("t5-nano", vocab_size=FREQ_V)
  model, params = _init(cfg, seed=3)
  prompt = np.array([[0, 0, 5, 7, 3, 9]], np.int32)
  pmask = (prompt != 0).astype(np.int32)
  responses = np.stack([np.arange(FREQ_V), np.zeros(FREQ_V)], 1).astype(np.int32)
  logits = jax.jit(model.apply)({"params": params}, np.repeat(prompt, FREQ_V, 0),
                                np.repeat(pmask, FREQ_V, 0), responses, np.ones_like(responses))
  logits = np.asarray(logits, np.float64)
  return model, params, PromptBatch(prompt, pmask), logits[0, 0], logits[:, 1]


def test_without_a_pad_id_id_0_is_drawn_at_its_softmax_frequency(two_token_model):
  """pad_id=None (a vocabulary without padding, Llama 3's id 0 being "!"): every id is
  drawn as the written-out softmax says, PAD's cell included."""
  model, params, prompts, first_v, second_vv = two_token_model
  config = sampling.SamplingConfig(max_new_tokens=2, temperature=0.8, num_samples=FREQ_N,
                                   eos_id=None, pad_id=None)
  tokens = np.asarray(sampling.Sampler(model, config)(params, prompts, jax.random.key(8)).tokens)
  counts = np.bincount(tokens[:, 0] * FREQ_V + tokens[:, 1], minlength=FREQ_V ** 2)
  assert _chi_square_pvalue(counts, _joint(first_v, second_vv, 0.8, 0, 1.0,
                                           pad_drawable=True)) > 1e-3
  assert _chi_square_pvalue(counts, _joint(first_v, second_vv, 0.8, 0, 1.0)) == 0.0


def _joint(first_v, second_vv, temperature, top_k, top_p, pad_drawable=False):
  p0 = _reference_probs(first_v, temperature, top_k, top_p, pad_drawable)
  return np.stack([p0[a] * _reference_probs(second_vv[a], temperature, top_k, top_p,
                                            pad_drawable)
                   for a in range(FREQ_V)]).ravel()


# (temperature, top_k, top_p) and the plausible bugs each case must expose:
# each entry of `wrong` is the distribution a buggy sampler would follow.
FREQ_CASES = {
    "temperature": ((0.6, 0, 1.0), [(1.0, 0, 1.0),          # temperature ignored
                                    (1 / 0.6, 0, 1.0),      # multiplied, not divided
                                    (0.7, 0, 1.0)]),        # off by 0.1
    "top_k": ((1.3, 4, 1.0), [(1.3, 3, 1.0), (1.3, 5, 1.0), (1.0, 4, 1.0)]),
    "top_p": ((0.8, 0, 0.72), [(0.8, 0, 0.62), (0.8, 0, 0.82), (1.0, 0, 0.72)]),
    "top_k_and_top_p": ((1.2, 6, 0.8), [(1.2, 0, 0.8), (1.2, 6, 1.0)]),
}


@pytest.mark.parametrize("case", sorted(FREQ_CASES))
def test_sampled_frequencies_match_softmax(two_token_model, case):
  model, params, prompts, first_v, second_vv = two_token_model
  (temperature, top_k, top_p), wrong = FREQ_CASES[case]
  config = sampling.SamplingConfig(max_new_tokens=2, temperature=temperature, top_k=top_k,
                                   top_p=top_p, num_samples=FREQ_N, eos_id=None)
  out = sampling.Sampler(model, config)(params, prompts, jax.random.key(7))
  tokens = np.asarray(out.tokens)
  counts = np.bincount(tokens[:, 0] * FREQ_V + tokens[:, 1], minlength=FREQ_V ** 2)
  expected = _joint(first_v, second_vv, temperature, top_k, top_p)
  if top_p < 1:  # the nucleus boundary must not sit on a float tie
    for logits in [first_v, *second_vv]:
      z = np.sort(np.delete(logits, PAD_ID) / temperature)[::-1][:top_k or FREQ_V]
      cum = np.cumsum(np.exp(z - z.max()) / np.exp(z - z.max()).sum())
      assert np.min(np.abs(cum - top_p)) > 1e-3
  assert _chi_square_pvalue(counts, expected) > 1e-3
  # The same counts reject each buggy distribution, so the test has power.
  for bug in wrong:
    assert _chi_square_pvalue(counts, _joint(first_v, second_vv, *bug)) < 1e-6, bug
  assert not (tokens == PAD_ID).any()  # and PAD, which the model gives mass, is never drawn
  assert _reference_probs(first_v, temperature, 0, 1.0, pad_drawable=True)[PAD_ID] > 1e-3
  if top_p < 1:  # and the nucleus keeping one token more or one fewer than it should
    first_counts = np.bincount(tokens[:, 0], minlength=FREQ_V)
    truncated = _reference_probs(first_v, temperature, top_k, 1.0)
    kept = int(np.sum(_reference_probs(first_v, temperature, top_k, top_p) > 0))
    order = np.argsort(-first_v, kind="stable")
    for k in (kept - 1, kept + 1):
      if 1 <= k <= int(np.sum(truncated > 0)):
        buggy = np.where(np.isin(np.arange(FREQ_V), order[:k]), truncated, 0.0)
        assert _chi_square_pvalue(first_counts, buggy / buggy.sum()) < 1e-6, k
  # Sampling log-probs are those of the sampling distribution.
  p_first = _reference_probs(first_v, temperature, top_k, top_p)
  np.testing.assert_allclose(np.asarray(out.sampling_logprobs)[:, 0],
                             np.log(p_first[tokens[:, 0]]), atol=1e-5)


# --------------------------------------------------------------------------
# Log-probs, EOS handling, determinism
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t5-nano", "llama-nano"])
def test_sampler_logprobs_equal_rescoring(name):
  model, params = _init(zoo.get(name, vocab_size=32), seed=1)
  prompt, pmask = hf_models.ragged(np.random.default_rng(1), 4, 9, 32, left=True)
  config = sampling.SamplingConfig(max_new_tokens=10, temperature=0.7, top_k=20, top_p=0.95,
                                   num_samples=3)
  out = sampling.Sampler(model, config)(params, PromptBatch(prompt, pmask), jax.random.key(2))
  scores = jax.jit(lambda p, b: scoring.score(model, p, b))(params, out.as_batch())
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(scores["token_logprobs"]),
                             atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(out.logprobs).sum(1), np.asarray(scores["sum"]),
                             atol=1e-4, rtol=0)
  mask = np.asarray(out.mask)
  assert 0 < mask.sum() < mask.size  # some rows stopped at EOS
  assert np.all(np.asarray(out.logprobs)[mask == 0] == 0)
  assert np.all(np.asarray(out.tokens)[mask == 0] == PAD_ID)
  # Rows i*n .. i*n+n-1 are samples of prompt i.
  np.testing.assert_array_equal(np.asarray(out.prompt), np.repeat(prompt, 3, axis=0))


@pytest.mark.parametrize("eos_id,pad_id", [(3, PAD_ID), (15, None)])
def test_eos_stops_each_row_and_pads_after(eos_id, pad_id):
  """The package's ids, and a Llama-3-like vocabulary's (EOS its last id, no PAD:
  id 0 is a real token, drawn like any other)."""
  model, params = _init(zoo.get("llama-nano", vocab_size=16))
  prompt, pmask = hf_models.ragged(np.random.default_rng(2), 8, 5, 16, left=True)
  config = sampling.SamplingConfig(max_new_tokens=12, temperature=1.0, num_samples=4,
                                   eos_id=eos_id, pad_id=pad_id)
  out = jax.device_get(sampling.Sampler(model, config)(params, PromptBatch(prompt, pmask),
                                                       jax.random.key(0)))
  assert out.finished.any() and not out.finished.all()
  for row, mask, length, done in zip(out.tokens, out.mask, out.lengths, out.finished):
    eos_at = np.flatnonzero(row == eos_id)
    if done:
      assert length == eos_at[0] + 1 and row[length - 1] == eos_id
    else:
      assert length == 12 and eos_at.size == 0
    assert (row[length:] == PAD_ID).all() and mask.sum() == length and mask[:length].all()
  assert ((out.tokens == PAD_ID) & (out.mask == 1)).any() == (pad_id is None)


def test_any_of_several_eos_ids_stops_a_row():
  """eos_id as a list (Llama 3.1 Instruct's generation_config): a row ends at the
  first of any of them; with one of them alone, the rows it does not end run on
  exactly as before (the same key, the same tokens up to the stop)."""
  model, params = _init(zoo.get("llama-nano", vocab_size=16))
  prompt, pmask = hf_models.ragged(np.random.default_rng(2), 8, 5, 16, left=True)
  run = lambda eos: jax.device_get(sampling.Sampler(model, sampling.SamplingConfig(
      max_new_tokens=12, num_samples=4, eos_id=eos))(params, PromptBatch(prompt, pmask),
                                                     jax.random.key(0)))
  assert sampling.SamplingConfig(eos_id=[3]).eos_id == 3
  with pytest.raises(sampling.SamplingConfigError, match="eos_id"):
    sampling.SamplingConfig(eos_id=[3, PAD_ID])
  one, both = run(3), run([3, 7])
  assert sampling.SamplingConfig(eos_id=[3, 7]).eos_id == (3, 7)
  stopped_by_7 = 0
  for a, b, la, lb in zip(one.tokens, both.tokens, one.lengths, both.lengths):
    stop = np.flatnonzero(np.isin(a[:la], [3, 7]))
    end = stop[0] + 1 if stop.size else la
    assert lb == end and (b[:lb] == a[:lb]).all() and (b[lb:] == PAD_ID).all()
    stopped_by_7 += lb < la and b[lb - 1] == 7
  assert stopped_by_7 > 0  # the second id did stop rows the first alone did not


def test_the_loops_stop_at_every_eos_id_the_policy_export_records(tmp_path):
  """online and evaluation build their SamplingConfig with `with_model_eos`: the
  data vocabulary's EOS plus the list a converted model's vocabulary.json keeps."""
  import json  # pylint: disable=g-import-not-at-top
  ids = {"eos_id": 9, "pad_id": None}
  assert sampling.with_model_eos(ids, "") == ids
  assert sampling.with_model_eos(ids, str(tmp_path)) == ids  # no vocabulary.json
  (tmp_path / "vocabulary.json").write_text(json.dumps({"eos_token_id": 9}))
  assert sampling.with_model_eos(ids, str(tmp_path)) == ids
  (tmp_path / "vocabulary.json").write_text(json.dumps({"eos_token_id": [7, 9, 11]}))
  got = sampling.with_model_eos(ids, str(tmp_path))
  assert got == {"eos_id": (9, 7, 11), "pad_id": None}
  assert sampling.SamplingConfig(**got).eos_id == (9, 7, 11)
  assert sampling.with_model_eos({"eos_id": 1, "pad_id": 7}, str(tmp_path)) == {
      "eos_id": (1, 7, 9, 11), "pad_id": None}


@pytest.mark.parametrize("greedy", [False, True])
def test_never_draws_padding_or_ids_past_the_vocabulary(greedy):
  """A model whose output layer is wider than its vocabulary (the rounded-up size
  the loops build) puts mass on ids no token uses and on PAD; none is drawn."""
  model, params = _init(zoo.get("t5-nano", vocab_size=32), seed=4)
  prompt, pmask = hf_models.ragged(np.random.default_rng(3), 8, 6, 20, left=True)
  config = sampling.SamplingConfig(max_new_tokens=10, temperature=2.0, num_samples=16,
                                   vocab_size=20, greedy=greedy)
  out = jax.device_get(sampling.Sampler(model, config)(params, PromptBatch(prompt, pmask),
                                                       jax.random.key(1)))
  real = out.tokens[out.mask == 1]
  assert real.size and (real != PAD_ID).all() and (real < 20).all()
  wide = sampling.SamplingConfig(max_new_tokens=10, temperature=2.0, num_samples=16)
  unrestricted = jax.device_get(sampling.Sampler(model, wide)(
      params, PromptBatch(prompt, pmask), jax.random.key(1)))
  if not greedy:  # the same model does draw them when not told the vocabulary's size
    assert (unrestricted.tokens[unrestricted.mask == 1] >= 20).any()


class _CountingLM(heads.LanguageModel):
  """Reports each decode step to the host, to observe the loop's early exit."""
  calls = []

  def decode_step(self, state, token_b, t):
    jax.debug.callback(lambda t: _CountingLM.calls.append(int(t)), t)
    return super().decode_step(state, token_b, t)


def test_loop_stops_when_every_row_has_emitted_eos():
  cfg = zoo.get("llama-nano", vocab_size=16)
  _, params = _init(cfg)
  prompt, pmask = hf_models.ragged(np.random.default_rng(5), 4, 5, 16, left=True)
  sampler = sampling.Sampler(_CountingLM(cfg),
                             sampling.SamplingConfig(max_new_tokens=12, num_samples=2))
  _CountingLM.calls.clear()
  out = jax.device_get(sampler(params, PromptBatch(prompt, pmask), jax.random.key(0)))
  jax.effects_barrier()
  assert not out.finished.all() and sorted(_CountingLM.calls) == list(range(11))
  # Make EOS (id 1) overwhelmingly likely: embedding dimension 0 is large for
  # every token, so the normalised hidden state is ~sqrt(D) there, and only
  # EOS reads it. Every row then stops at its first token.
  eos_params = jax.tree.map(lambda x: x, params)
  table = params["backbone"]["token_embed"]["embedding"]
  eos_params["backbone"]["token_embed"]["embedding"] = table.at[:, 0].set(1e3)
  eos_params["lm_head"]["kernel"] = params["lm_head"]["kernel"].at[0, 1].set(1e3)
  _CountingLM.calls.clear()
  out = jax.device_get(sampler(eos_params, PromptBatch(prompt, pmask), jax.random.key(0)))
  jax.effects_barrier()
  assert out.finished.all() and (out.lengths == 1).all() and (out.tokens[:, 0] == 1).all()
  assert not _CountingLM.calls  # the while loop exited without a single decode step


def test_same_key_same_samples_other_key_other_samples():
  model, params = _init(zoo.get("t5-nano", vocab_size=64))
  prompt, pmask = hf_models.ragged(np.random.default_rng(3), 4, 6, 64, left=True)
  sampler = sampling.Sampler(model, sampling.SamplingConfig(max_new_tokens=8, num_samples=2))
  a = sampler(params, PromptBatch(prompt, pmask), jax.random.key(5))
  b = sampler(params, PromptBatch(prompt, pmask), jax.random.key(5))
  c = sampler(params, PromptBatch(prompt, pmask), jax.random.key(6))
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))
  # Two samples of one prompt differ too (each row draws its own noise).
  assert not np.array_equal(np.asarray(a.tokens)[0::2], np.asarray(a.tokens)[1::2])


# --------------------------------------------------------------------------
# Sharded sampling
# --------------------------------------------------------------------------


def _while_bodies(hlo: str) -> str:
  """The text of every while loop's body computation in an HLO module."""
  import re  # pylint: disable=g-import-not-at-top
  names = set(re.findall(r"body=%?([\w.\-]+)", hlo))
  blocks = re.split(r"\n(?=\S)", hlo)  # computations start at column 0
  return "\n".join(b for b in blocks if any(b.lstrip("%").startswith(n + " ") or
                                             b.startswith(f"%{n} ") for n in names))


@pytest.mark.parametrize("name", ["t5-nano", "llama-tiny"])
def test_weights_gathered_once_sample_the_same_and_leave_the_loop_without_gathers(name):
  """Sampler(gather=True) on an FSDP mesh (bfloat16 compute: the cast is exercised):
  the same samples as re-gathering per token, and the compiled decode loop's body
  holds no all-gather, where the plain sampler's does."""
  cfg = zoo.get(name, vocab_size=64, dtype="bfloat16")
  model, params = _init(cfg)
  prompt, pmask = hf_models.ragged(np.random.default_rng(5), 8, 6, 64, left=True)
  config = sampling.SamplingConfig(max_new_tokens=8, temperature=0.9, num_samples=2)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})  # any gather is a weight's
  with sharding.use(mesh, sharding.DEFAULT_RULES):
    shards = sampling.param_shardings(model, mesh, sharding.DEFAULT_RULES)
  sharded_params = jax.device_put(params, shards)
  prompts = PromptBatch(prompt, pmask)
  plain, once = (sampling.Sampler(model, config, mesh, gather=g) for g in (False, True))
  a, b = (s(sharded_params, prompts, jax.random.key(2)) for s in (plain, once))
  np.testing.assert_array_equal(np.asarray(b.tokens), np.asarray(a.tokens))
  np.testing.assert_allclose(np.asarray(b.logprobs), np.asarray(a.logprobs), atol=2e-2)
  bodies = [_while_bodies(s.lower(sharded_params, prompts, jax.random.key(2)).compile()
                          .as_text()) for s in (plain, once)]
  assert all(bodies)
  assert "all-gather" in bodies[0] and "all-gather" not in bodies[1]


@pytest.mark.parametrize("name", ["t5-nano", "llama-tiny"])
def test_mesh_2x2x2_samples_what_one_device_samples(name):
  cfg = zoo.get(name, vocab_size=64)
  model, params = _init(cfg)
  prompt, pmask = hf_models.ragged(np.random.default_rng(4), 8, 6, 64, left=True)
  config = sampling.SamplingConfig(max_new_tokens=8, temperature=0.9, top_p=0.9, num_samples=2)
  one = sampling.Sampler(model, config)(params, PromptBatch(prompt, pmask), jax.random.key(1))
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sampler = sampling.Sampler(model, config, mesh)
  with sharding.use(mesh, sharding.DEFAULT_RULES):
    shards = sampling.param_shardings(model, mesh, sharding.DEFAULT_RULES)
  sharded_params = jax.device_put(params, shards)
  assert sum(not s.is_fully_replicated for s in jax.tree.leaves(shards)) > 0
  out = sampler(sharded_params, PromptBatch(prompt, pmask), jax.random.key(1))
  assert len(out.tokens.sharding.device_set) == 8
  assert not out.tokens.sharding.is_fully_replicated
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(one.tokens))
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(one.logprobs), atol=1e-5)
  with pytest.raises(ValueError, match="not divisible by the 4 ways"):
    sampler(sharded_params, PromptBatch(prompt[:6], pmask[:6]), jax.random.key(1))

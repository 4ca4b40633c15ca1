"""Our zoo models against Hugging Face transformers (independent oracle)."""
import jax
import numpy as np
import pytest

import hf_models  # noqa: E402  (skips the module without torch/transformers)

from alignment.models import convert, heads, zoo  # noqa: E402

# Needs torch and transformers (Hugging Face models are the oracle).
pytestmark = [pytest.mark.hf]


def _zoo_greedy(cfg, params, prompt, pmask, t, eos_id):
  import jax  # pylint: disable=g-import-not-at-top
  from alignment import sampling  # pylint: disable=g-import-not-at-top
  from alignment.data.batches import PromptBatch  # pylint: disable=g-import-not-at-top
  config = sampling.SamplingConfig(max_new_tokens=t, greedy=True, eos_id=eos_id)
  out = sampling.Sampler(heads.LanguageModel(cfg), config)(
      params, PromptBatch(prompt, pmask), jax.random.key(0))
  return np.asarray(out.tokens)


@pytest.mark.parametrize("original", [False, True])
def test_t5_logits_match_hf(original):
  """T5 v1.1 (gated-GELU, unscaled) and original T5 (ReLU, tied and scaled)."""
  hf = hf_models.tiny_hf_t5(original=original)
  cfg, params = hf_models.to_zoo(hf)
  assert cfg.tie_embeddings == original == hf.config.scale_decoder_outputs
  assert cfg.feed_forward == ("relu" if original else "gated-gelu")
  prompt, pmask, response, rmask = hf_models.batch(0, lp=7)
  theirs = hf_models.hf_t5_logits(hf, prompt, pmask, response)
  hf_models.assert_logits_match(hf_models.zoo_logits(cfg, params, prompt, pmask, response, rmask), theirs, rmask)


@pytest.mark.parametrize("tie", [False, True])
def test_llama_logits_match_hf(tie):
  hf = hf_models.tiny_hf_llama(tie=tie)
  cfg, params = hf_models.to_zoo(hf)
  assert cfg.tie_embeddings == tie
  batch = hf_models.batch(1)
  hf_models.assert_logits_match(hf_models.zoo_logits(cfg, params, *batch), hf_models.hf_decoder_logits(hf, *batch),
                       batch[3])


DECODER_VARIANTS = {
    "llama3_rope": dict(rope_parameters=hf_models.LLAMA3_ROPE),
    "qwen2": dict(qwen2=True),
    "llama_attention_bias": dict(attention_bias=True, tie=True),
}


@pytest.mark.parametrize("variant", list(DECODER_VARIANTS))
def test_decoder_variants_match_hf(variant):
  """Logits within 1e-4 and greedy decoding equal to `generate`; without the
  variant's feature (RoPE scaling, biases) the logits would differ."""
  # initializer_range 0.2 (not 0.02) makes attention, hence positions, matter.
  hf = hf_models.tiny_hf_llama(seed=5, initializer_range=0.2, **DECODER_VARIANTS[variant])
  cfg, params = hf_models.to_zoo(hf)
  batch = hf_models.batch(2)
  ours = hf_models.zoo_logits(cfg, params, *batch)
  diff = hf_models.assert_logits_match(ours, hf_models.hf_decoder_logits(hf, *batch), batch[3])
  if variant == "llama3_rope":
    assert cfg.rope_type == "llama3" and cfg.rope_original_max_positions == 64
    # The same weights (same seed) under unscaled RoPE, run by HF (no compile here).
    plain = hf_models.tiny_hf_llama(seed=5, initializer_range=0.2)
    without = hf_models.hf_decoder_logits(plain, *batch)
  else:
    assert cfg.qkv_bias and cfg.out_bias == (variant == "llama_attention_bias")
    zeroed = jax.tree_util.tree_map_with_path(
        lambda p, x: 0 * x if "bias" in jax.tree_util.keystr(p) else x, params)
    without = hf_models.zoo_logits(cfg, zeroed, *batch)
  assert np.abs(without - ours)[batch[3].astype(bool)].max() > 100 * max(diff, 1e-4)
  if variant == "llama_attention_bias":
    return  # greedy decoding of biased attention is covered by qwen2's
  prompt, pmask = hf_models.ragged(np.random.default_rng(3), 4, 7, 96, left=True)
  np.testing.assert_array_equal(_zoo_greedy(cfg, params, prompt, pmask, 8, 1),
                                hf_models.hf_greedy(hf, prompt, pmask, 8, 1))


def test_flan_t5_config_imports_exactly():
  """A FLAN-T5 / T5 v1.1 config.json: gated-GELU (gelu_new), untied lm_head, no
  d_model**-0.5 scaling. transformers 5 ties a fresh model's lm_head to `shared`,
  so it is drawn apart here: a converter that read `shared` would fail."""
  hf = hf_models.tiny_hf_flan_t5()
  cfg, params = hf_models.to_zoo(hf)
  assert not cfg.tie_embeddings
  assert convert.config_from_hf(hf_models.flan_t5_config()) == cfg  # the file itself, as written
  prompt, pmask, response, rmask = hf_models.batch(4, lp=7)
  theirs = hf_models.hf_t5_logits(hf, prompt, pmask, response)
  hf_models.assert_logits_match(hf_models.zoo_logits(cfg, params, prompt, pmask, response, rmask), theirs, rmask)


def test_convert_cli_round_trip(tmp_path):
  """save_pretrained -> `convert` CLI -> load_params gives the same logits as HF."""
  import jax  # pylint: disable=g-import-not-at-top
  from alignment import checkpoint, sharding
  hf = hf_models.tiny_hf_llama(seed=4)
  hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
  out = tmp_path / "zoo"
  assert convert.main(["--hf_dir", str(tmp_path / "hf"), "--output", str(out)]) == 0
  cfg = zoo.load_model_config(str(out / "model_config.json"))
  model = heads.LanguageModel(cfg)
  rng = np.random.default_rng(2)
  prompt, pmask = hf_models.ragged(rng, 2, 4, 96, left=True)
  response, rmask = hf_models.ragged(rng, 2, 3, 96, left=False)
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  abstract = jax.eval_shape(lambda k: model.init(k, prompt, pmask, response, rmask)["params"],
                            jax.random.PRNGKey(0))
  shardings = sharding.logical_shardings(abstract, mesh, sharding.DEFAULT_RULES)
  target = sharding.abstract_with_shardings(sharding.strip_boxes(abstract), shardings)
  params = checkpoint.load_params(str(out), target)
  ours = hf_models.zoo_logits(cfg, params, prompt, pmask, response, rmask)
  _, want = hf_models.to_zoo(hf)
  np.testing.assert_array_equal(ours, hf_models.zoo_logits(cfg, want, prompt, pmask, response,
                                                           rmask))
  # An existing output is refused, and a bad directory is one clear error.
  assert convert.main(["--hf_dir", str(tmp_path / "hf"), "--output", str(out)]) == 2
  assert convert.main(["--hf_dir", str(tmp_path), "--output", str(tmp_path / "x")]) == 2


_LLAMA = {"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "vocab_size": 10,
          "intermediate_size": 8, "num_hidden_layers": 1, "max_position_embeddings": 32}


@pytest.mark.parametrize("config,match", [
    ({"model_type": "t5", "feed_forward_proj": "gated-relu"}, "feed_forward_proj='gated-relu'"),
    (hf_models.flan_t5_config(dense_act_fn="gelu"), "dense_act_fn='gelu'"),
    ({"model_type": "t5", "feed_forward_proj": "relu", "is_gated_act": True},
     "is_gated_act=True"),
    ({"model_type": "gpt2"}, "model_type='gpt2'"),
    # The silent wrong conversion: transformers 5 keeps scaling in rope_parameters.
    (dict(_LLAMA, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}),
     r"rope_parameters\.rope_type='yarn'"),
    (dict(_LLAMA, rope_scaling={"type": "dynamic", "factor": 2.0}),
     r"rope_scaling\.rope_type='dynamic'"),
    (dict(_LLAMA, rope_scaling={"rope_type": "llama3", "factor": 8.0}),
     "rope_scaling of rope_type 'llama3' has no 'low_freq_factor'"),
    (dict(_LLAMA, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                   "attention_factor": 2.0}),
     r"rope_parameters has \['attention_factor'\]"),
    (dict(_LLAMA, rope_parameters={"rope_theta": 1e4, "partial_rotary_factor": 0.5}),
     "rope_parameters.partial_rotary_factor=0.5"),
    (dict(_LLAMA, mlp_bias=True), "mlp_bias=true"),
    (dict(_LLAMA, hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(_LLAMA, model_type="qwen2", use_sliding_window=True, sliding_window=8),
     "use_sliding_window=true"),
    (dict(_LLAMA, model_type="qwen2", layer_types=["sliding_attention"]),
     r"layer_types has \['sliding_attention'\]"),
])
def test_unsupported_configs_are_named(config, match):
  with pytest.raises(convert.ConversionError, match=match):
    convert.config_from_hf(config)


def test_llama3_rope_read_from_either_key():
  """rope_scaling (transformers 4) and rope_parameters (5) give the same config;
  original_max_position_embeddings falls back to max_position_embeddings."""
  old = dict(_LLAMA, rope_theta=5e5, rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                  "low_freq_factor": 1.0,
                                                  "high_freq_factor": 4.0})
  new = dict(_LLAMA, rope_parameters={"rope_type": "llama3", "factor": 8.0,
                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 32,
                                      "rope_theta": 5e5})
  a, b = convert.config_from_hf(old), convert.config_from_hf(new)
  assert a == b and a.rope_type == "llama3" and a.rope_theta == 5e5
  assert a.rope_llama3 == (8.0, 1.0, 4.0, 32.0)


# Released config.json files (abridged only of keys the converter ignores).
LLAMA_3_2_1B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "head_dim": 64,
    "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "vocab_size": 128256}
QWEN2_5_0_5B = {
    "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu", "hidden_size": 896,
    "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
    "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 32768, "tie_word_embeddings": True, "use_sliding_window": False,
    "vocab_size": 151936}


def test_released_configs_convert_to_the_zoo():
  from alignment.models import zoo  # pylint: disable=g-import-not-at-top
  assert convert.config_from_hf(LLAMA_3_2_1B) == zoo.get("llama-1b")
  qwen = convert.config_from_hf(QWEN2_5_0_5B)
  assert (qwen.qkv_bias, qwen.out_bias, qwen.rope_type, qwen.rope_theta, qwen.head_dim) == (
      True, False, "default", 1e6, 64)

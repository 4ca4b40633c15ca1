"""Our zoo models against Hugging Face transformers (independent oracle)."""
import numpy as np
import pytest

import hf_models  # noqa: E402  (skips the module without torch/transformers)
import torch  # noqa: E402

from alignment.models import convert, heads  # noqa: E402

# Needs torch and transformers (Hugging Face models are the oracle).
pytestmark = [pytest.mark.hf]


def test_t5_logits_match_hf():
  hf = hf_models.tiny_hf_t5()
  cfg, params = hf_models.to_zoo(hf)
  rng = np.random.default_rng(0)
  prompt, pmask = hf_models.ragged(rng, 3, 7, 96, left=True)
  response, rmask = hf_models.ragged(rng, 3, 5, 96, left=False)
  ours = heads.LanguageModel(cfg).apply({"params": params}, prompt, pmask, response, rmask)
  with torch.no_grad():
    dec_in = hf._shift_right(torch.tensor(response, dtype=torch.long))
    theirs = hf(input_ids=torch.tensor(prompt, dtype=torch.long),
                attention_mask=torch.tensor(pmask), decoder_input_ids=dec_in).logits.numpy()
  valid = rmask.astype(bool)
  np.testing.assert_allclose(np.asarray(ours)[valid], theirs[valid], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tie", [False, True])
def test_llama_logits_match_hf(tie):
  hf = hf_models.tiny_hf_llama(tie=tie)
  cfg, params = hf_models.to_zoo(hf)
  assert cfg.tie_embeddings == tie
  rng = np.random.default_rng(1)
  prompt, pmask = hf_models.ragged(rng, 3, 6, 96, left=True)
  response, rmask = hf_models.ragged(rng, 3, 5, 96, left=False)
  ours = heads.LanguageModel(cfg).apply({"params": params}, prompt, pmask, response, rmask)
  tokens = np.concatenate([prompt, response], 1)
  mask = np.concatenate([pmask, rmask], 1)
  pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(tokens, dtype=torch.long),
                attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(pos, dtype=torch.long)).logits.numpy()
  theirs = theirs[:, prompt.shape[1] - 1: prompt.shape[1] - 1 + response.shape[1]]
  valid = rmask.astype(bool)
  np.testing.assert_allclose(np.asarray(ours)[valid], theirs[valid], atol=1e-4, rtol=1e-4)


def test_convert_cli_round_trip(tmp_path):
  """save_pretrained -> `convert` CLI -> load_params gives the same logits as HF."""
  import jax  # pylint: disable=g-import-not-at-top
  from alignment import checkpoint, sharding
  hf = hf_models.tiny_hf_llama(seed=4)
  hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
  out = tmp_path / "zoo"
  assert convert.main(["--hf_dir", str(tmp_path / "hf"), "--output", str(out)]) == 0
  cfg = checkpoint.load_model_config(str(out / "model_config.json"))
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
  ours = model.apply({"params": params}, prompt, pmask, response, rmask)
  _, want = hf_models.to_zoo(hf)
  ref = model.apply({"params": want}, prompt, pmask, response, rmask)
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
  # An existing output is refused, and a bad directory is one clear error.
  assert convert.main(["--hf_dir", str(tmp_path / "hf"), "--output", str(out)]) == 2
  assert convert.main(["--hf_dir", str(tmp_path), "--output", str(tmp_path / "x")]) == 2


def test_unsupported_configs_are_named():
  with pytest.raises(convert.ConversionError, match="feed_forward_proj='relu'"):
    convert.config_from_hf({"model_type": "t5", "feed_forward_proj": "relu"})
  with pytest.raises(convert.ConversionError, match="rope_scaling"):
    convert.config_from_hf({"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2,
                            "vocab_size": 10, "intermediate_size": 8, "num_hidden_layers": 1,
                            "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
  with pytest.raises(convert.ConversionError, match="model_type='gpt2'"):
    convert.config_from_hf({"model_type": "gpt2"})

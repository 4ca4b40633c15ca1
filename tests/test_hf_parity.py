"""Our zoo models against Hugging Face transformers (independent oracle)."""
import numpy as np
import pytest

import hf_models  # noqa: E402  (skips the module without torch/transformers)
import torch  # noqa: E402

from alignment.models import heads  # noqa: E402


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

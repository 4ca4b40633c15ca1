"""Tiny random Hugging Face models and their zoo conversions (independent oracles).

Shared by the parity, decoding and sampling tests. Importing this module needs
torch and transformers; tests that use it skip when they are missing.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from alignment.models import convert  # noqa: E402


def tiny_hf_t5(seed=0, vocab=96, init_factor=1.0):
  """init_factor 3 makes greedy decoding diverse (at 1 a few tokens repeat forever)."""
  torch.manual_seed(seed)
  cfg = transformers.T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                              num_decoder_layers=3, num_heads=4, feed_forward_proj="gated-gelu",
                              tie_word_embeddings=False, relative_attention_num_buckets=8,
                              relative_attention_max_distance=20, dropout_rate=0.0,
                              decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                              initializer_factor=init_factor)
  return transformers.T5ForConditionalGeneration(cfg).eval()


def tiny_hf_llama(seed=0, tie=False, vocab=96):
  torch.manual_seed(seed)
  cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, rope_theta=10000.0,
                                 tie_word_embeddings=tie, rms_norm_eps=1e-5,
                                 max_position_embeddings=128, pad_token_id=0,
                                 bos_token_id=None, eos_token_id=1)
  return transformers.LlamaForCausalLM(cfg).eval()


def to_zoo(model):
  """(zoo config, LanguageModel params) with the HF model's exact weights."""
  tensors = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
  cfg = convert.config_from_hf(model.config.to_dict())
  return cfg, convert.params_from_hf(tensors, cfg)


def ragged(rng, b, l, vocab, left, min_len=2):
  """Random tokens in [2, vocab) with ragged lengths; (tokens [b, l], mask [b, l])."""
  lengths = rng.integers(min_len, l + 1, size=b)
  tokens = rng.integers(2, vocab, size=(b, l))
  idx = np.arange(l)[None]
  mask = (idx >= l - lengths[:, None]) if left else (idx < lengths[:, None])
  return np.where(mask, tokens, 0).astype(np.int32), mask.astype(np.int32)

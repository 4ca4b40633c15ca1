"""Tiny random Hugging Face models and their zoo conversions (independent oracles).

Shared by the parity, decoding and sampling tests. Importing this module needs
torch and transformers; tests that use it skip when they are missing.
"""
import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from alignment.models import convert, heads  # noqa: E402


def tiny_hf_t5(seed=0, vocab=96, init_factor=1.0, original=False):
  """init_factor 3 makes greedy decoding diverse (at 1 a few tokens repeat forever).
  original: T5 v1.0 (ReLU MLPs, the output tied to the embedding and scaled by
  d_model**-0.5), else T5 v1.1 (gated-GELU, unscaled)."""
  torch.manual_seed(seed)
  cfg = transformers.T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                              num_decoder_layers=3, num_heads=4, feed_forward_proj="relu" if original else "gated-gelu",
                              tie_word_embeddings=original, relative_attention_num_buckets=8,
                              relative_attention_max_distance=20, dropout_rate=0.0,
                              decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                              initializer_factor=init_factor)
  return transformers.T5ForConditionalGeneration(cfg).eval()


def tiny_hf_llama(seed=0, tie=False, vocab=96, qwen2=False, **overrides):
  """A tiny LlamaForCausalLM (Qwen2ForCausalLM with `qwen2`); `overrides` are
  config keys (rope_parameters, attention_bias, ...). Attention biases, which
  Hugging Face initialises to zero, are drawn at random so that a wrong
  mapping shows."""
  torch.manual_seed(seed)
  kwargs = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie,
                rms_norm_eps=1e-5, max_position_embeddings=128, pad_token_id=0,
                bos_token_id=None, eos_token_id=1)
  kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
  kwargs.update(overrides)
  if qwen2:
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kwargs))
  else:
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kwargs))
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith(".bias"):
        p.normal_(0.0, 0.5)
  return model.eval()


def hf_greedy(hf, prompt, pmask, t, eos_id, pad_id=0):
  """Hugging Face `generate`'s greedy tokens [B, t], right padded with pad_id."""
  kwargs = {}
  if hf.config.is_encoder_decoder:
    # transformers 5 sizes T5's default cache by the encoder's layer count.
    kwargs["cache"] = transformers.EncoderDecoderCache(
        transformers.DynamicCache(), transformers.DynamicCache())
  with torch.no_grad():
    out = hf.generate(input_ids=torch.tensor(prompt, dtype=torch.long),
                      attention_mask=torch.tensor(pmask), max_new_tokens=t, do_sample=False,
                      pad_token_id=pad_id, eos_token_id=eos_id, suppress_tokens=[pad_id],
                      **kwargs).numpy()
  out = out[:, 1:] if hf.config.is_encoder_decoder else out[:, prompt.shape[1]:]
  return np.pad(out, ((0, 0), (0, t - out.shape[1])), constant_values=pad_id)


def hf_decoder_logits(hf, prompt, pmask, response, rmask):
  """A causal HF model's logits [B, Lr, V] over the response (position t predicts
  response token t), positions counted over real tokens as the zoo does."""
  tokens = np.concatenate([prompt, response], 1)
  mask = np.concatenate([pmask, rmask], 1)
  pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
  with torch.no_grad():
    logits = hf(input_ids=torch.tensor(tokens, dtype=torch.long),
                attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(pos, dtype=torch.long)).logits.numpy()
  return logits[:, prompt.shape[1] - 1: prompt.shape[1] - 1 + response.shape[1]]


def hf_t5_logits(hf, prompt, pmask, response):
  """T5's logits [B, Lr, V], the decoder reading the response shifted right."""
  with torch.no_grad():
    dec_in = hf._shift_right(torch.tensor(response, dtype=torch.long))  # pylint: disable=protected-access
    return hf(input_ids=torch.tensor(prompt, dtype=torch.long),
              attention_mask=torch.tensor(pmask), decoder_input_ids=dec_in).logits.numpy()


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


@functools.lru_cache(maxsize=None)
def _jitted_apply(cfg):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.jit(heads.LanguageModel(cfg).apply)


def zoo_logits(cfg, params, *batch):
  """Our LanguageModel's logits [B, Lr, V] of (prompt, pmask, response, rmask);
  jitted once per config (op-by-op dispatch takes several times longer)."""
  return np.asarray(_jitted_apply(cfg)({"params": params}, *batch))


def batch(seed, b=3, lp=6, lr=5, vocab=96):
  """(prompt [b, lp] left padded, its mask, response [b, lr] right padded, its mask)."""
  rng = np.random.default_rng(seed)
  return (*ragged(rng, b, lp, vocab, left=True),
          *ragged(rng, b, lr, vocab, left=False))


def assert_logits_match(ours, theirs, rmask):
  """Within 1e-4 over the real response tokens; returns the largest difference."""
  valid = rmask.astype(bool)
  np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=1e-4)
  return float(np.abs(ours[valid] - theirs[valid]).max())


# Llama 3.1's RoPE scaling at tiny sizes: head width 8 gives wavelengths 6.3, 63, 628
# and 6283 tokens; with original_max_position_embeddings 64 (low_freq_factor 1,
# high_freq_factor 4: bands at 16 and 64) the first is kept, the second
# interpolated and the last two divided by 4, so every branch of the formula runs.
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
               "rope_theta": 10000.0}


def flan_t5_config(**tiny):
  """google/flan-t5-small's config.json (transformers 4.23) with tiny sizes."""
  cfg = {
      "architectures": ["T5ForConditionalGeneration"], "d_ff": 1024, "d_kv": 64,
      "d_model": 512, "decoder_start_token_id": 0, "dense_act_fn": "gelu_new",
      "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
      "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True,
      "layer_norm_epsilon": 1e-06, "model_type": "t5", "n_positions": 512,
      "num_decoder_layers": 8, "num_heads": 6, "num_layers": 8, "output_past": True,
      "pad_token_id": 0, "relative_attention_max_distance": 128,
      "relative_attention_num_buckets": 32, "tie_word_embeddings": False,
      "torch_dtype": "float32", "transformers_version": "4.23.1", "use_cache": True,
      "vocab_size": 32128}
  cfg.update(d_ff=48, d_kv=8, d_model=32, num_decoder_layers=3, num_heads=4, num_layers=2,
             relative_attention_num_buckets=8, relative_attention_max_distance=20,
             vocab_size=96, dropout_rate=0.0, **tiny)
  return cfg


def tiny_hf_flan_t5(seed=7):
  """A T5ForConditionalGeneration built from `flan_t5_config()`, its lm_head drawn
  apart from `shared` (transformers 5 ties a fresh model's; released ones are not)."""
  torch.manual_seed(seed)
  hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**flan_t5_config()))
  with torch.no_grad():
    hf.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf.shared.weight))
  return hf.eval()

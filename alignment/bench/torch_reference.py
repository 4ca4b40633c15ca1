"""The PyTorch / Hugging Face side of the benchmarks: what ours is compared against.

Random Hugging Face T5 v1.1 models of a zoo config's shape (converted to our
parameters by the benchmarks, so both sides hold the same weights), the
sampler benchmark's `generate` contenders, and the train benchmark's step
in PyTorch. torch and transformers are imported inside the functions, so
importing the benchmarks needs neither.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable

import numpy as np


def hf_t5(cfg, seed: int):
  """A random Hugging Face T5 v1.1 of the zoo config's shape."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  hf_cfg = transformers.T5Config(
      vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.d_ff,
      num_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
      num_heads=cfg.num_heads, relative_attention_num_buckets=cfg.relative_buckets,
      relative_attention_max_distance=cfg.relative_max_distance,
      feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
      layer_norm_epsilon=cfg.norm_eps, decoder_start_token_id=0, pad_token_id=0,
      eos_token_id=1)
  return transformers.T5ForConditionalGeneration(hf_cfg).eval()


def untied_hf_t5(cfg, seed: int):
  """`hf_t5` with its own lm_head tensor: transformers 5 ties it to the input
  embedding at construction, which would leave the PyTorch step 16M fewer
  parameters to update than T5.1.1 (and our model) has."""
  import torch  # pylint: disable=g-import-not-at-top
  hf = hf_t5(cfg, seed)
  if hf.lm_head.weight is hf.shared.weight:
    hf.lm_head.weight = torch.nn.Parameter(hf.shared.weight.detach().clone())
  return hf


def hf_sample_calls(hf, prompt: np.ndarray, thread_counts, lengths
                    ) -> dict[tuple[str, int], Callable[[], Any]]:
  """The sampler benchmark's contenders on Hugging Face `generate`, EOS disabled.

  ("hf/<threads>", new tokens) -> a call that samples that many tokens per row
  of `prompt` [B, Lp] at temperature 1 with `threads` torch threads and blocks
  until done; one per thread count and length, in that order. Sets `hf`'s
  generation config's EOS to None.
  """
  return _generate_calls(hf, prompt, [("hf", k) for k in thread_counts], lengths)


def _generate_calls(hf, prompt: np.ndarray, labels, lengths, **generate_kwargs):
  """(f"{label}/{threads}", new tokens) -> a blocking `generate` call, for each
  (label, threads) in `labels` and each length; EOS disabled on `hf`."""
  import torch  # pylint: disable=g-import-not-at-top
  b = prompt.shape[0]
  calls = {}
  hf.generation_config.eos_token_id = None
  ids = torch.tensor(prompt, dtype=torch.long)
  mask = torch.ones_like(ids)
  for label, threads in labels:
    for new_tokens in lengths:
      def theirs(n=new_tokens, k=threads):
        torch.set_num_threads(k)
        with torch.no_grad():
          out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                            temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=n,
                            eos_token_id=None, pad_token_id=0, **generate_kwargs)
        assert out.shape == (b, n + 1), out.shape  # decoder start + new tokens

      calls[(f"{label}/{threads}", new_tokens)] = theirs
  return calls


def hf_compiled_sample_calls(hf, prompt: np.ndarray, threads: int, lengths,
                             backend: str = "inductor"
                             ) -> tuple[dict[tuple[str, int], Callable[[], Any]], dict[int, float]]:
  """Hugging Face's fastest CPU path as a contender: `generate` with a static
  cache and the model's forward under `torch.compile` (transformers' recipe:
  `model.forward = torch.compile(model.forward)`, `cache_implementation="static"`).

  On a copy of `hf` (its forward replaced), at `threads` torch threads: inductor
  writes the thread count into the kernels it compiles, so they run at the count
  they were compiled at. Every shape is compiled on its own (`dynamic=False`) by
  one warm-up call per length, timed: (("hf-compiled/<threads>", new tokens) ->
  call, new tokens -> seconds of the warm-up call, compilation included).
  `backend`: torch.compile's (the tests' toy runs use "eager": the graph
  capture without inductor's code generation, which takes minutes on 2 cores).
  """
  import torch  # pylint: disable=g-import-not-at-top
  compiled = copy.deepcopy(hf)
  torch.set_num_threads(threads)
  compiled.forward = torch.compile(compiled.forward, dynamic=False, backend=backend)
  calls = _generate_calls(compiled, prompt, [("hf-compiled", threads)], lengths,
                          cache_implementation="static")
  compile_s = {}
  for (_, n), call in calls.items():
    start = time.perf_counter()
    call()
    compile_s[n] = time.perf_counter() - start
  return calls, compile_s


def torch_train_step(policy, reference, pairs, beta: float, opt_cfg,
                     compile_backend: str | None = None):
  """The same step in PyTorch on Hugging Face T5: (a call that runs one step, first metrics).

  Same work as ours: the policy's forward and backward on chosen and
  rejected with each prompt encoded once (the encoder output fed to the
  decoder for both responses, as `pair_logps` does), the reference's forward
  under no_grad, token log-probs as logit - logsumexp, IPO, global-norm
  clipping and AdamW with the same hyper-parameters.

  compile_backend: None for eager PyTorch; else the step as a PyTorch user
  compiles it, with torch.compile's backend of that name ("inductor"): the
  loss (both models' forwards, and through AOTAutograd the policy's backward)
  under `torch.compile`, and the clipping and AdamW update as a second
  compiled function (PyTorch's recipe for compiled optimisers). The first
  call compiles both; it is the call that returns the first metrics.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from transformers.modeling_outputs import BaseModelOutput  # pylint: disable=g-import-not-at-top
  t = lambda a: torch.tensor(np.asarray(a), dtype=torch.long)
  prompt, prompt_mask = t(pairs.prompt), t(pairs.prompt_mask)
  resp = torch.cat([t(pairs.chosen), t(pairs.rejected)])
  resp_mask = torch.cat([t(pairs.chosen_mask), t(pairs.rejected_mask)])
  dec_in = torch.cat([torch.zeros_like(resp[:, :1]), resp[:, :-1]], 1)  # start token 0
  dec_mask = torch.cat([torch.ones_like(resp_mask[:, :1]), resp_mask[:, :-1]], 1)
  n = prompt.shape[0]

  def pair_logps(model):
    enc = model.encoder(input_ids=prompt, attention_mask=prompt_mask).last_hidden_state
    out = model(encoder_outputs=BaseModelOutput(last_hidden_state=torch.cat([enc, enc])),
                attention_mask=torch.cat([prompt_mask, prompt_mask]),
                decoder_input_ids=dec_in, decoder_attention_mask=dec_mask)
    logits = out.logits.float()
    tok = logits.gather(-1, resp[..., None])[..., 0] - torch.logsumexp(logits, -1)
    seq = (tok * resp_mask).sum(-1)
    return seq[:n], seq[n:]

  optimizer = torch.optim.AdamW(policy.parameters(), lr=opt_cfg.learning_rate,
                                betas=(opt_cfg.b1, opt_cfg.b2), eps=opt_cfg.eps,
                                weight_decay=opt_cfg.weight_decay, foreach=True)

  def loss_fn():
    pc, pr = pair_logps(policy)
    with torch.no_grad():
      rc, rr = pair_logps(reference)
    return ((beta * ((pc - rc) - (pr - rr)) - 0.5) ** 2).mean()

  def update():
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), opt_cfg.grad_clip)
    optimizer.step()
    return grad_norm

  if compile_backend:
    loss_fn = torch.compile(loss_fn, backend=compile_backend)
    update = torch.compile(update, backend=compile_backend)

  def run():
    loss = loss_fn()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = update()
    return {"loss": loss.item(), "grad_norm": grad_norm.item()}

  return run, run()

"""On-policy sampler: jit-compiled autoregressive decoding for both architectures.

Shapes use the legend of `alignment.models.layers` (B batch, L length, V
vocabulary) plus T = `max_new_tokens` and N = B * `num_samples` rows.

    sampler = Sampler(model, SamplingConfig(max_new_tokens=32, temperature=0.9), mesh)
    out = sampler(params, PromptBatch(prompt, prompt_mask), jax.random.key(0))
    out.tokens  # [N, T] right padded, EOS included; row i * n + j = sample j of prompt i

The whole loop is one `jax.jit`: the model's `start_decode` (T5: encoder once
and cross-attention keys/values; decoder-only: prompt prefill into a static
[N, Lp + T] cache), then a `lax.while_loop` of `decode_step`s that stops as
soon as every row has emitted EOS. Prompts are encoded once and their decode
state repeated `num_samples` times. Rows are split over the mesh's `data` x
`fsdp` axes and attention heads over `tensor`, as in training.

Token choice per step: the vocabulary's PAD (`pad_id`, if it has one) and ids
past the vocabulary (`vocab_size`: a model's output layer is often wider than
its vocabulary) are never drawn, as
Hugging Face's `suppress_tokens` would do; then logits / temperature, then
top-k, then top-p (nucleus:
the smallest set of most likely tokens whose probability reaches top_p), as
Hugging Face orders its processors; greedy (or temperature 0) takes the
argmax. The draw itself is an exact inverse-CDF draw in two levels (a block of
256 tokens, then a token inside it; two uniforms per row), which costs a few
percent of Gumbel-max's random numbers at V = 32k.

Log-probs: `logprobs` are those of the sampled tokens under the UNTEMPERED
model distribution log_softmax(logits) (what losses and the KL use; they
equal `scoring.token_logprobs` of the training forward up to float rounding);
`sampling_logprobs` are under the distribution actually sampled from
(tempered and truncated; 0 for greedy). Both are 0 at padding.

Determinism: given the key, the tokens are a pure function of (params,
prompts), on any mesh (the key of step t is fold_in(key, t) and
`jax_threefry_partitionable` makes random bits independent of sharding).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from alignment import programs, sharding
from alignment.data.batches import EOS_ID, PAD_ID, PromptBatch, SFTBatch
from alignment.models import heads
from alignment.models import layers as L

Array = jax.Array

_BLOCK = 256  # tokens per block of the two-level draw


class SamplingConfigError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample. Out-of-range values raise `SamplingConfigError` naming the field.

  max_new_tokens: T, the response length (>= 1).
  temperature: >= 0; 0 means greedy.
  top_k: keep the k most likely tokens; 0 keeps all.
  top_p: nucleus mass in (0, 1]; 1 keeps all.
  greedy: argmax decoding (temperature, top_k, top_p are then unused).
  num_samples: n responses per prompt (>= 1).
  cache_dtype: key/value cache dtype, "float32" or "bfloat16".
  eos_id: a row stops after emitting it; None never stops (benchmarks). The
    vocabulary's (`vocab.sampling_ids`): 1 for the package's, 128001 for Llama 3.
    Several ids (a list or tuple, as Llama 3.1 Instruct's generation_config.json
    ships [128001, 128008, 128009]): a row stops at the first of any of them.
    A list is kept as a tuple (the config is hashable); one id in a list is
    that id.
  pad_id: never drawn (a response holds real tokens only); None when the
    vocabulary has no padding token (Llama 3's id 0 is "!", a real token).
  vocab_size: ids >= vocab_size are never drawn (the rows of a padded output
    layer that no token of the vocabulary uses); None allows every id the model
    has.
  Rows that have ended are filled with PAD_ID (0) under a zero mask, whatever
  the vocabulary: consumers read the mask, never the filler.
  """
  max_new_tokens: int = 32
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  greedy: bool = False
  num_samples: int = 1
  cache_dtype: str = "float32"
  eos_id: Optional[int | tuple[int, ...]] = EOS_ID
  pad_id: Optional[int] = PAD_ID
  vocab_size: Optional[int] = None

  def __post_init__(self):
    def fail(name, why):
      raise SamplingConfigError(
          f"SamplingConfig.{name}={getattr(self, name)!r}: {why}")

    def is_int(v):
      return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
      fail("max_new_tokens", "must be an integer >= 1")
    if not isinstance(self.temperature, (int, float)) or not self.temperature >= 0:
      fail("temperature", "must be >= 0 (0 means greedy)")
    if not is_int(self.top_k) or self.top_k < 0:
      fail("top_k", "must be an integer >= 0 (0 keeps every token)")
    if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
      fail("top_p", "must lie in (0, 1] (1 keeps every token)")
    if not is_int(self.num_samples) or self.num_samples < 1:
      fail("num_samples", "must be an integer >= 1")
    if self.cache_dtype not in ("float32", "bfloat16"):
      fail("cache_dtype", "must be 'float32' or 'bfloat16'")
    if self.pad_id is not None and (not is_int(self.pad_id) or self.pad_id < 0):
      fail("pad_id", "must be None or a token id >= 0")
    if isinstance(self.eos_id, (list, tuple)):
      ids = tuple(self.eos_id)
      object.__setattr__(self, "eos_id", ids[0] if len(ids) == 1 else ids)
    ids = self.eos_id if isinstance(self.eos_id, tuple) else (self.eos_id,)
    if self.eos_id is not None and (not ids or any(
        not is_int(i) or i < 0 or i == self.pad_id for i in ids)):
      fail("eos_id", "must be None, a token id >= 0 or a non-empty list of them, none "
           f"equal to pad_id={self.pad_id}")
    if self.vocab_size is not None and (not is_int(self.vocab_size) or self.vocab_size < 2):
      fail("vocab_size", "must be None or an integer >= 2 (PAD and at least one token)")

  @property
  def is_greedy(self) -> bool:
    return self.greedy or self.temperature == 0


def with_model_eos(ids: dict, export: str = "") -> dict:
  """`ids` (`vocab.sampling_ids`: the data vocabulary's eos_id and pad_id) with every
  EOS id the model's params export records in its vocabulary.json (`convert`
  keeps a Hugging Face model's list, as Llama 3.1 Instruct's [128001, 128008,
  128009]): a response ends at the first of any. No export, or one without a
  list, leaves `ids` as they are; a PAD that is also an EOS is not a PAD."""
  if not export or "://" in export or not ids.get("eos_id"):
    return ids
  from alignment import checkpoint  # pylint: disable=g-import-not-at-top  (no cycle)
  record = checkpoint.load_tokens(export) or {}
  recorded = record.get("eos_token_id")
  if not isinstance(recorded, list):
    return ids
  own = ids["eos_id"] if isinstance(ids["eos_id"], tuple) else (ids["eos_id"],)
  eos = own + tuple(int(i) for i in recorded if i not in own)
  pad = None if ids.get("pad_id") in eos else ids.get("pad_id")
  return dict(ids, eos_id=eos[0] if len(eos) == 1 else eos, pad_id=pad)


@flax.struct.dataclass
class SampleOutput:
  """Sampled responses; N = B * n rows, row i * n + j is sample j of prompt i.

  prompt, prompt_mask: [N, Lp] the prompts, repeated, left padded.
  tokens: [N, T] int32, right padded with PAD_ID; a response ends with its
    EOS when one was emitted within T tokens.
  mask: [N, T] int32, 1 up to and including EOS.
  lengths: [N] int32, number of real tokens (EOS included).
  finished: [N] bool, True where the row emitted EOS.
  logprobs: [N, T] float32, log-prob of each token under the untempered model
    distribution; 0 at padding.
  sampling_logprobs: [N, T] float32, under the sampling distribution
    (temperature, top-k, top-p); 0 for greedy and at padding.
  Every field has N leading rows (`algorithms.mix_samples` relies on it).
  """
  prompt: Array
  prompt_mask: Array
  tokens: Array
  mask: Array
  lengths: Array
  finished: Array
  logprobs: Array
  sampling_logprobs: Array

  def as_batch(self) -> SFTBatch:
    """The responses as an `SFTBatch` (for scoring or supervised losses)."""
    return SFTBatch(self.prompt, self.prompt_mask, self.tokens, self.mask)


# --------------------------------------------------------------------------
# Choosing a token
# --------------------------------------------------------------------------


def draw_from_probs(key: Array, probs_bv: Array) -> Array:
  """Index [B] drawn with probability probs_bv / sum (unnormalised, >= 0).

  Exact inverse-CDF draw in two levels: a block of `_BLOCK` entries by its
  mass, then an entry inside the block by its mass; each level takes the first
  cumulative sum >= u * total with u in (0, 1], so zero-mass entries are never
  drawn.
  """
  b, v = probs_bv.shape
  blk = min(_BLOCK, v)
  pad = (-v) % blk
  blocks_bnk = jnp.pad(probs_bv, ((0, 0), (0, pad))).reshape(b, -1, blk)
  key_block, key_inner = jax.random.split(key)

  def first_reaching(cum_bm, u_b):
    target = u_b[:, None] * cum_bm[:, -1:]
    return jnp.minimum(jnp.sum(cum_bm < target, axis=-1), cum_bm.shape[-1] - 1)

  u_block = 1.0 - jax.random.uniform(key_block, (b,))
  u_inner = 1.0 - jax.random.uniform(key_inner, (b,))
  block_b = first_reaching(jnp.cumsum(jnp.sum(blocks_bnk, axis=-1), axis=-1), u_block)
  inner_bk = jnp.take_along_axis(blocks_bnk, block_b[:, None, None], axis=1)[:, 0]
  return block_b * blk + first_reaching(jnp.cumsum(inner_bk, axis=-1), u_inner)


def nucleus_mask(sorted_logits_bk: Array, top_p: float) -> Array:
  """True for the smallest prefix (logits sorted descending) whose mass reaches top_p."""
  probs = jax.nn.softmax(sorted_logits_bk, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  return mass_before < top_p


def _at(x_bv: Array, index_b: Array) -> Array:
  return jnp.take_along_axis(x_bv, index_b[:, None], axis=-1)[:, 0]


def drawable(logits_bv: Array, config: SamplingConfig) -> Array:
  """The logits with config.pad_id and ids >= config.vocab_size set to -inf (never drawn)."""
  ids_v = jnp.arange(logits_bv.shape[-1])
  ok_v = jnp.ones_like(ids_v, bool) if config.pad_id is None else ids_v != config.pad_id
  if config.vocab_size is not None:
    ok_v &= ids_v < config.vocab_size
  return jnp.where(ok_v[None, :], logits_bv, -jnp.inf)


def choose_tokens(logits_bv: Array, key: Array, config: SamplingConfig):
  """One step's tokens from logits [B, V].

  Returns (tokens [B] int32, model log-probs [B], sampling log-probs [B]).
  Model log-probs are under the model's whole softmax (what scoring computes);
  the draw itself never picks `config.pad_id` or an id past `config.vocab_size`.
  Log-probs are read as logit - logsumexp, so no [B, V] log-softmax is built.
  """
  logits_bv = logits_bv.astype(jnp.float32)
  model_lse_b = jax.nn.logsumexp(logits_bv, axis=-1)
  model_logits_bv = logits_bv
  logits_bv = drawable(logits_bv, config)
  if config.is_greedy:
    token_b = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
    model_logp = _at(model_logits_bv, token_b) - model_lse_b
    return token_b, model_logp, jnp.zeros_like(model_logp)

  v = logits_bv.shape[-1]
  scaled_bk = logits_bv if config.temperature == 1 else logits_bv / config.temperature
  index_bk = None  # candidate -> token id; None means candidate k is token k
  top_k = config.top_k if 0 < config.top_k < v else 0
  if top_k or config.top_p < 1:
    # Sorted candidates: the k best, or all V when only top-p truncates.
    scaled_bk, index_bk = jax.lax.top_k(scaled_bk, top_k or v)
  if config.top_p < 1:
    scaled_bk = jnp.where(nucleus_mask(scaled_bk, config.top_p), scaled_bk, -jnp.inf)
  max_b = jnp.max(scaled_bk, axis=-1)
  weights_bk = jnp.exp(scaled_bk - max_b[:, None])
  choice_b = draw_from_probs(key, weights_bk)
  sample_logp = _at(scaled_bk, choice_b) - max_b - jnp.log(jnp.sum(weights_bk, axis=-1))
  token_b = choice_b if index_bk is None else _at(index_bk, choice_b)
  token_b = token_b.astype(jnp.int32)
  return token_b, _at(model_logits_bv, token_b) - model_lse_b, sample_logp


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------


@flax.struct.dataclass
class _Carry:
  t: Array               # next position to fill
  logits: Array          # [N, V] predicting token t
  state: Any             # the model's decode state
  tokens: Array          # [N, T]
  mask: Array            # [N, T]
  logprobs: Array        # [N, T]
  sampling_logprobs: Array
  done: Array            # [N] bool: EOS already emitted


def _constrain_rows(x: Array) -> Array:
  return L.constrain(x, (L.BATCH,) + (None,) * (x.ndim - 1))


def _write(carry: _Carry, key: Array, config: SamplingConfig) -> _Carry:
  """Chooses token t for every row that is still running and records it."""
  token, logp, slogp = choose_tokens(carry.logits, jax.random.fold_in(key, carry.t), config)
  alive = ~carry.done
  token = jnp.where(alive, token, PAD_ID)
  put = lambda buf, col: jax.lax.dynamic_update_slice_in_dim(
      buf, col[:, None].astype(buf.dtype), carry.t, axis=1)
  done = carry.done
  if isinstance(config.eos_id, tuple):
    done = done | functools.reduce(jnp.logical_or, [token == i for i in config.eos_id])
  elif config.eos_id is not None:
    done = done | (token == config.eos_id)
  return carry.replace(
      tokens=put(carry.tokens, token), mask=put(carry.mask, alive),
      logprobs=put(carry.logprobs, jnp.where(alive, logp, 0.0)),
      sampling_logprobs=put(carry.sampling_logprobs, jnp.where(alive, slogp, 0.0)),
      done=done)


def start(model: heads.LanguageModel, params, prompts: PromptBatch, config: SamplingConfig):
  """The decode state after the prompts: T5 encodes them, a decoder prefills its
  cache; once per prompt, then repeated for each of its `num_samples` rows.

  Returns (logits [N, V] predicting the first token, state, prompt [N, Lp],
  prompt_mask [N, Lp]).
  """
  n = config.num_samples
  logits, state = model.apply({"params": params}, prompts.prompt, prompts.prompt_mask,
                              config.max_new_tokens, L.dtype_from_name(config.cache_dtype),
                              method="start_decode")
  prompt, prompt_mask = prompts.prompt, prompts.prompt_mask
  if n > 1:  # Encode / prefill once per prompt; each sample gets its own copy after.
    def rep(x):
      if isinstance(x, L.KVCache):  # keep the caches' own layout (heads over `tensor`)
        return L.constrain_cache(jax.tree.map(lambda a: jnp.repeat(a, n, axis=0), x))
      return _constrain_rows(jnp.repeat(x, n, axis=0))
    logits, state, prompt, prompt_mask = jax.tree.map(
        rep, (logits, state, prompt, prompt_mask), is_leaf=lambda x: isinstance(x, L.KVCache))
  return logits, state, prompt, prompt_mask


def decode_step(model: heads.LanguageModel, params, state, prev_n: Array, t: Array):
  """One token for every row: (logits [N, V] predicting position t + 1, new state)."""
  return model.apply({"params": params}, state, prev_n, t, method="decode_step")


def sample(model: heads.LanguageModel, params, prompts: PromptBatch, key: Array,
           config: SamplingConfig) -> SampleOutput:
  """Samples `config.num_samples` responses per prompt. Pure; call it under jit.

  `Sampler` wraps this with explicit shardings; call `sample` directly when
  sampling is part of a larger jitted step (e.g. an online update).
  """
  t_max = config.max_new_tokens
  logits, state, prompt, prompt_mask = start(model, params, prompts, config)
  rows = logits.shape[0]
  zeros = lambda dtype: _constrain_rows(jnp.zeros((rows, t_max), dtype))
  carry = _Carry(t=jnp.asarray(0, jnp.int32), logits=logits, state=state,
                 tokens=zeros(jnp.int32), mask=zeros(jnp.int32),
                 logprobs=zeros(jnp.float32), sampling_logprobs=zeros(jnp.float32),
                 done=jnp.zeros((rows,), bool))
  carry = _write(carry, key, config).replace(t=jnp.asarray(1, jnp.int32))

  def cond(c: _Carry):
    return (c.t < t_max) & ~jnp.all(c.done)

  def body(c: _Carry):
    prev = jax.lax.dynamic_index_in_dim(c.tokens, c.t - 1, axis=1, keepdims=False)
    logits, state = decode_step(model, params, c.state, prev, c.t - 1)
    c = _write(c.replace(logits=logits, state=state), key, config)
    return c.replace(t=c.t + 1)

  carry = jax.lax.while_loop(cond, body, carry)
  lengths = jnp.sum(carry.mask, axis=1)
  return SampleOutput(prompt=prompt, prompt_mask=prompt_mask, tokens=carry.tokens,
                      mask=carry.mask, lengths=lengths, finished=carry.done,
                      logprobs=carry.logprobs, sampling_logprobs=carry.sampling_logprobs)


# --------------------------------------------------------------------------
# The jitted, sharded entry point
# --------------------------------------------------------------------------


def gathered_shardings(params_sharding: Any, keep: tuple[str, ...] = ("tensor",)) -> Any:
  """The parameters' shardings with every mesh axis but `keep` dropped: each
  parameter whole on every batch shard (data x fsdp), still split over `tensor`."""
  def drop(entry):
    names = () if entry is None else entry if isinstance(entry, tuple) else (entry,)
    kept = tuple(n for n in names if n in keep)
    return None if not kept else kept[0] if len(kept) == 1 else kept
  return jax.tree.map(
      lambda s: jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec(
          *[drop(e) for e in s.spec])), params_sharding)


def gather_params(params: Any, shardings: Any, compute_dtype) -> Any:
  """The parameters in the dtype the model computes with, gathered to `shardings`
  (`gathered_shardings`) once, before the decode loop: on an FSDP mesh XLA would
  otherwise all-gather every weight again for every token (it does not hoist the
  gathers out of the while loop). Norm scales (`scale`), which the model reads in
  float32, keep their dtype; every other parameter the model casts to its compute
  dtype where it uses it, so the samples are the same."""
  def one(path, p, s):
    name = getattr(path[-1], "key", None)
    if name != "scale" and jnp.issubdtype(p.dtype, jnp.floating):
      p = p.astype(compute_dtype)
    return jax.lax.with_sharding_constraint(p, s)
  return jax.tree_util.tree_map_with_path(one, params, shardings)


def _param_shardings(model, mesh: Mesh, rules):
  with sharding.use(mesh, rules):
    return param_shardings(model, mesh, rules)


def _jitted_sample(model, config: SamplingConfig, mesh: Mesh, rules, shardings_def,
                   shardings_leaves, gather: bool):
  """(jitted `sample` with explicit shardings, the parameters' preparation `ready`,
  the output's shardings) of a Sampler; the parameter shardings come flattened."""
  params_sharding = jax.tree.unflatten(shardings_def, shardings_leaves)
  rows = sharding.batch_sharding(mesh, rules, 2)
  row = sharding.batch_sharding(mesh, rules, 1)
  out_sharding = SampleOutput(prompt=rows, prompt_mask=rows, tokens=rows, mask=rows,
                              lengths=row, finished=row, logprobs=rows,
                              sampling_logprobs=rows)
  gathered = gathered_shardings(params_sharding) if gather else None
  compute_dtype = L.dtype_from_name(model.cfg.dtype)

  def ready(params):
    """The parameters the decode loop reads (gathered once when `gather`)."""
    return gather_params(params, gathered, compute_dtype) if gather else params

  jitted = jax.jit(
      lambda params, prompts, key: sample(model, ready(params), prompts, key, config),
      in_shardings=(params_sharding, PromptBatch(rows, rows), sharding.replicated(mesh)),
      out_shardings=out_sharding)
  return jitted, ready, out_sharding


def param_shardings(model: heads.LanguageModel, mesh: Mesh, rules) -> Any:
  """NamedShardings of the model's parameters from their logical axis names."""
  p = jnp.zeros((1, 2), jnp.int32)
  abstract = jax.eval_shape(lambda k: model.init(k, p, p, p, p)["params"], jax.random.key(0))
  return sharding.logical_shardings(abstract, mesh, rules)


class Sampler:
  """`sample` compiled once per prompt shape, with explicit shardings on a mesh.

  Args:
    model: a `heads.LanguageModel`.
    config: a `SamplingConfig`.
    mesh: the mesh to run on; None means the first device alone.
    rules: logical-axis rules (default `sharding.DEFAULT_RULES`).
    params_sharding: the parameters' shardings; derived from the model's
      logical axis names when None.
    gather: gather the parameters (in the model's compute dtype) over the batch
      axes once per call, before the decode loop (`gather_params`): on an FSDP
      mesh each token otherwise re-gathers every weight. Costs the model's
      weights in its compute dtype, split only over `tensor`, per device while
      sampling (`alignment.aot` reports both ways).
  Calling it: sampler(params, prompts: PromptBatch, key) -> SampleOutput, all
  rows split over the batch axes of the mesh. Samplers of equal models, configs,
  meshes, rules and parameter shardings share one jitted program in a process
  (`programs.shared`): built again, a sampler is not traced or compiled again.
  """

  def __init__(self, model: heads.LanguageModel, config: SamplingConfig,
               mesh: Optional[Mesh] = None, rules=sharding.DEFAULT_RULES,
               params_sharding=None, gather: bool = False):
    self.model, self.config, self.rules, self.gather = model, config, rules, gather
    self.mesh = mesh or sharding.make_mesh({"data": 1}, jax.devices()[:1])
    if params_sharding is None:
      params_sharding = programs.shared(_param_shardings, model, self.mesh, rules)
    self.params_sharding = params_sharding  # where the params passed in must live
    leaves, treedef = jax.tree.flatten(params_sharding)
    self._jitted, self._ready, self.out_sharding = programs.shared(
        _jitted_sample, model, config, self.mesh, rules, treedef, tuple(leaves), gather)
    self._batch_ways = sharding.data_parallel_size(dict(self.mesh.shape), rules)

  def _check(self, prompts: PromptBatch):
    b = prompts.prompt.shape[0]
    if prompts.prompt.shape != prompts.prompt_mask.shape or prompts.prompt.ndim != 2:
      raise ValueError(f"prompts: prompt {prompts.prompt.shape} and prompt_mask "
                       f"{prompts.prompt_mask.shape} must be the same [B, Lp] shape")
    if b % self._batch_ways:
      raise ValueError(f"prompts: batch {b} is not divisible by the {self._batch_ways} "
                       "ways the mesh splits the batch (data x fsdp)")

  def __call__(self, params, prompts: PromptBatch, key: Array) -> SampleOutput:
    self._check(prompts)
    with sharding.use(self.mesh, self.rules):
      return self._jitted(params, prompts, key)

  def lower(self, params, prompts: PromptBatch, key: Array):
    """The lowered computation (for AOT compilation and cost analysis)."""
    self._check(prompts)
    with sharding.use(self.mesh, self.rules):
      return self._jitted.lower(params, prompts, key)

  def compile_phases(self, params, prompts: PromptBatch):
    """The two phases of `sample` compiled as programs of their own, for cost
    analysis (the sampler is one while loop, whose body a compiler's cost
    analysis counts once, whatever the number of tokens): (prefill = `start`,
    one `decode_step` of all N rows). Takes abstract or concrete arguments."""
    self._check(prompts)
    rows = sharding.batch_sharding(self.mesh, self.rules, 2)
    row = sharding.batch_sharding(self.mesh, self.rules, 1)
    with sharding.use(self.mesh, self.rules):
      # The prefill includes the one gather (when `gather`); decode steps read its result.
      def phase(p, pr):
        ready = self._ready(p)
        return start(self.model, ready, pr, self.config), (ready if self.gather else None)
      prefill = jax.jit(phase, in_shardings=(self.params_sharding, PromptBatch(rows, rows)))
      compiled_prefill = prefill.lower(params, prompts).compile()
      shapes = jax.eval_shape(prefill, params, prompts)
      (_, state, _, _), ready = jax.tree.map(
          lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes,
          compiled_prefill.output_shardings)
      if not self.gather:
        ready = params
      n = shapes[0][0].shape[0]
      step = jax.jit(functools.partial(decode_step, self.model))
      compiled_step = step.lower(
          ready, state, jax.ShapeDtypeStruct((n,), jnp.int32, sharding=row),
          jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding.replicated(self.mesh))).compile()
    return compiled_prefill, compiled_step

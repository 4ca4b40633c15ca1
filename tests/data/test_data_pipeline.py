"""TFDS -> seqio -> converter -> sharded global batches, deterministic and restorable."""
import json

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from alignment import sharding
from alignment.data import batches
from alignment.data import converters
from alignment.data import environment as E
from alignment.data import pipeline
from alignment.data import tasks
from alignment.data import tf_setup
from alignment.data import vocab as V


@pytest.fixture(scope="module")
def env_tasks(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  return {"sp": tasks.register_env_tasks("tiny", data_dir, prefix="t_env"),
          "byte": tasks.register_env_tasks("tiny_byte", data_dir, prefix="t_env_byte")}


@pytest.fixture(scope="module")
def pairs(env_tasks):
  return pipeline.load_records(env_tasks["sp"]["pairs"], "train", "pairs")


def _texts(ids_bl, vocab="sentencepiece", left=False):
  v = V.get_vocabulary(vocab)
  rows = V.strip_left_padding(ids_bl) if left else V.cut_at_eos(ids_bl)[0]
  return V.decode_batch(v, rows)


def test_d_golden_through_seqio_into_sharded_global_batches(env_tasks):
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  it = pipeline.make_iterator(env_tasks["sp"]["pairs"], "train", "pairs", 32, mesh=mesh, seed=3)
  batch = next(it)
  assert isinstance(batch, batches.PreferenceBatch)
  for name in ("prompt", "prompt_mask", "chosen", "chosen_mask", "rejected", "rejected_mask"):
    x = getattr(batch, name)
    assert isinstance(x, jax.Array) and x.dtype == np.int32
    assert x.shape == (32, 64 if name.startswith("prompt") else 32)
    assert x.sharding.spec == P(("data", "fsdp"), None)
    assert {s.data.shape[0] for s in x.addressable_shards} == {4}
    assert len(x.addressable_shards) == 8
  # The rows are the environment's examples (TFDS keeps index order), tokenised.
  env = E.Environment()
  want = [env.example("train", int(i)) for i in it.last_indices]
  assert _texts(np.asarray(batch.prompt), left=True) == [ex["prompt"] for ex in want]
  assert _texts(np.asarray(batch.chosen)) == [ex["chosen"] for ex in want]
  assert _texts(np.asarray(batch.rejected)) == [ex["rejected"] for ex in want]


def test_padding_layout(pairs):
  pm, cm = pairs["prompt_mask"], pairs["chosen_mask"]
  assert (np.diff(pm, axis=1) >= 0).all(), "prompts are left padded"
  assert (np.diff(cm, axis=1) <= 0).all(), "responses are right padded"
  assert ((pairs["prompt"] != 0) == (pm == 1)).all()
  last = cm.sum(1) - 1
  assert (pairs["chosen"][np.arange(len(last)), last] == batches.EOS_ID).all()
  assert not (pairs["prompt"] == batches.EOS_ID).any()


def test_decoder_view_is_contiguous(pairs):
  view = converters.concatenate_for_decoder(pairs["prompt"], pairs["prompt_mask"],
                                            pairs["chosen"], pairs["chosen_mask"])
  m = view["mask"]
  first = m.argmax(1)
  n = m.sum(1)
  for i in range(len(m)):
    assert m[i, first[i]:first[i] + n[i]].all(), "no padding between prompt and response"
  assert (view["positions"][m == 1] == np.concatenate([np.arange(k) for k in n])).all()
  assert (view["loss_mask"].sum(1) == pairs["chosen_mask"].sum(1)).all()


def test_decoder_only_model_reads_the_batch(pairs):
  """A decoder-only model's response logits do not move when the prompt gets more
  left padding: [prompt | response] is contiguous (T5 masks padding either way)."""
  from alignment.models import heads, zoo
  prompt, pm = pairs["prompt"][:4], pairs["prompt_mask"][:4]
  resp, rm = pairs["chosen"][:4], pairs["chosen_mask"][:4]
  wider = np.pad(prompt, ((0, 0), (8, 0))), np.pad(pm, ((0, 0), (8, 0)))
  for name in ("llama-nano",):
    model = heads.LanguageModel(zoo.get(name, vocab_size=V.SP_VOCAB_SIZE))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), prompt, pm, resp, rm)["params"]
    apply = jax.jit(model.apply)
    logits = apply({"params": params}, prompt, pm, resp, rm)
    assert logits.shape == (4, 32, V.SP_VOCAB_SIZE)
    again = apply({"params": params}, *wider, resp, rm)
    keep = rm.astype(bool)
    np.testing.assert_allclose(np.asarray(again)[keep], np.asarray(logits)[keep], atol=1e-4)


def test_sft_mixture_holds_both_responses_of_every_pair(env_tasks):
  sft = pipeline.load_records(env_tasks["sp"]["sft"], "train", "sft")
  got = sorted(zip(_texts(sft["prompt"], left=True), _texts(sft["response"])))
  env = E.Environment()
  want = sorted((ex["prompt"], ex[k]) for ex in env.examples("train", 512)
                for k in ("response_a", "response_b"))
  assert got == want


def test_prompt_splits_and_fixed_eval_batch(env_tasks):
  name = env_tasks["sp"]["prompts"]
  ev = pipeline.fixed_batch(name, "eval", "prompts", 16)
  assert isinstance(ev, batches.PromptBatch) and ev.prompt.shape == (16, 64)
  assert _texts(ev.prompt, left=True) == E.Environment().prompts("eval", 16)
  train = set(_texts(pipeline.load_records(name, "train", "prompts")["prompt"], left=True))
  assert not train & set(_texts(ev.prompt, left=True))


def test_byte_scale_fits_the_same_limits(env_tasks):
  rec = pipeline.load_records(env_tasks["byte"]["pairs"], "validation", "pairs")
  assert rec["prompt"].shape == (128, 64) and rec["chosen"].shape == (128, 32)
  env = E.Environment(E.env_config("byte"))
  assert _texts(rec["chosen"], "byte") == [ex["chosen"] for ex in env.examples("validation", 128)]


def test_over_long_features_fail_instead_of_being_cut(env_tasks):
  with pytest.raises(pipeline.DataStateError,
                     match=r"t_env_pairs_golden/validation: a record's 'prompt' has \d+ "
                     r"tokens, over the length 20"):
    pipeline.load_records(env_tasks["sp"]["pairs"], "validation", "pairs", prompt_length=20)


def _take(it, n):
  return [it.next_local() for _ in range(n)]


def test_restore_gives_the_batch_an_uninterrupted_run_sees(pairs):
  make = lambda: pipeline.BatchIterator(pairs, batches.PreferenceBatch, 96, seed=7)
  run = make()
  assert run.batches_per_epoch == 5
  first = _take(run, 3)
  saved = json.loads(json.dumps(run.get_state()))  # what a checkpoint keeps
  rest = _take(run, 6)  # crosses into epoch 1
  resumed = make()
  resumed.set_state(saved)
  for a, b in zip(rest, _take(resumed, 6)):
    np.testing.assert_array_equal(a.prompt, b.prompt)
    np.testing.assert_array_equal(a.chosen, b.chosen)
  assert not np.array_equal(first[0].prompt, rest[2].prompt)  # epoch 1 reshuffled


def test_restore_with_global_arrays_on_the_mesh(pairs):
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  make = lambda: pipeline.BatchIterator(pairs, batches.PreferenceBatch, 64, mesh=mesh, seed=1)
  run = make()
  next(run)
  state = run.get_state()
  want = next(run)
  resumed = make()
  resumed.set_state(state)
  got = next(resumed)
  np.testing.assert_array_equal(np.asarray(got.rejected), np.asarray(want.rejected))


def test_each_epoch_is_a_permutation_and_epochs_differ(pairs):
  it = pipeline.BatchIterator(pairs, batches.PreferenceBatch, 64, seed=2, num_epochs=2)
  seen = []
  for _ in it:
    seen.append(it.last_indices)
  assert len(seen) == 16
  e0, e1 = np.concatenate(seen[:8]), np.concatenate(seen[8:])
  assert sorted(e0) == sorted(e1) == list(range(512))
  assert not np.array_equal(e0, e1)


def test_set_state_refuses_state_of_another_run(pairs):
  it = pipeline.BatchIterator(pairs, batches.PreferenceBatch, 64, seed=2)
  other_seed = dict(it.get_state(), seed=3)
  with pytest.raises(pipeline.DataStateError, match="seed"):
    it.set_state(other_seed)
  changed = dict(pairs, chosen=pairs["chosen"][::-1])
  other_data = pipeline.BatchIterator(changed, batches.PreferenceBatch, 64, seed=2)
  with pytest.raises(pipeline.DataStateError, match="fingerprint"):
    other_data.set_state(it.get_state())


def test_orders():
  assert pipeline.epoch_order(10, 2, "ordered", 0, 5).tolist() == list(range(10))
  win = pipeline.epoch_order(40, 4, "window", seed=0, epoch=0, window_batches=2)
  for start in range(0, 40, 8):
    assert sorted(win[start:start + 8]) == list(range(start, start + 8))
  assert not np.array_equal(win, np.arange(40))
  again = pipeline.epoch_order(40, 4, "window", seed=0, epoch=0, window_batches=2)
  np.testing.assert_array_equal(win, again)
  uni = pipeline.epoch_order(40, 4, "uniform", seed=0, epoch=0)
  assert sorted(uni) == list(range(40)) and not np.array_equal(uni, np.arange(40))


def test_hosts_read_disjoint_shards(env_tasks):
  name = env_tasks["sp"]["prompts"]
  parts = [pipeline.load_records(name, "validation", "prompts", process_index=i,
                                 process_count=2)["prompt"] for i in range(2)]
  assert len(parts[0]) == len(parts[1]) == 64
  texts = [set(_texts(p, left=True)) for p in parts]
  assert not texts[0] & texts[1]
  assert texts[0] | texts[1] == set(E.Environment().prompts("validation", 128))
  it = pipeline.BatchIterator({"prompt": parts[1], "prompt_mask": parts[1] != 0},
                              batches.PromptBatch, 32, process_count=2)
  assert it.local_batch == 16 and it.get_state()["process_count"] == 2


def test_tensorflow_never_takes_an_accelerator(monkeypatch):
  calls = []
  monkeypatch.setattr(tf_setup.tf.config, "set_visible_devices",
                      lambda devices, kind: calls.append((list(devices), kind)))
  tf_setup.hide_accelerators()
  assert calls == [([], "GPU"), ([], "TPU")]
  assert tf_setup.tf.config.get_visible_devices("GPU") == []


# -- virtual shards: the same global batches on any process count -------------


def _global_batches(provider, hosts, n, v=8, batch=32, order="uniform", state=None):
  """n global batches as the concatenation of `hosts` simulated hosts' local batches."""
  its = [pipeline.make_iterator(provider, "train", "pairs", batch, seed=5, order=order,
                                process_index=h, process_count=hosts, virtual_shards=v)
         for h in range(hosts)]
  if state is not None:
    for it in its:
      it.set_state(state)
  out = [np.concatenate([it.next_local().chosen for it in its]) for _ in range(n)]
  return out, its


def test_virtual_shards_make_batches_independent_of_the_process_count(env_tasks):
  name = env_tasks["sp"]["pairs"]
  # 512 records, 8 virtual shards of 64, 4 rows each per batch: 16 batches an epoch.
  one, (it1,) = _global_batches(name, 1, 20)
  assert it1.shards == list(range(8)) and it1.batches_per_epoch == 16
  for hosts in (2, 4):
    many, its = _global_batches(name, hosts, 20)
    for a, b in zip(one, many):
      np.testing.assert_array_equal(a, b)
    # each host read only its own virtual shards: disjoint records
    seen = [set(map(bytes, np.concatenate([it.records["prompt"], it.records["chosen"]], 1)))
            for it in its]
    assert sum(map(len, seen)) == len(set().union(*seen)) == 512
    assert its[1].shards == list(range(8 // hosts, 2 * (8 // hosts)))
  # rows of virtual shard v fill rows [4v, 4v + 4) of every batch
  part = pipeline.load_records(name, "train", "pairs", process_index=3, process_count=8)
  shard3 = set(map(bytes, part["chosen"]))
  assert all(set(map(bytes, b[12:16])) <= shard3 for b in one)
  assert not np.array_equal(one[0], one[16])  # epoch 1 reshuffled


def test_state_saved_on_two_hosts_resumes_on_one(env_tasks):
  name = env_tasks["sp"]["pairs"]
  want, _ = _global_batches(name, 1, 9)
  _, its = _global_batches(name, 2, 4)
  saved = json.loads(json.dumps(its[0].get_state()))
  other = its[1].get_state()
  # Simulated hosts know their own shards only (real processes gather all of them).
  assert sorted(saved.pop("shards")) == ["0", "1", "2", "3"]
  assert sorted(other.pop("shards")) == ["4", "5", "6", "7"] and saved == other
  got, _ = _global_batches(name, 1, 5, state=its[0].get_state())
  for a, b in zip(want[4:], got):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(pipeline.DataStateError, match="virtual_shards"):
    _global_batches(name, 1, 1, v=4, state=its[0].get_state())


def test_virtual_shards_must_fit_batch_and_hosts(env_tasks):
  name = env_tasks["sp"]["pairs"]
  with pytest.raises(pipeline.DataStateError, match="does not split into"):
    pipeline.make_iterator(name, "train", "pairs", 12, virtual_shards=8)
  with pytest.raises(pipeline.DataStateError, match="not a multiple of the 3 processes"):
    pipeline.make_iterator(name, "train", "pairs", 24, virtual_shards=8, process_index=0,
                           process_count=3)

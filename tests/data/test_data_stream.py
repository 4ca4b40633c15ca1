"""D_online: written in chunks, replayed exactly (ordered), shuffled, window-shuffled."""
import hashlib
import json
import logging
import os
import re

import numpy as np
import pytest

from alignment import sharding
from alignment.data import batches
from alignment.data import pipeline
from alignment.data import stream

B, LP, LR, STEPS = 8, 6, 5, 12


def _step_arrays(step, rows=B, salt=0):
  """One online batch as a sampler would hand it over: canonical padding."""
  rng = np.random.default_rng([step, salt])
  def ragged(length, left):
    n = rng.integers(1, length + 1, size=rows)
    idx = np.arange(length)[None]
    mask = (idx >= length - n[:, None]) if left else (idx < n[:, None])
    return np.where(mask, rng.integers(2, 160, size=(rows, length)), 0).astype(np.int32), \
        mask.astype(np.int32)
  p, pm = ragged(LP, True)
  y1, m1 = ragged(LR, False)
  y2, m2 = ragged(LR, False)
  return dict(prompt=p, prompt_mask=pm, response_1=y1, response_1_mask=m1, response_2=y2,
              response_2_mask=m2, verdict=rng.integers(0, 2, size=rows),
              proxy_prob=rng.random(rows).astype(np.float32))


def _write(directory, steps, flush_every=5, salt=0, **kwargs):
  w = stream.StreamWriter(directory, global_batch_size=B, prompt_length=LP, response_length=LR,
                          extras=("golden_1",), **kwargs)
  written = {}
  for s in steps:
    a = _step_arrays(s, salt=salt)
    written[s] = a
    w.write(s, **a, extras={"golden_1": a["proxy_prob"] * 2})
    if (s + 1) % flush_every == 0:
      w.flush()
  w.close()
  return written


def _chosen(a):
  win = a["verdict"].astype(bool)[:, None]
  return (np.where(win, a["response_1"], a["response_2"]),
          np.where(win, a["response_1_mask"], a["response_2_mask"]),
          np.where(win, a["response_2"], a["response_1"]),
          np.where(win, a["response_2_mask"], a["response_1_mask"]))


@pytest.fixture()
def written(tmp_path):
  d = str(tmp_path / "online")
  return d, _write(d, range(STEPS))


def test_chunks_are_whole_files_named_with_their_checksums(written):
  d, _ = written
  names = sorted(n for n in os.listdir(d))
  assert [re.sub(r"-[0-9a-f]{64}\.", ".", n) for n in names] == [
      "chunk-000000000-000000004-h0000.tfrecord", "chunk-000000005-000000009-h0000.tfrecord",
      "chunk-000000010-000000011-h0000.tfrecord", "stream.json"]
  for n in names[:-1]:
    with open(os.path.join(d, n), "rb") as f:
      assert n.split("-")[4].split(".")[0] == hashlib.sha256(f.read()).hexdigest()


def test_ordered_replay_is_the_written_stream_bit_for_bit(written):
  d, w = written
  it = stream.replay_iterator(d, order="ordered", num_epochs=1)
  got = list(it)
  assert len(got) == STEPS
  for step, batch in enumerate(got):
    a = w[step]
    chosen, chosen_mask, rejected, rejected_mask = _chosen(a)
    for name, want in (("prompt", a["prompt"]), ("prompt_mask", a["prompt_mask"]),
                       ("chosen", chosen), ("chosen_mask", chosen_mask),
                       ("rejected", rejected), ("rejected_mask", rejected_mask)):
      x = getattr(batch, name)
      assert x.dtype == np.int32 and np.array_equal(x, want), (step, name)
  rec = stream.read_stream(d)
  assert rec["step"].tolist() == np.repeat(np.arange(STEPS), B).tolist()
  np.testing.assert_array_equal(rec["proxy_prob"], np.concatenate(
      [w[s]["proxy_prob"] for s in range(STEPS)]))
  np.testing.assert_array_equal(rec["extra/golden_1"], rec["proxy_prob"] * 2)


def test_ordered_replay_as_global_arrays(written):
  d, w = written
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  it = stream.replay_iterator(d, mesh=mesh)
  next(it)
  second = next(it)
  assert second.chosen.sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_array_equal(np.asarray(second.chosen), _chosen(w[1])[0])


def _keys(it, batch):
  rec = it.records
  return {(int(s), int(p)) for s, p in zip(rec["step"][it.last_indices],
                                           rec["position"][it.last_indices])}


def test_uniform_shuffle_is_reproducible_and_mixes_batches(written):
  d, _ = written
  runs = []
  for seed in (0, 0, 1):
    it = stream.replay_iterator(d, order="uniform", seed=seed, num_epochs=1)
    runs.append([it.last_indices.copy() for _ in iter(lambda: next(it, None), None)])
  assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
  assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2]))
  flat = np.concatenate(runs[0])
  assert sorted(flat) == list(range(STEPS * B))
  assert len({int(i) // B for i in runs[0][0]}) > 1, "a shuffled batch mixes online steps"


@pytest.mark.parametrize("k", [1, 4])
def test_window_shuffle_moves_rows_only_within_k_batches(written, k):
  d, _ = written
  it = stream.replay_iterator(d, order="window", window_batches=k, seed=3, num_epochs=1)
  batches_seen = []
  for t in range(STEPS):
    next(it)
    batches_seen.append(_keys(it, t))
  for start in range(0, STEPS, k):
    window = set().union(*batches_seen[start:start + k])
    assert {s for s, _ in window} == set(range(start, min(start + k, STEPS)))
    assert len(window) == B * min(k, STEPS - start)
  if k > 1:
    assert any(len({s for s, _ in b}) > 1 for b in batches_seen)
  again = stream.replay_iterator(d, order="window", window_batches=k, seed=3, num_epochs=1)
  for t in range(STEPS):
    next(again)
    assert _keys(again, t) == batches_seen[t]


def test_replay_state_restores(written):
  d, _ = written
  it = stream.replay_iterator(d, order="window", window_batches=4, seed=5)
  for _ in range(5):
    it.next_local()
  state = it.get_state()
  want = it.next_local()
  other = stream.replay_iterator(d, order="window", window_batches=4, seed=5)
  other.set_state(state)
  np.testing.assert_array_equal(other.next_local().chosen, want.chosen)


def test_resume_cuts_the_stream_back_to_the_checkpoint(written):
  d, w = written
  with open(os.path.join(d, "chunk-000000010-000000011-h0000.tfrecord.tmp-99"), "wb") as f:
    f.write(b"half a chunk")  # a crash's leftover
  w2 = _write(d, range(7, 10), salt=1, resume_step=7)
  assert not any(".tmp-" in n for n in os.listdir(d))
  rec = stream.read_stream(d)
  assert rec["step"].max() == 9
  for s in range(10):
    a = w[s] if s < 7 else w2[s]
    np.testing.assert_array_equal(rec["prompt"][rec["step"] == s], a["prompt"])


def test_a_second_writer_without_resume_is_refused(written):
  d, _ = written
  with pytest.raises(stream.StreamError, match="resume_step"):
    stream.StreamWriter(d, global_batch_size=B, prompt_length=LP, response_length=LR,
                        extras=("golden_1",))
  with pytest.raises(stream.StreamError, match="written with"):
    stream.StreamWriter(d, global_batch_size=B * 2, prompt_length=LP, response_length=LR,
                        resume_step=3)


def _chunk(d, first):
  [name] = [n for n in os.listdir(d) if n.startswith(f"chunk-{first:09d}-")]
  return os.path.join(d, name)


def test_a_lost_chunk_is_named(written):
  d, _ = written
  os.remove(_chunk(d, 5))
  with pytest.raises(stream.StreamError, match="step 5 is missing"):
    stream.read_stream(d)


def _flip_byte(path, offset):
  with open(path, "r+b") as f:
    f.seek(offset)
    byte = f.read(1)
    f.seek(offset)
    f.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_chunk_is_refused_naming_file_and_record(written, damage):
  d, _ = written
  victim = _chunk(d, 5)
  size = os.path.getsize(victim)
  if damage == "truncate":  # a disk that filled up mid-copy: the last record cut short
    with open(victim, "r+b") as f:
      f.truncate(size - 7)
  else:  # one bit of one record's payload, deep in the file
    _flip_byte(victim, size // 2)
  for read in (lambda: stream.read_stream(d),
               lambda: stream.replay_iterator(d, order="ordered", num_epochs=1),
               lambda: _write(d, range(8, 12), resume_step=8)):  # cutting it back
    with pytest.raises(stream.StreamError) as e:
      read()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(victim + ": contents do not match"), msg
    assert (", record 40 (truncated" if damage == "truncate" else ", record ") in msg, msg


def test_an_altered_stream_json_is_refused(written):
  d, _ = written
  path = os.path.join(d, "stream.json")
  with open(path) as f:
    text = f.read()
  with open(path, "w") as f:
    f.write(text.replace('"global_batch_size": 8', '"global_batch_size": 4'))
  with pytest.raises(stream.StreamError, match=r"stream\.json: contents do not match"):
    stream.read_stream(d)


def test_a_stream_without_checksums_is_read_with_a_warning(written, caplog, monkeypatch):
  monkeypatch.setattr(logging.getLogger("alignment"), "propagate", True)  # setup_host stops it
  d, w = written
  for n in os.listdir(d):  # as written before chunks and stream.json carried checksums
    if n.startswith("chunk-"):
      os.rename(os.path.join(d, n), os.path.join(d, re.sub(r"-[0-9a-f]{64}\.", ".", n)))
  path = os.path.join(d, "stream.json")
  with open(path) as f:
    meta = json.load(f)
  del meta["checksum"]
  with open(path, "w") as f:
    json.dump(meta, f)
  rec = stream.read_stream(d)
  np.testing.assert_array_equal(rec["prompt"][rec["step"] == 11], w[11]["prompt"])
  assert "3 of 3 chunks written before streams carried checksums: read unverified" in \
      caplog.text


def test_bad_shapes_are_refused(tmp_path):
  w = stream.StreamWriter(str(tmp_path / "s"), global_batch_size=B, prompt_length=LP,
                          response_length=LR)
  a = _step_arrays(0)
  a["response_2"] = a["response_2"][:, :3]
  with pytest.raises(stream.StreamError, match="response_2 has shape"):
    w.write(0, **a)


def test_two_hosts_write_and_read_their_halves(tmp_path):
  d = str(tmp_path / "two")
  full = {s: _step_arrays(s) for s in range(4)}
  for host in (0, 1):
    w = stream.StreamWriter(d, global_batch_size=B, prompt_length=LP, response_length=LR,
                            process_index=host, process_count=2)
    for s, a in full.items():
      half = {k: v[host * 4:(host + 1) * 4] for k, v in a.items()}
      w.write(s, **half)
    w.close()
  whole = stream.replay_iterator(d, process_index=0, process_count=1)
  for s in range(4):
    np.testing.assert_array_equal(whole.next_local().chosen, _chosen(full[s])[0])
  second = stream.replay_iterator(d, process_index=1, process_count=2)
  assert second.local_batch == 4
  np.testing.assert_array_equal(second.next_local().prompt, full[0]["prompt"][4:])


def test_stream_as_a_seqio_task(written):
  d, w = written
  name = stream.register_stream(d, "t_stream")
  rec = pipeline.load_records(name, "train", "pairs", LP, LR)
  ordered = stream.replay_iterator(d, num_epochs=1)
  want = np.concatenate([b.chosen for b in ordered])
  np.testing.assert_array_equal(rec["chosen"], want)
  assert isinstance(pipeline.batch_from_records(rec, batches.PreferenceBatch, slice(0, 2)),
                    batches.PreferenceBatch)


def _write_on_hosts(d, steps, hosts, resume_step=None):
  full = {s: _step_arrays(s) for s in steps}
  per = B // hosts
  for host in range(hosts):
    with stream.StreamWriter(d, global_batch_size=B, prompt_length=LP, response_length=LR,
                             process_index=host, process_count=hosts,
                             resume_step=resume_step) as w:
      for s, a in full.items():
        w.write(s, **{k: v[host * per:(host + 1) * per] for k, v in a.items()})
  return full


def test_virtual_shard_replay_is_the_same_on_one_or_two_hosts(tmp_path):
  d = str(tmp_path / "s")
  full = _write_on_hosts(d, range(6), hosts=2)
  for order in ("ordered", "uniform"):
    one = stream.replay_iterator(d, order=order, seed=1, virtual_shards=4, process_index=0,
                                 process_count=1)
    two = [stream.replay_iterator(d, order=order, seed=1, virtual_shards=4, process_index=h,
                                  process_count=2) for h in (0, 1)]
    for step in range(9):
      whole = one.next_local()
      halves = [it.next_local() for it in two]
      np.testing.assert_array_equal(whole.chosen, np.concatenate([h.chosen for h in halves]))
      if order == "ordered" and step < 6:  # batch t is step t, row for row
        np.testing.assert_array_equal(whole.chosen, _chosen(full[step])[0])


def test_a_stream_of_two_hosts_resumes_on_one(tmp_path):
  """Resumed at step 3 by one process: the old hosts' later rows are cut back."""
  d = str(tmp_path / "s")
  _write_on_hosts(d, range(5), hosts=2)
  later = {s: _step_arrays(s, salt=9) for s in range(3, 6)}
  with stream.StreamWriter(d, global_batch_size=B, prompt_length=LP, response_length=LR,
                           process_index=0, process_count=1, resume_step=3) as w:
    for s, a in later.items():
      w.write(s, **a)
  rec = stream.read_stream(d, process_index=0, process_count=1)
  assert rec["step"].tolist() == [s for s in range(6) for _ in range(B)]
  np.testing.assert_array_equal(rec["prompt"][3 * B:4 * B], later[3]["prompt"])
  np.testing.assert_array_equal(rec["prompt"][:B], _step_arrays(0)["prompt"])


ARRAYS = ("prompt", "prompt_mask", "response_1", "response_1_mask", "response_2",
          "response_2_mask")


def test_the_online_writer_writes_one_step_a_call_and_flushes_when_told(tmp_path):
  """The online loop's writer: SampledPairs and the verdict of a step in one call, the
  sampling step as an extra, a chunk only where the loop checkpoints (flush=True)."""
  d = str(tmp_path / "online")
  w = stream.OnlineWriter(d, global_batch_size=B, prompt_length=LP, response_length=LR,
                          vocab="sentencepiece", resume_step=0)
  written = {s: _step_arrays(s) for s in range(4)}
  for s, a in written.items():
    sampled = batches.SampledPairs(**{k: a[k] for k in ARRAYS})
    w.write(s, sampled, a["verdict"].astype(bool), a["proxy_prob"], sampling_step=s - 1,
            flush=s == 1)
  assert len(stream.chunk_files(d)) == 1  # steps 0-1; steps 2-3 are pending
  w.close()
  assert len(stream.chunk_files(d)) == 2
  rec = stream.read_stream(d)
  assert stream.read_meta(d)["extras"] == ["sampling_step"]
  np.testing.assert_array_equal(rec["extra/sampling_step"], np.repeat(np.arange(4) - 1.0, B))
  for s, a in written.items():
    rows = rec["step"] == s
    for k in ARRAYS + ("verdict",):
      np.testing.assert_array_equal(rec[k][rows], a[k])
    np.testing.assert_array_equal(rec["proxy_prob"][rows], a["proxy_prob"])

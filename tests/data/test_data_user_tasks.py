"""User data in: a Hugging Face tokenizer.json as a vocabulary, import directories as tasks.

The tokenizer is built by tests/hf_tokenizer.py (a tiny byte-level BPE trained
on the fixtures' texts, with Llama 3's EOS name appended at the end and no pad
token), never downloaded.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alignment import config as config_lib
from alignment.data import import_pairs as ip
from alignment.data import pipeline, tasks
from alignment.data import vocab as V
from alignment.data.tf_setup import tf
from hf_tokenizer import EOS, build_tokenizer as _build_tokenizer, fixture_texts as _fixture_texts  # noqa: E402
import xla_env  # tests/xla_env.py

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
  return _build_tokenizer(str(tmp_path_factory.mktemp("tok") / "tokenizer.json"))


def test_tokenizer_json_vocabulary_round_trips_and_takes_its_ids_from_the_tokenizer(
    tokenizer_json):
  v = V.get_vocabulary(tokenizer_json)
  eos = v.tokenizer.token_to_id(EOS)
  assert eos == v.vocab_size - 1 and v.eos_id == eos != 1  # Llama 3 style: EOS at the end
  assert v.pad_id == 0 and v.unk_id is None  # no pad token, byte-level: no UNK
  assert V.vocabulary_name(v) == os.path.abspath(tokenizer_json)
  assert V.get_vocabulary(os.path.dirname(tokenizer_json)) == v  # a model directory too
  texts = _fixture_texts() + ["unseen wörds ✓ 123"]
  ids = V.encode_batch(v, texts)
  assert all(eos not in row for row in ids)  # no specials added
  assert V.decode_batch(v, ids) == texts
  assert v.decode(ids[0] + [eos] + ids[1]) == texts[0]  # seqio's decode: up to EOS
  # seqio's tf paths (a tokenize preprocessor, decode_tf on [L] and [B, L])
  ds = tf.data.Dataset.from_tensor_slices(texts[:2]).map(v.encode_tf)
  assert [list(x) for x in ds.as_numpy_iterator()] == ids[:2]
  row = ids[1] + [eos, ids[0][0]]
  assert v.decode_tf(tf.constant(row)).numpy().decode() == texts[1]
  batch = tf.constant([row[:4] + [eos, 5], row[:6]])
  assert [b.decode() for b in v.decode_tf(batch).numpy()] == V.decode_batch(
      v, [row[:4], row[:6]])


def test_tokenizer_config_names_the_eos_and_a_tokenizer_without_one_is_refused(tmp_path):
  path = _build_tokenizer(str(tmp_path / "a" / "tokenizer.json"), specials=("<pad>", "<eot>"))
  with pytest.raises(ValueError, match=r"a/tokenizer.json: the tokenizer has no EOS token"):
    V.get_vocabulary(path)
  with open(tmp_path / "a" / "tokenizer_config.json", "w") as f:
    json.dump({"eos_token": {"content": "<eot>"}, "pad_token": "<pad>"}, f)
  v = V.get_vocabulary.__wrapped__(path)  # uncached: the config changed
  assert (v.pad_id, v.eos_id) == (v.tokenizer.token_to_id("<pad>"),
                                  v.tokenizer.token_to_id("<eot>"))
  # The sampler stops at the tokenizer's EOS and never draws its PAD; a tokenizer
  # without PAD (Llama 3) or padding with its EOS has nothing to keep out.
  assert V.sampling_ids(v) == {"eos_id": v.eos_id, "pad_id": v.pad_id} and v.eos_id > 1
  assert V.sampling_ids(V.get_vocabulary("sentencepiece")) == {"eos_id": 1, "pad_id": 0}
  with open(tmp_path / "a" / "tokenizer_config.json", "w") as f:
    json.dump({"eos_token": "<eot>", "pad_token": "<eot>"}, f)
  assert V.sampling_ids(V.get_vocabulary.__wrapped__(path))["pad_id"] is None


def test_import_with_a_tokenizer_json_decodes_back_to_the_text(tmp_path, tokenizer_json):
  out = str(tmp_path / "tldr_bpe")
  assert ip.main([f"--input={os.path.join(FIXTURES, 'tldr.jsonl')}", "--format=tldr",
                  f"--output={out}", f"--vocab={tokenizer_json}"]) == 0
  meta = ip.read_metadata(out)
  v = V.get_vocabulary(tokenizer_json)
  assert meta["vocab"] == os.path.abspath(tokenizer_json)
  name = tasks.resolve(out)  # by its directory
  assert tasks.task_vocabulary(out) == v
  rec = pipeline.load_records(name, "train", "pairs", meta["max_prompt_tokens"],
                              meta["max_response_tokens"])
  records = list(ip.read_records(os.path.join(FIXTURES, "tldr.jsonl"), "tldr"))
  for field, left in (("prompt", True), ("chosen", False), ("rejected", False)):
    rows = V.strip_left_padding(rec[field], rec[field + "_mask"])
    if not left:  # responses end with the tokenizer's EOS, not the package's
      assert all(r[-1] == v.eos_id for r in rows)
      rows = [r[:-1] for r in rows]
    assert V.decode_batch(v, rows) == [getattr(r, field) for r in records]


def _import(tmp_path, sub, name=None):
  out = str(tmp_path / sub)
  ip.import_file(os.path.join(FIXTURES, "pairs.jsonl"), "jsonl", out, name=name)
  return out


def test_names_under_alignment_task_dirs_resolve(tmp_path, monkeypatch):
  a = _import(tmp_path / "imports", "dirs_a", name="dirs_task_a")
  monkeypatch.setenv(tasks.TASK_DIRS_ENV, f"{tmp_path / 'nothing_here'}")
  with pytest.raises(config_lib.ConfigError, match=r"ALIGNMENT_TASK_DIRS: .*nothing_here: no "
                     "such directory"):
    tasks.resolve("dirs_task_a")
  monkeypatch.setenv(tasks.TASK_DIRS_ENV, str(tmp_path / "imports"))  # a folder of imports
  assert tasks.resolve("dirs_task_a_prompts") == "dirs_task_a_prompts"
  assert tasks.task_vocabulary("dirs_task_a") == V.get_vocabulary("byte")
  assert len(pipeline.load_records("dirs_task_a", "train", "pairs", 512, 128)["prompt"]) == (
      ip.read_metadata(a)["num_records"])
  with pytest.raises(pipeline.DataStateError, match=r"dirs_task_a: no split 'eval' \(it has "
                     r"train\)"):
    pipeline.load_records("dirs_task_a", "eval", "prompts", 512)
  with pytest.raises(config_lib.ConfigError, match="no such seqio task or mixture, import "
                     "directory or name under ALIGNMENT_TASK_DIRS"):
    tasks.task_vocabulary("dirs_task_unknown")
  # a second directory claiming the same name is refused, not swapped in
  b = _import(tmp_path, "dirs_b", name="dirs_task_a")
  with pytest.raises(config_lib.ConfigError, match=r"dirs_b: its task name 'dirs_task_a' is "
                     r"taken by .*dirs_a"):
    tasks.resolve(b)
  assert tasks.resolve(a) == "dirs_task_a"


@pytest.mark.parametrize("damage,message", [
    ("absent", r"bad_absent: no such directory"),
    ("empty", r"bad_empty: no metadata.json; not a directory written by import_pairs"),
    ("json", r"bad_json/metadata.json: unreadable"),
    ("keys", r"bad_keys/metadata.json: malformed, no vocab, num_records"),
    ("records", r"bad_records: no pairs.tfrecord"),
    ("altered", r"bad_altered/metadata.json: missing or contents do not match SHA256SUMS"),
])
def test_a_missing_or_malformed_import_directory_is_one_config_error(tmp_path, damage, message):
  out = _import(tmp_path, f"bad_{damage}", name=f"bad_{damage}")
  meta_path = os.path.join(out, ip.META)
  if damage in ("json", "keys", "records"):  # an import from before checksums: read
    os.remove(os.path.join(out, "SHA256SUMS"))  # unverified, then checked for its shape
  if damage == "absent":
    out += "_gone"
    message = message.replace("absent", "absent_gone")
  elif damage == "empty":
    os.remove(meta_path)
  elif damage in ("json", "altered"):
    with open(meta_path, "w") as f:
      f.write("{not json")
  elif damage == "keys":
    with open(meta_path, "w") as f:
      json.dump({"name": "bad_keys"}, f)
  else:
    os.remove(os.path.join(out, ip.RECORDS))
  with pytest.raises(config_lib.ConfigError, match=message) as e:
    tasks.task_vocabulary(out)
  assert "\n" not in str(e.value)


@pytest.mark.e2e
def test_offline_run_on_an_import_directory_in_a_fresh_process(tmp_path, tokenizer_json):
  """No in-process registration can help: `python -m alignment.main` gets the directory."""
  data = str(tmp_path / "tldr")
  ip.import_file(os.path.join(FIXTURES, "tldr.jsonl"), "tldr", data, vocab=tokenizer_json,
                 max_prompt_tokens=48, max_response_tokens=16, on_long="truncate")
  # One device (3 records), the session's XLA flags (tests/xla_env.py).
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=xla_env.flags(1))
  env.pop(tasks.TASK_DIRS_ENV, None)
  workdir = str(tmp_path / "run")
  proc = subprocess.run(
      [sys.executable, "-m", "alignment.main", "--config=configs/offline.py:tiny",
       f"--config.data.task={data}", "--config.data.batch_size=2",
       "--config.data.virtual_shards=1", "--config.data.prompt_len=48",
       "--config.data.response_len=16", "--config.train.num_steps=2",
       "--config.train.log_every=1", "--config.train.async_checkpoint=False",
       f"--workdir={workdir}"],
      capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if '"loss"' in line]
  assert [r["step"] for r in rows] == [1, 2]
  assert all(np.isfinite(r["loss"]) for r in rows)
  # The export keeps its data's tokenizer and ids (alignment.models.export reads them).
  with open(os.path.join(workdir, "export", "vocabulary.json")) as f:
    tokens = json.load(f)
  v = V.get_vocabulary(tokenizer_json)
  assert tokens == V.token_record(v)
  assert tokens["vocabulary"] == os.path.abspath(tokenizer_json)
  assert tokens["eos_token_id"] == v.tokenizer.token_to_id(EOS) and tokens["pad_token_id"] is None

"""import_pairs' held-out splits (by a hash of the prompt) and its SFT view."""
import json
import os

import pytest

from alignment.data import import_pairs as ip
from alignment.data import pipeline


def _write_pairs(path, n):
  with open(path, "w") as f:
    for i in range(n):
      f.write(json.dumps({"prompt": f"question {i}?", "chosen": f"answer {i}.",
                          "rejected": "no."}) + "\n")
  return str(path)


def test_splits_are_a_function_of_the_prompt(tmp_path):
  src = _write_pairs(tmp_path / "p.jsonl", 64)
  meta = ip.import_file(src, "jsonl", str(tmp_path / "a"), validation_fraction=0.25,
                        eval_fraction=0.25)
  assert sum(meta["splits"].values()) == 64 and set(meta["splits"]) == {
      "train", "validation", "eval"}
  assert all(8 <= n <= 40 for n in meta["splits"].values()), meta["splits"]
  # The same records in another order fall in the same splits.
  lines = open(src).read().splitlines()[::-1]
  rev = tmp_path / "r.jsonl"
  rev.write_text("\n".join(lines) + "\n")
  assert ip.import_file(str(rev), "jsonl", str(tmp_path / "b"), validation_fraction=0.25,
                        eval_fraction=0.25)["splits"] == meta["splits"]
  for i in range(64):
    expect = ip.split_of(f"question {i}?", 0.25, 0.25)
    assert expect in meta["splits"]
  name = ip.register_imported(str(tmp_path / "a"))
  for split, n in meta["splits"].items():
    r = pipeline.load_records(name, split, "pairs", 16, 16, process_index=0, process_count=1)
    assert len(r["prompt"]) == n
  sft = pipeline.load_records(name + "_sft", "validation", "sft", 16, 16, process_index=0,
                              process_count=1)
  pairs = pipeline.load_records(name, "validation", "pairs", 16, 16, process_index=0,
                                process_count=1)
  assert (sft["response"] == pairs["chosen"]).all()  # the SFT view: the chosen response


def test_eval_split_defaults_to_validation_and_empty_split_is_an_error(tmp_path):
  src = _write_pairs(tmp_path / "p.jsonl", 32)
  meta = ip.import_file(src, "jsonl", str(tmp_path / "a"), validation_fraction=0.3)
  name = ip.register_imported(str(tmp_path / "a"))
  ev = pipeline.load_records(name + "_prompts", "eval", "prompts", 16, 16, process_index=0,
                             process_count=1)
  assert len(ev["prompt"]) == meta["splits"]["validation"]
  one = _write_pairs(tmp_path / "one.jsonl", 1)
  with pytest.raises(ip.BadInput, match="no record fell"):
    ip.import_file(one, "jsonl", str(tmp_path / "b"), validation_fraction=0.5,
                   eval_fraction=0.4)
  assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]  # nothing half-written left


def test_hh_import_with_splits_and_its_sft_view(tmp_path):
  """The HH fixture's transcripts (varied so prompts differ) split by prompt."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, "fixtures", "hh.jsonl")) as f:
    base = [json.loads(line) for line in f if line.strip()]
  src = tmp_path / "hh.jsonl"
  with open(src, "w") as f:
    for i in range(40):
      r = base[i % len(base)]
      f.write(json.dumps({k: v.replace("\n\nHuman: ", f"\n\nHuman: ({i}) ", 1)
                          for k, v in r.items()}) + "\n")
  meta = ip.import_file(str(src), "hh", str(tmp_path / "hh"), validation_fraction=0.25,
                        name="hh_splits")
  assert set(meta["splits"]) == {"train", "validation"} and meta["splits"]["validation"]
  name = ip.register_imported(str(tmp_path / "hh"))
  for split in ("train", "validation", "eval"):
    sft = pipeline.load_records(name + "_sft", split, "sft", 160, 64, process_index=0,
                                process_count=1)
    pairs = pipeline.load_records(name, split, "pairs", 160, 64, process_index=0,
                                  process_count=1)
    assert (sft["response"] == pairs["chosen"]).all() and len(sft["response"])

"""import_pairs: each format in, a registered seqio task out; each bad record named."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from alignment.data import import_pairs as ip
from alignment.data import pipeline
from alignment.data import vocab as V

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")  # shared by every test folder


def _texts(ids_bl, left=False):
  v = V.get_vocabulary("byte")
  rows = V.strip_left_padding(ids_bl) if left else V.cut_at_eos(ids_bl)[0]
  return V.decode_batch(v, rows)


@pytest.mark.parametrize("fmt,file,first", [
    ("jsonl", "pairs.jsonl", ("ana lives in rome . ben has a dog .", "ana : rome",
                              "ana : rome ; ben : dog")),
    ("tldr", "tldr.jsonl", ("SUBREDDIT: r/relationships\nTITLE: Roommate eats my food\nPOST: My "
                            "roommate keeps eating my food and says it is fine because we split "
                            "groceries once.\n\nTL;DR:",
                            "roommate eats my food, claims shared groceries", "I have a roommate")),
    ("hh", "hh.jsonl", ("\n\nHuman: How do I boil an egg?\n\nAssistant:",
                        "Put it in boiling water for nine minutes.", "I don't know.")),
])
def test_each_format_becomes_a_seqio_task(tmp_path, fmt, file, first):
  out = str(tmp_path / f"user_{fmt}")
  assert ip.main([f"--input={os.path.join(FIXTURES, file)}", f"--format={fmt}",
                  f"--output={out}"]) == 0
  meta = ip.read_metadata(out)
  name = ip.register_imported(out)
  assert name == meta["name"] == f"user_user_{fmt}"
  rec = pipeline.load_records(name, "train", "pairs", meta["max_prompt_tokens"],
                              meta["max_response_tokens"])
  assert len(rec["prompt"]) == meta["num_records"]
  got = (_texts(rec["prompt"][:1], left=True)[0], _texts(rec["chosen"][:1])[0],
         _texts(rec["rejected"][:1])[0])
  assert got == first
  prompts = pipeline.load_records(name + "_prompts", "train", "prompts",
                                  meta["max_prompt_tokens"])
  np.testing.assert_array_equal(prompts["prompt"], rec["prompt"])


def test_tldr_choice_picks_the_chosen_summary_and_cnn_articles_work(tmp_path):
  out = str(tmp_path / "t")
  ip.import_file(os.path.join(FIXTURES, "tldr.jsonl"), "tldr", out)
  rec = pipeline.load_records(ip.register_imported(out), "train", "pairs", 512, 128)
  assert _texts(rec["chosen"])[1] == "roommate takes my food without asking"
  assert _texts(rec["prompt"], left=True)[2] == (
      "ARTICLE: The city council approved a new park on Monday after a long debate.\n\nTL;DR:")


def test_hh_multi_turn_prompt_is_the_shared_prefix(tmp_path):
  out = str(tmp_path / "h")
  ip.import_file(os.path.join(FIXTURES, "hh.jsonl"), "hh", out)
  rec = pipeline.load_records(ip.register_imported(out), "train", "pairs", 512, 128)
  assert _texts(rec["prompt"], left=True)[1].endswith("Name a colour.\n\nAssistant:")
  assert _texts(rec["chosen"])[1] == "Blue." and _texts(rec["rejected"])[1] == "Why?"


def test_truncate_policy_keeps_prompt_ends_and_response_starts(tmp_path):
  out = str(tmp_path / "cut")
  meta = ip.import_file(os.path.join(FIXTURES, "pairs.jsonl"), "jsonl", out,
                        max_prompt_tokens=10, max_response_tokens=6, on_long="truncate")
  assert meta["truncated"] == {"prompt": 3, "chosen": 2, "rejected": 2}  # "Fünf." is 7 bytes
  rec = pipeline.load_records(ip.register_imported(out), "train", "pairs", 10, 6)
  assert _texts(rec["prompt"], left=True)[0] == "as a dog ."  # the last 10 bytes
  cut, ended = V.cut_at_eos(rec["chosen"])
  assert V.decode_batch(V.get_vocabulary("byte"), cut)[1] == "Soft r"
  assert ended.tolist() == [False, False, True]  # cut responses carry no EOS


GOOD = '{"id": "a", "prompt": "p", "chosen": "c", "rejected": "r"}\n'
BAD = [
    ("missing field", b'{"id": "b", "prompt": "p", "chosen": "c"}', "jsonl",
     'field "rejected" is missing'),
    ("mistyped field", b'{"id": "b", "prompt": 3, "chosen": "c", "rejected": "r"}', "jsonl",
     'field "prompt": expected text, got int'),
    ("empty text", b'{"id": "b", "prompt": "p", "chosen": "  ", "rejected": "r"}', "jsonl",
     'field "chosen": empty text'),
    ("invalid utf-8", b'{"id": "b", "prompt": "p\xff", "chosen": "c", "rejected": "r"}', "jsonl",
     "invalid UTF-8"),
    ("invalid json", b'{"id": "b", "prompt": "p",', "jsonl", "not valid JSON"),
    ("not an object", b'["p", "c", "r"]', "jsonl", "expected a JSON object"),
    ("duplicate id", b'{"id": "a", "prompt": "p", "chosen": "c", "rejected": "r"}', "jsonl",
     'field "id": \'a\' duplicates line 1'),
    ("over the limit", b'{"id": "b", "prompt": "' + b"x" * 600 + b'", "chosen": "c", '
     b'"rejected": "r"}', "jsonl", 'field "prompt": 600 tokens, over the limit of 512'),
    ("tldr bad choice", b'{"info": {"post": "p"}, "summaries": [{"text": "a"}, {"text": "b"}], '
     b'"choice": 2}', "tldr", 'field "choice": expected 0 or 1, got 2'),
    ("tldr one summary", b'{"info": {"post": "p"}, "summaries": [{"text": "a"}], "choice": 0}',
     "tldr", 'field "summaries": expected 2 summaries, got 1'),
    ("tldr summary text", b'{"info": {"post": "p"}, "summaries": [{"text": "a"}, {"txt": "b"}], '
     b'"choice": 0}', "tldr", 'field "summaries[1].text" is missing'),
    ("hh no turn", b'{"chosen": "Human: hi", "rejected": "\\n\\nAssistant: x"}', "hh",
     'field "chosen": no "\\n\\nAssistant:" turn'),
    ("hh prefixes differ", b'{"chosen": "\\n\\nHuman: a\\n\\nAssistant: x", "rejected": '
     b'"\\n\\nHuman: b\\n\\nAssistant: y"}', "hh", 'fields "chosen" and "rejected": the '
     'transcripts differ'),
    ("unknown format", b"", "csv", "unknown --format 'csv'"),
]


@pytest.mark.parametrize("why,line,fmt,message", BAD, ids=[b[0] for b in BAD])
def test_bad_records_end_with_one_message_naming_file_line_field(tmp_path, capsys, why, line,
                                                                 fmt, message):
  del why
  first = {"jsonl": GOOD, "csv": GOOD,
           "tldr": '{"info": {"post": "p"}, "summaries": [{"text": "a"}, {"text": "b"}], '
                   '"choice": 0}\n',
           "hh": '{"chosen": "\\n\\nHuman: a\\n\\nAssistant: x", "rejected": '
                 '"\\n\\nHuman: a\\n\\nAssistant: y"}\n'}[fmt]
  src = tmp_path / "in.jsonl"
  src.write_bytes(first.encode() + line + b"\n")
  out = tmp_path / "out"
  assert ip.main([f"--input={src}", f"--format={fmt}", f"--output={out}"]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and err.startswith("import_pairs: error: ")
  assert (message if fmt == "csv" else f"{src}:2: {message}") in err
  assert not out.exists()
  assert os.listdir(tmp_path) == ["in.jsonl"], "nothing half-written beside the output"


def test_the_command_exits_2_without_a_traceback(tmp_path):
  src = tmp_path / "in.jsonl"
  src.write_text(GOOD + '{"prompt": "p", "chosen": "c"}\n')
  proc = subprocess.run(
      [sys.executable, "-m", "alignment.data.import_pairs", f"--input={src}", "--format=jsonl",
       f"--output={tmp_path / 'out'}"], capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
      cwd=ROOT)
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.startswith("import_pairs")]
  assert lines == [f'import_pairs: error: {src}:2: field "rejected" is missing']
  assert "Traceback" not in proc.stderr


def test_existing_output_needs_overwrite_and_is_replaced_whole(tmp_path):
  out = str(tmp_path / "o")
  ip.import_file(os.path.join(FIXTURES, "hh.jsonl"), "hh", out)
  with pytest.raises(ip.BadInput, match="exists already"):
    ip.import_file(os.path.join(FIXTURES, "pairs.jsonl"), "jsonl", out)
  ip.import_file(os.path.join(FIXTURES, "pairs.jsonl"), "jsonl", out, overwrite=True)
  assert ip.read_metadata(out)["source_format"] == "jsonl"
  assert sorted(os.listdir(tmp_path)) == ["o"]
  assert sorted(os.listdir(out)) == ["SHA256SUMS", "metadata.json", "pairs.tfrecord"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "metadata"])
def test_a_damaged_import_is_refused_naming_the_file(tmp_path, damage):
  out = str(tmp_path / "o")
  ip.import_file(os.path.join(FIXTURES, "tldr.jsonl"), "tldr", out)
  victim = os.path.join(out, "metadata.json" if damage == "metadata" else "pairs.tfrecord")
  size = os.path.getsize(victim)
  with open(victim, "r+b") as f:
    if damage == "truncate":
      f.truncate(size - 5)
    else:  # one bit, in the second half of the file
      f.seek(size * 3 // 4)
      byte = f.read(1)
      f.seek(size * 3 // 4)
      f.write(bytes([byte[0] ^ 0x01]))
  with pytest.raises(ip.BadInput) as e:
    ip.register_imported(out)
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(f"{victim}: missing or contents do not match "
                                             "SHA256SUMS"), msg
  if damage == "truncate":
    assert "(truncated;" in msg and ", record 3 " in msg, msg
  if damage == "flip":
    assert ", record " in msg, msg


def test_an_import_without_checksums_is_read_with_a_warning(tmp_path, caplog, monkeypatch):
  monkeypatch.setattr(logging.getLogger("alignment"), "propagate", True)  # setup_host stops it
  out = str(tmp_path / "o")
  ip.import_file(os.path.join(FIXTURES, "hh.jsonl"), "hh", out)
  os.remove(os.path.join(out, "SHA256SUMS"))  # as imported before checksums
  assert ip.read_metadata(out)["source_format"] == "hh"
  assert "imported before imports carried checksums: read unverified" in caplog.text


def test_held_out_split_files_are_checksummed_too(tmp_path):
  """SHA256SUMS once listed only pairs.tfrecord and metadata.json: a damaged
  validation or eval file was read unchecked."""
  src = tmp_path / "in.jsonl"
  src.write_text("".join(f'{{"prompt": "p{i}", "chosen": "c", "rejected": "r"}}\n'
                         for i in range(40)))
  out = str(tmp_path / "o")
  ip.import_file(str(src), "jsonl", out, validation_fraction=0.3, eval_fraction=0.3)
  with open(os.path.join(out, "SHA256SUMS")) as f:
    listed = sorted(line.split()[1] for line in f)
  assert listed == ["metadata.json", "pairs-eval.tfrecord", "pairs-validation.tfrecord",
                    "pairs.tfrecord"]
  victim = os.path.join(out, "pairs-eval.tfrecord")
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) - 5)
  with pytest.raises(ip.BadInput, match=f"^{victim}: missing or contents do not match "
                     "SHA256SUMS.*\\(truncated;"):
    ip.read_metadata(out)


@pytest.mark.parametrize("fmt,file", [("jsonl", "pairs.jsonl"), ("tldr", "tldr.jsonl"),
                                      ("hh", "hh.jsonl")])
def test_each_format_reads_the_same_from_parquet(tmp_path, fmt, file):
  """A Parquet row is the JSON object its columns make: a struct's null field (tldr's
  "post" beside an "article") is an absent one."""
  import json  # pylint: disable=g-import-not-at-top
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  with open(os.path.join(FIXTURES, file)) as f:
    objects = [json.loads(line) for line in f if line.strip()]
  for o in objects:
    if "id" in o:
      o["id"] = str(o["id"])  # one type per column
  src = str(tmp_path / "in.parquet")
  pq.write_table(pa.Table.from_pylist(objects), src)
  want = [(str(r.id) if r.id is not None else None, r.prompt, r.chosen, r.rejected)
          for r in ip.read_records(os.path.join(FIXTURES, file), fmt)]
  got = [(r.id, r.prompt, r.chosen, r.rejected) for r in ip.read_records(src, fmt)]
  assert got == want and [r.line for r in ip.read_records(src, fmt)] == list(range(len(want)))
  meta = ip.import_file(src, fmt, str(tmp_path / "out"))
  assert meta["num_records"] == len(want) and meta["source"] == src


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", "..", "x\n"])
def test_a_name_that_is_a_path_is_refused_before_anything_is_written(tmp_path, capsys, name):
  out = tmp_path / "o"
  assert ip.main([f"--input={os.path.join(FIXTURES, 'pairs.jsonl')}", "--format=jsonl",
                  f"--output={out}", f"--name={name}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "--name" in err[0] and "Traceback" not in err[0], err
  assert os.listdir(tmp_path) == []


def test_a_task_name_that_is_a_path_is_refused(tmp_path):
  out = str(tmp_path / "o")
  ip.import_file(os.path.join(FIXTURES, "pairs.jsonl"), "jsonl", out, name="fine")
  assert ip.register_imported(out) == "fine"
  with pytest.raises(ip.BadInput, match=r"^name: '\.\./x': has a path separator"):
    ip.register_imported(out, name="../x")

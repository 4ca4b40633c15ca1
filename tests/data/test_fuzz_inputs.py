"""Fuzzed importer input: each file imports whole or ends with one error line.

Inputs the fuzzing below broke once, kept as named cases.
"""
import os

import pytest

from alignment.data import import_pairs as ip

_TLDR = b'{"info": {"post": "p"}, "summaries": [{"text": "a"}, {"text": "b"}], "choice": '
_PAIR = b'"prompt": "p", "chosen": "c", "rejected": "r"'

# Inputs that once ended in a traceback or an unclear line, and the line they end with now.
BROKE = [
    ("10k nested lists", "jsonl", b'{' + _PAIR + b', "x": ' + b"[" * 10_000 + b"]" * 10_000
     + b"}", "not valid JSON (nested too deeply)"),
    ("5000-digit id", "jsonl", b'{"id": ' + b"1" * 5000 + b", " + _PAIR + b"}",
     "not valid JSON (Exceeds the limit (4300 digits) for integer string conversion"),
    ("choice 1.0", "tldr", _TLDR + b"1.0}", 'field "choice": expected 0 or 1, got 1.0'),
    ("lone surrogate", "hh", b'{"chosen": "\\n\\nAssistant: a\\udc00", "rejected": '
     b'"\\n\\nAssistant: b"}', 'field "chosen": an unpaired surrogate (\\udc00) is not text'),
    ("lone surrogate id", "jsonl", b'{"id": "\\ud800", ' + _PAIR + b"}",
     'field "id": an unpaired surrogate (\\ud800) is not text'),
    ("20k-character choice", "tldr", _TLDR + b'"' + b"y" * 20_000 + b'"}',
     'field "choice": expected 0 or 1, got \'yyyy'),
]


@pytest.mark.parametrize("why,fmt,line,message", BROKE, ids=[b[0] for b in BROKE])
def test_inputs_that_broke_the_importer_end_with_one_line(tmp_path, capsys, why, fmt, line,
                                                          message):
  del why
  src, out = tmp_path / "in.jsonl", tmp_path / "out"
  src.write_bytes(line + b"\n")
  assert ip.main([f"--input={src}", f"--format={fmt}", f"--output={out}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"import_pairs: error: {src}:1: {message}") and err.count("\n") == 1, err
  assert len(err) < len(str(src)) + 200, err
  assert not out.exists()


def test_a_duplicated_long_id_is_named_in_a_short_line(tmp_path, capsys):
  src, out = tmp_path / "in.jsonl", tmp_path / "out"
  record = b'{"id": "' + b"y" * 20_000 + b'", ' + _PAIR + b"}\n"
  src.write_bytes(record * 2)
  assert ip.main([f"--input={src}", "--format=jsonl", f"--output={out}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"import_pairs: error: {src}:2: field \"id\": 'yyyy") and (
      err.endswith(" characters) duplicates line 1\n")), err
  assert len(err) < len(str(src)) + 200, err

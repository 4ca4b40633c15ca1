"""Hostile model and tokenizer directories: each converts whole or ends with one line.

A tiny Hugging Face directory (config.json + model.safetensors, T5 v1.1 or
Llama, built here with numpy: no torch) is mutated with one or two of: a
config.json number made huge, negative, zero, a float, a string, null, a
bool, a list, NaN or infinite; a key removed or its type swapped; config.json
not JSON or not an object; a safetensors header whose length, offsets, shapes
or dtypes lie (past the file, overlapping, another size than the bytes they
hold), not JSON or not an object; the file truncated; tensors whose shapes
are swapped or transposed, missing, extra or duplicated; a tensor rewritten
in another float dtype (harmless); shards with an index naming files outside
the directory, missing, or the same tensor twice; the vocabulary resized
consistently (harmless); a generation_config.json with odd special ids.
`MODEL_CASES` of each (400 in all) go through the command,
`convert.main([...])`, in this process.

The property: exit status 0, nothing on stderr and a complete export; or exit
status 2, one line `error: <a path in the case's directory>: ...` of at most
400 characters, no output left; never a traceback, never more than
`CASE_SECONDS` per case, and the process's peak memory grows by less than
`MAX_GROWTH` over all cases (a lie that was believed would allocate
gigabytes).

`TOKENIZER_CASES` tokenizer.json files (half a byte-level BPE as Llama 3's, half
a Unigram as T5's) are fuzzed the same way through
`hf_vocab.HuggingFaceVocabulary` (what `--vocab`, `--tokenizer` and every loop
read): truncated, bytes flipped or inserted, empty, a BOM, deep nesting, a
5000-digit id, not an object; a section, the model, its type, vocabulary,
merges or unk token, or an added token made absurd (ids of 10**11, -1, 2**63,
1.5, "3"), of the wrong type or removed; a tokenizer_config.json beside it that
is broken. A vocabulary that loads must encode and decode, its ids inside its
size; one that does not is a ValueError of one line naming the file.

Cases are seeded by (kind, index): a failure names its mutations and
`_model_case` or `_tokenizer_case` rebuilds it. The named cases of issue 27
come first. The file takes about 20 s on 2 busy cores.
"""
import contextlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal

import numpy as np
import pytest
from safetensors.numpy import save_file

from alignment import files
from alignment.data import hf_vocab
from alignment.models import convert, export, validate
import fuzz_bytes  # tests/fuzz_bytes.py

MODEL_CASES = 200      # per architecture
TOKENIZER_CASES = 320
CASE_SECONDS = 20
MAX_GROWTH = 1 << 30   # bytes of peak resident memory over all cases

T5 = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": 16,
      "d_model": 8, "d_kv": 4, "num_heads": 2, "d_ff": 12, "num_layers": 1,
      "num_decoder_layers": 1, "relative_attention_num_buckets": 4,
      "relative_attention_max_distance": 8, "feed_forward_proj": "gated-gelu",
      "dense_act_fn": "gelu_new", "is_gated_act": True, "tie_word_embeddings": False,
      "layer_norm_epsilon": 1e-6, "eos_token_id": 1, "pad_token_id": 0,
      "decoder_start_token_id": 0}
# No head_dim: the width divided by the heads says it (as most Llama config.json files).
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 16,
         "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 1, "hidden_act": "silu",
         "rms_norm_eps": 1e-5, "max_position_embeddings": 64, "rope_theta": 10000.0,
         "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
         "eos_token_id": 1, "bos_token_id": 0}
BASES = {"t5": T5, "llama": LLAMA}


def write_hf_dir(directory, config, seed=0):
  """config.json and model.safetensors with random tensors of the shapes `config`
  implies (the converter's own table); returns the directory."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  cfg = convert.config_from_hf(config)
  tensors = {row.hf: rng.standard_normal(row.shape).astype(np.float32)
             for row in convert.rows_of(cfg)}
  save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)
  return str(directory)


def read_raw(path):
  """(header dict, data bytes) of a safetensors file, unchecked."""
  with open(path, "rb") as f:
    blob = f.read()
  n = int.from_bytes(blob[:8], "little")
  return json.loads(blob[8:8 + n]), blob[8 + n:]


def write_raw(path, header, data, length=None):
  """A safetensors file of `header` and `data`, its length field `length` if given."""
  head = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write((len(head) if length is None else length).to_bytes(8, "little") + head + data)


def run_cli(main, argv):
  """(exit status, stdout, stderr) of a command's main(argv) in this process."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = main(argv)
  return rc, out.getvalue(), err.getvalue()


def one_line(err, path):
  """Whether `err` is one `error: ...` line naming `path` (or a file under it)."""
  return (err.count("\n") == 1 and err.startswith("error: ") and len(err) <= 400
          and err[len("error: "):].startswith(str(path)))


# ---------------------------------------------------------------------------
# The cases of issue 27, by name
# ---------------------------------------------------------------------------


def _convert(hf_dir, out):
  return run_cli(convert.main, [f"--hf_dir={hf_dir}", f"--output={out}"])


def _edit_config(hf_dir, **changes):
  path = os.path.join(hf_dir, "config.json")
  with open(path) as f:
    config = json.load(f)
  config.update(changes)
  with open(path, "w") as f:
    json.dump(config, f)


def test_a_million_wide_config_over_tiny_tensors_is_refused(tmp_path):
  hf_dir = write_hf_dir(tmp_path / "hf", T5)
  _edit_config(hf_dir, d_model=1_000_000, vocab_size=10 ** 11)
  rc, out, err = _convert(hf_dir, tmp_path / "out")
  assert rc == 2 and not out and one_line(err, tmp_path / "hf" / "config.json"), err
  assert "config.json: vocab_size: 100000000000 is above the ceiling 4194304" in err, err
  _edit_config(hf_dir, vocab_size=16)
  rc, _, err = _convert(hf_dir, tmp_path / "out")
  assert rc == 2 and "d_model: 1000000 is above the ceiling 65536" in err, err
  assert "CEILINGS['d_model']" in err  # where a larger real model raises it
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("changes,message", [
    ({"num_attention_heads": 3}, "num_attention_heads: 3 does not divide hidden_size 8"),
    ({"num_key_value_heads": 3}, "num_key_value_heads: 3 does not divide "
                                 "num_attention_heads 2"),
    ({"num_hidden_layers": -1}, "num_hidden_layers: -1 is below 1"),
    ({"num_hidden_layers": 0}, "num_hidden_layers: 0 is below 1"),
    ({"hidden_size": 8.0}, "hidden_size: 8.0 is not an integer"),
    ({"vocab_size": "16"}, 'vocab_size: "16" is not an integer'),
    ({"intermediate_size": 10 ** 9}, "intermediate_size: 1000000000 is above the ceiling"),
    ({"rms_norm_eps": -1e-5}, "rms_norm_eps: -1e-05 is not a finite number in [0.0, 1.0)"),
    ({"rope_theta": float("nan")}, "rope_theta: NaN is not a finite number"),
    ({"tie_word_embeddings": "false"}, 'tie_word_embeddings: "false" is not true or false'),
    ({"architectures": "LlamaForCausalLM"}, "architectures: \"LlamaForCausalLM\" is not a "
                                            "list of strings"),
    ({"vocab_size": None}, "vocab_size: missing"),
])
def test_llama_configs_that_lie_are_one_line(tmp_path, changes, message):
  hf_dir = write_hf_dir(tmp_path / "hf", LLAMA)
  _edit_config(hf_dir, **changes)
  rc, _, err = _convert(hf_dir, tmp_path / "out")
  assert rc == 2 and one_line(err, tmp_path / "hf" / "config.json"), err
  assert message in err, err
  assert not (tmp_path / "out").exists()


def test_a_tensor_of_the_wrong_shape_is_named(tmp_path):
  """The header says another shape than config.json implies: refused from the header."""
  hf_dir = write_hf_dir(tmp_path / "hf", LLAMA)
  path = os.path.join(hf_dir, "model.safetensors")
  header, data = read_raw(path)
  name = "model.layers.0.mlp.up_proj.weight"
  header[name]["shape"] = header[name]["shape"][::-1]  # [12, 8] -> [8, 12], same bytes
  write_raw(path, header, data)
  rc, _, err = _convert(hf_dir, tmp_path / "out")
  assert rc == 2 and one_line(err, path), err
  assert f"{name}: shape [8, 12], but config.json implies [12, 8]" in err, err


def test_a_tensor_of_the_wrong_dtype_is_named(tmp_path):
  hf_dir = write_hf_dir(tmp_path / "hf", T5)
  path = os.path.join(hf_dir, "model.safetensors")
  header, data = read_raw(path)
  header["shared.weight"]["dtype"] = "I32"  # as many bytes as F32
  write_raw(path, header, data)
  rc, _, err = _convert(hf_dir, tmp_path / "out")
  assert rc == 2 and one_line(err, path), err
  assert "shared.weight: dtype I32; weights must be one of F32, BF16, F16, F64" in err, err


@pytest.mark.parametrize("lie,message", [
    ("past the end", r"data_offsets \[\d+, 99999999\] lie outside the file's \d+ bytes"),
    ("overlap", r"data_offsets \[0, \d+\] overlap"),
    ("length", r"header: its length says 1000000000000 bytes; the file has \d+ after it"),
    ("size", r"shape \[16, 8\] of F32 needs 512 bytes, its data_offsets \[\d+, \d+\] hold "),
])
def test_a_safetensors_header_that_lies_is_one_line(tmp_path, lie, message):
  hf_dir = write_hf_dir(tmp_path / "hf", T5)
  path = os.path.join(hf_dir, "model.safetensors")
  header, data = read_raw(path)
  entry = header["shared.weight"]
  length = None
  if lie == "past the end":
    entry["data_offsets"][1] = 99999999
  elif lie == "overlap":  # another tensor moved onto the first bytes, its size kept
    begin, end = header["encoder.final_layer_norm.weight"]["data_offsets"]
    header["encoder.final_layer_norm.weight"]["data_offsets"] = [0, end - begin]
  elif lie == "length":
    length = 10 ** 12
  else:
    entry["data_offsets"][1] -= 4
  write_raw(path, header, data, length)
  rc, _, err = _convert(hf_dir, tmp_path / "out")
  assert rc == 2 and one_line(err, path), err
  assert re.search(message, err), err


def test_an_export_whose_config_disagrees_with_its_params_is_one_line(tmp_path):
  hf_dir = write_hf_dir(tmp_path / "hf", T5)
  assert _convert(hf_dir, tmp_path / "export")[0] == 0
  config_path = tmp_path / "export" / "model_config.json"
  good = json.loads(config_path.read_text())
  for changes, message in [
      ({"d_ff": 24}, "the config implies shape [8, 24], " + str(tmp_path / "export" / "params")
       + " holds [8, 12]"),
      ({"d_model": 1_000_000, "vocab_size": 10 ** 11}, "vocab_size: 100000000000 is above"),
      ({"num_heads": -2}, "num_heads: -2 is below 1"),
      ({"norm_eps": "small"}, 'norm_eps: "small" is not a number'),
      ({"param_dtype": "int8"}, 'param_dtype: "int8" is not one of float32'),
      ({"tie_embeddings": 1}, "tie_embeddings: 1 is not true or false")]:
    config_path.write_text(json.dumps(dict(good, **changes)))
    rc, _, err = run_cli(export.main, [f"--params={tmp_path / 'export'}",
                                       f"--output={tmp_path / 'hf_out'}", "--tokenizer=none"])
    assert rc == 2 and one_line(err, config_path), (changes, err)
    assert message in err, (changes, err)
    assert not (tmp_path / "hf_out").exists()
  config_path.write_text(json.dumps(good))
  rc, out, err = run_cli(export.main, [f"--params={tmp_path / 'export'}",
                                       f"--output={tmp_path / 'hf_out'}", "--tokenizer=none"])
  assert rc == 0 and not err and out.startswith("wrote "), err
  rc, _, err = _convert(tmp_path / "hf_out", tmp_path / "again")  # and back again
  assert rc == 0, err


def test_the_loops_loaders_refuse_a_lying_model_config(tmp_path):
  """zoo.load_model_config (judges, the reference, pair sets): a CheckpointError, which
  `alignment.main` prints as one line."""
  from alignment import checkpoint  # pylint: disable=g-import-not-at-top
  from alignment.models import zoo  # pylint: disable=g-import-not-at-top
  path = tmp_path / "model_config.json"
  cfg = dict(architecture="decoder", **{k: v for k, v in vars(zoo.get("llama-nano")).items()
                                        if k != "architecture"})
  path.write_text(json.dumps(cfg))
  assert zoo.load_model_config(str(path)) == zoo.get("llama-nano")
  for changes, message in [({"num_layers": 10 ** 6}, "num_layers: 1000000 is above"),
                           ({"num_kv_heads": 3}, "num_kv_heads: 3 does not divide num_heads 2"),
                           ({"d_model": None}, "d_model: null is not an integer")]:
    path.write_text(json.dumps(dict(cfg, **changes)))
    with pytest.raises(checkpoint.CheckpointError, match=re.escape(f"{path}: {message}")):
      zoo.load_model_config(str(path))
  path.write_text("[1, 2]")
  with pytest.raises(checkpoint.CheckpointError, match="not a model config"):
    zoo.load_model_config(str(path))


def test_no_zoo_model_is_past_a_ceiling():
  from alignment.models import zoo  # pylint: disable=g-import-not-at-top
  for name in zoo.names():
    validate.check_model_config(zoo.get(name), name)
    validate.check_model_config(zoo.get(name, dtype="bfloat16", remat=True), name)


def test_a_judge_with_a_lying_export_is_one_line_from_main(tmp_path):
  """The proxy PM's loader refuses before it builds a model, mesh or data, and
  `alignment.main` prints the refusal as one line."""
  from alignment import judges, main  # pylint: disable=g-import-not-at-top
  hf_dir = write_hf_dir(tmp_path / "hf", LLAMA)
  assert _convert(hf_dir, tmp_path / "pm")[0] == 0
  config_path = tmp_path / "pm" / "model_config.json"
  config_path.write_text(json.dumps(dict(json.loads(config_path.read_text()),
                                         d_model=1_000_000)))
  with pytest.raises(Exception) as e:
    judges.load_model_judge(str(tmp_path / "pm"), None, None, None)
  line = main.error_line(e.value)
  assert line == (f"error: {config_path}: d_model: 1000000 is above the ceiling 65536 "
                  "(alignment.models.validate.CEILINGS['d_model']: raise it there for a "
                  "larger real model)"), line


def test_a_header_past_its_ceiling_is_refused_before_parsing(tmp_path, monkeypatch):
  hf_dir = write_hf_dir(tmp_path / "hf", T5)
  monkeypatch.setattr(validate, "MAX_HEADER_BYTES", 100)
  rc, _, err = _convert(hf_dir, tmp_path / "out")
  assert rc == 2 and one_line(err, os.path.join(hf_dir, "model.safetensors")), err
  assert re.search(r"header: \d+ bytes, more than the 100 a header may have here "
                   r"\(alignment.models.validate.MAX_HEADER_BYTES\)", err), err
  monkeypatch.setattr(validate, "MAX_JSON_BYTES", 100)
  rc, _, err = _convert(hf_dir, tmp_path / "out")
  assert rc == 2 and re.search(r"config.json: \d+ bytes, more than the 100 this file may "
                               r"have \(alignment.models.validate.MAX_JSON_BYTES\)", err), err


def test_shards_stay_in_their_directory(tmp_path):
  hf_dir = write_hf_dir(tmp_path / "hf", LLAMA)
  os.rename(os.path.join(hf_dir, "model.safetensors"), os.path.join(hf_dir, "a.safetensors"))
  header, _ = read_raw(os.path.join(hf_dir, "a.safetensors"))
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  for shard, message in [("../a.safetensors", "has a path separator"),
                         ("/etc/passwd", "has a path separator"), ("..", "names a directory"),
                         ("b.safetensors", "b.safetensors: missing")]:
    weight_map = {k: "a.safetensors" for k in header if k != "__metadata__"}
    weight_map["model.norm.weight"] = shard
    with open(index, "w") as f:
      json.dump({"weight_map": weight_map}, f)
    rc, _, err = _convert(hf_dir, tmp_path / "out")
    assert rc == 2 and one_line(err, hf_dir) and message in err, err
  with open(index, "w") as f:
    json.dump({"weight_map": {k: "a.safetensors" for k in header if k != "__metadata__"}}, f)
  assert _convert(hf_dir, tmp_path / "out")[0] == 0


def test_check_name_keeps_names_inside_their_directory():
  for good in ("tldr", "user_my-data.v2", "a:b", "é"):
    assert files.check_name(good, "--name") == good
  for bad, why in [("../x", "path separator"), ("/abs", "path separator"),
                   ("a\\b", "path separator"), ("..", "names a directory"),
                   (".", "names a directory"), ("", "empty"), ("  ", "empty"),
                   ("a\nb", "control character"), ("x" * 256, "more than a file name"),
                   (3, "not a string"), ("\ud800", "not text")]:
    with pytest.raises(files.BadName, match=why) as e:
      files.check_name(bad, "--name")
    assert str(e.value).startswith("--name: ") and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


def test_every_row_has_the_shape_of_the_zoo_parameter_it_becomes():
  """The table's Hugging Face shapes (checked against transformers by
  test_hf_parity.py) agree with the zoo's own parameters, both directions."""
  import jax  # pylint: disable=g-import-not-at-top
  from alignment import sharding  # pylint: disable=g-import-not-at-top
  from alignment.models import zoo  # pylint: disable=g-import-not-at-top
  for cfg in (zoo.get("t5-nano"), zoo.get("t5-nano", feed_forward="relu", tie_embeddings=True),
              zoo.get("llama-nano"), zoo.get("llama-nano", qkv_bias=True, out_bias=True)):
    abstract = sharding.strip_boxes(zoo.abstract_params(cfg, "lm"))
    leaves = {tuple(k.key for k in p): x
              for p, x in jax.tree_util.tree_leaves_with_path(abstract)}
    for row in convert.rows_of(cfg):
      zoo_shape = leaves.pop(row.zoo).shape
      assert row.to_hf(np.zeros(zoo_shape)).shape == row.shape, row.hf
      assert row.to_zoo(np.zeros(row.shape)).shape == zoo_shape, row.hf
    assert not leaves


# ---------------------------------------------------------------------------
# Fuzzing model directories
# ---------------------------------------------------------------------------

_ODD_NUMBERS = [10 ** 6, 10 ** 11, 2 ** 31, 2 ** 63, 10 ** 30, -1, -2 ** 31, 0, 0.5, 8.0,
                "8", "abc", None, True, False, [8], {"v": 8}, float("inf"), float("nan"),
                -0.0, 1e-300]


def _odd_value(rng, value):
  if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.3:
    return rng.choice([value * 2, value + 1, value - 1, float(value), str(value)])
  return rng.choice(_ODD_NUMBERS)


def _mutate_config(rng, config):
  numeric = [k for k, v in config.items() if isinstance(v, (int, float))
             and not isinstance(v, bool)]
  kind = rng.choice(["number"] * 5 + ["drop", "type", "rope"])
  if kind == "number":
    key = rng.choice(numeric)
    config[key] = _odd_value(rng, config[key])
    return f"config {key}={json.dumps(config[key])[:30]}"
  if kind == "drop":
    key = rng.choice(sorted(config))
    del config[key]
    return f"config without {key}"
  if kind == "rope" and "hidden_size" in config:
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    key = rng.choice(sorted(rope))
    rope[key] = _odd_value(rng, rope[key]) if rng.random() < 0.8 else rope[key]
    config[rng.choice(["rope_scaling", "rope_parameters"])] = rope
    return f"rope {key}={json.dumps(rope[key])[:30]}"
  key = rng.choice([k for k in config if k not in numeric])
  config[key] = rng.choice([5, "x", None, [], {}, True, ["LlamaForCausalLM", 3], "t5"])
  return f"config {key}={json.dumps(config[key])}"


def _tensor_names(header):
  return sorted(k for k in header if k != "__metadata__")


def _mutate_header(rng, header, data, first):
  """(what, header, data, length or None); rewrites (transposed, recast) only `first`,
  while the file is still valid."""
  names = _tensor_names(header)
  name = rng.choice(names)
  entry = header[name]
  begin, end = entry["data_offsets"]
  kind = rng.choice(["offsets", "shape", "dtype", "length", "swap", "drop", "extra",
                     "duplicate", "not json"] + (["transpose", "recast"] if first else []))
  if kind == "offsets":
    entry["data_offsets"] = rng.choice([
        [begin, end + 4], [begin - 4, end], [end, begin], [0, end - begin],
        [begin, 10 ** 12], [-1, end], [float(begin), end], [begin], "x",
        [begin + 4, end + 4], [len(data) - (end - begin) + 4, len(data) + 4]])
    return f"{name} data_offsets {entry['data_offsets']}", header, data, None
  if kind == "shape":
    shape = entry["shape"]
    entry["shape"] = rng.choice([
        shape[::-1], shape + [1], [1] + shape, [shape[0] * 2] + shape[1:], [], [-1] + shape[1:],
        [10 ** 12] + shape[1:], "abc", [1.5] + shape[1:], [0] * len(shape),
        [2 ** 64] + shape[1:], [1] * 9])
    return f"{name} shape {json.dumps(entry['shape'])[:40]}", header, data, None
  if kind == "dtype":
    entry["dtype"] = rng.choice(["I32", "U32", "F16", "BF16", "F64", "BOOL", "XYZ", 5, None,
                                 "F8_E4M3"])
    return f"{name} dtype {entry['dtype']}", header, data, None
  if kind == "length":
    length = rng.choice([0, 1, 7, 2 ** 63, 10 ** 12, len(json.dumps(header)) + 1,
                         len(json.dumps(header)) - 1])
    return f"header length {length}", header, data, length
  if kind == "swap":
    other = rng.choice(names)
    header[name], header[other] = header[other], header[name]
    return f"{name} swapped with {other}", header, data, None
  if kind == "transpose":
    return _rewrite(header, data, name, lambda x: x.T.copy(), f"{name} transposed")
  if kind == "drop":
    del header[name]
    return f"without {name}", header, data, None
  if kind == "extra":
    header[rng.choice(["lm_head.bias", "x", "model.layers.9.mlp.up_proj.weight",
                       "encoder.embed_tokens.weight"])] = dict(entry)
    return f"an extra tensor copying {name}", header, data, None
  if kind == "duplicate":
    other = rng.choice([n for n in names if n != name])
    header[other] = dict(header[other], data_offsets=list(entry["data_offsets"]))
    return f"{other} at {name}'s offsets", header, data, None
  if kind == "not json":
    return "header not JSON", rng.choice([[1, 2], "x", None, {"a": 1, "__metadata__": 3}]), \
        data, None
  dtype = rng.choice(["F16", "BF16", "F64"])
  return _rewrite(header, data, name, dtype, f"{name} rewritten as {dtype}")


def _rewrite(header, data, name, change, what):
  """The file with one tensor changed (`change`: a function of the array, or a float
  dtype to store it in), a valid file either way."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  arrays = {}
  for n in _tensor_names(header):
    b, e = header[n]["data_offsets"]
    arrays[n] = np.frombuffer(data[b:e], np.float32).reshape(header[n]["shape"])
  x = arrays[name]
  if callable(change):
    arrays[name] = change(x)
  else:
    arrays[name] = x.astype({"F16": np.float16, "BF16": ml_dtypes.bfloat16,
                             "F64": np.float64}[change])
  new_header, offset, blobs = {}, 0, []
  for n, a in arrays.items():
    blob = a.tobytes()
    dtype = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}[
        str(a.dtype)]
    new_header[n] = {"dtype": dtype, "shape": list(a.shape),
                     "data_offsets": [offset, offset + len(blob)]}
    offset += len(blob)
    blobs.append(blob)
  return what, new_header, b"".join(blobs), None


def _mutate_dir(rng, hf_dir, first=True):
  """Mutates the directory in place; returns what it did. Only a `first` mutation
  reshards or resizes (later ones work on what the first left)."""
  config_path = os.path.join(hf_dir, "config.json")
  tensors = os.path.join(hf_dir, "model.safetensors")
  kind = rng.choice(["config"] * 4 + ["header"] * 5 + ["truncate", "config file", "shards",
                                                       "resize", "missing file"])
  try:  # a second mutation works on what the first left
    with open(config_path) as f:
      config = json.load(f)
    assert isinstance(config, dict)
  except (OSError, ValueError, AssertionError, RecursionError):
    config = None
  if config is None and kind in ("config", "resize"):
    kind = "missing file"
  if not first and kind in ("shards", "resize"):
    kind = "header"
  if not os.path.exists(tensors) and kind in ("header", "truncate", "shards", "resize"):
    kind = "config file"
  if kind in ("config", "resize"):
    if kind == "resize" and isinstance(config.get("vocab_size"), int):
      vocab = rng.choice([8, 24, 40])
      config["vocab_size"] = vocab
      header, data = read_raw(tensors)
      for name in ("shared.weight", "model.embed_tokens.weight", "lm_head.weight"):
        if name in header:
          _, header, data, _ = _rewrite(header, data, name, lambda x, v=vocab: np.resize(
              x, (v, x.shape[1])), "")
      write_raw(tensors, header, data)
      what = f"vocabulary resized to {vocab} (harmless)"
    else:
      what = _mutate_config(rng, config)
    with open(config_path, "w") as f:
      json.dump(config, f)
    return what
  if kind == "config file" and rng.random() < 0.3:  # read for the special ids
    raw = rng.choice([b"[]", b"{", b'{"eos_token_id": "x"}', b'{"eos_token_id": [1, -2]}',
                      b'{"pad_token_id": 1e30}', b'{"eos_token_id": [' + b"1, " * 10_000 + b'1]}',
                      b'{"eos_token_id": [1, 2], "pad_token_id": -1}'])
    with open(os.path.join(hf_dir, "generation_config.json"), "wb") as f:
      f.write(raw)
    return f"generation_config.json {raw[:24]!r}"
  if kind == "config file":
    raw = rng.choice([b"", b"[]", b"null", b"{", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000,
                      b'{"model_type": "t5", "d_model": ' + b"1" * 5000 + b"}"])
    with open(config_path, "wb") as f:
      f.write(raw)
    return f"config.json {raw[:12]!r}"
  if kind == "header":
    try:
      header, data = read_raw(tensors)
    except ValueError:  # an earlier mutation's work
      return "nothing (the header is not JSON)"
    if not isinstance(header, dict) or not _tensor_names(header) or not all(
        isinstance(header[n], dict) for n in _tensor_names(header)):
      return "nothing (the header is not a map of tensors)"
    what, header, data, length = _mutate_header(rng, header, data, first)
    write_raw(tensors, header, data, length)
    return what
  if kind == "truncate":
    size = os.path.getsize(tensors)
    at = rng.randrange(size)
    with open(tensors, "r+b") as f:
      f.truncate(at)
    return f"model.safetensors truncated at byte {at} of {size}"
  if kind == "missing file":
    name = rng.choice(["config.json", "model.safetensors"])
    if os.path.exists(os.path.join(hf_dir, name)):
      os.remove(os.path.join(hf_dir, name))
    return f"no {name}"
  return _shard(rng, hf_dir, tensors)


def _shard(rng, hf_dir, tensors):
  header, data = read_raw(tensors)
  os.remove(tensors)
  names = _tensor_names(header)
  half = {n: ("model-00001-of-00002.safetensors" if i % 2 else
              "model-00002-of-00002.safetensors") for i, n in enumerate(names)}
  for shard in set(half.values()):
    part = {n: header[n] for n in names if half[n] == shard}
    arrays = {n: np.frombuffer(data[h["data_offsets"][0]:h["data_offsets"][1]],
                               np.float32).reshape(h["shape"]) for n, h in part.items()}
    save_file(arrays, os.path.join(hf_dir, shard))
  weight_map = dict(half)
  what = "sharded in two (harmless)"
  lie = rng.choice(["none", "outside", "absolute", "missing", "twice", "not a map"])
  if lie == "outside":
    weight_map[names[0]] = "../model-00001-of-00002.safetensors"
  elif lie == "absolute":
    weight_map[names[0]] = "/dev/zero"
  elif lie == "missing":
    weight_map[names[0]] = "model-00003-of-00002.safetensors"
  elif lie == "twice":
    shutil.copyfile(os.path.join(hf_dir, "model-00001-of-00002.safetensors"),
                    os.path.join(hf_dir, "copy.safetensors"))
    weight_map[names[0]] = "copy.safetensors"
  elif lie == "not a map":
    weight_map = rng.choice([[], "x", None, {}])
  if lie != "none":
    what = f"sharded, index {lie}"
  with open(os.path.join(hf_dir, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
  return what


def _model_case(root, arch, index):
  """Builds the index-th mutated directory of `arch` under root; (directory, mutations)."""
  rng = random.Random(f"{arch}-{index}")
  hf_dir = write_hf_dir(os.path.join(root, f"{arch}{index}"), dict(BASES[arch]), seed=index)
  done = [_mutate_dir(rng, hf_dir, i == 0) for i in range(rng.choice([1, 1, 1, 2]))]
  return hf_dir, "; ".join(done)


class _Timeout(Exception):
  pass


@contextlib.contextmanager
def _time_limit(seconds):
  def alarm(signum, frame):
    del signum, frame
    raise _Timeout(f"over {seconds} s")
  previous = signal.signal(signal.SIGALRM, alarm)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _check_model_case(root, arch, index):
  """Runs one case; (what went wrong or None, exit status)."""
  hf_dir, _ = _model_case(root, arch, index)
  out = os.path.join(root, f"out_{arch}{index}")
  try:
    with _time_limit(CASE_SECONDS):
      rc, stdout, err = run_cli(convert.main, [f"--hf_dir={hf_dir}", f"--output={out}"])
  except BaseException as e:  # pylint: disable=broad-except  (the property under test)
    return f"raised {type(e).__name__}: {str(e)[:300]}", -1
  problem = None
  if rc == 0:
    if err or not stdout.startswith(f"wrote {out}: ") or not os.path.exists(
        os.path.join(out, "model_config.json")):
      problem = f"exit 0, stdout {stdout[:200]!r}, stderr {err[:200]!r}"
  elif rc != 2 or not one_line(err, hf_dir):
    problem = f"exit {rc}, stderr {err[:400]!r}"
  elif os.path.exists(out):
    problem = "refused, but an output was left"
  left = sorted(set(os.listdir(root)) - {os.path.basename(hf_dir), os.path.basename(out)})
  if left:
    problem = f"left beside the output: {left}"
  shutil.rmtree(hf_dir)
  shutil.rmtree(out, ignore_errors=True)
  return problem, rc


def _peak_rss() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


@pytest.mark.parametrize("arch", sorted(BASES))
def test_fuzzed_model_directories_convert_or_end_with_one_line(tmp_path, arch):
  before = _peak_rss()
  failures, outcomes = [], {0: 0, 2: 0}
  for index in range(MODEL_CASES):
    problem, rc = _check_model_case(str(tmp_path), arch, index)
    if problem:
      what = _model_case(str(tmp_path / "again"), arch, index)[1]
      failures.append(f"_model_case(root, {arch!r}, {index}) [{what}]: {problem}")
    else:
      outcomes[rc] += 1
  assert not failures, f"{len(failures)} of {MODEL_CASES} cases failed:\n" + "\n".join(
      failures[:40])
  assert _peak_rss() - before < MAX_GROWTH, (before, _peak_rss())
  # The mutations are not all fatal, nor all harmless.
  assert outcomes[0] >= MODEL_CASES // 20 and outcomes[2] >= MODEL_CASES // 2, outcomes


# ---------------------------------------------------------------------------
# Fuzzing tokenizer.json
# ---------------------------------------------------------------------------

TEXTS = ["The quick brown fox.", "Summarize: the cat sat on the mat\n\nTL;DR:", "é ü 中文 🙂",
         "", "  spaces  and\ttabs"]


@pytest.fixture(scope="module")
def base_tokenizers(tmp_path_factory):
  """The bases: a byte-level BPE (Llama 3's kind, tests/hf_tokenizer.py) and a Unigram
  (T5's kind), as bytes."""
  import tokenizers as tk  # pylint: disable=g-import-not-at-top
  import hf_tokenizer  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("tokenizers")
  bpe = hf_tokenizer.build_tokenizer(str(root / "bpe" / "tokenizer.json"))
  unigram = tk.Tokenizer(tk.models.Unigram())
  unigram.pre_tokenizer = tk.pre_tokenizers.Metaspace()
  unigram.train_from_iterator(hf_tokenizer.fixture_texts(), trainer=tk.trainers.UnigramTrainer(
      vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
      show_progress=False))
  unigram.save(str(root / "unigram.json"))
  with open(bpe, "rb") as f, open(root / "unigram.json", "rb") as g:
    return {"bpe": f.read(), "unigram": g.read()}


def _write_tokenizer(directory, tok, config=None):
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "tokenizer.json")
  with open(path, "wb") as f:
    f.write(tok if isinstance(tok, bytes) else json.dumps(tok).encode())
  if config is not None:
    with open(os.path.join(directory, hf_vocab.CONFIG), "wb") as f:
      f.write(config)
  return path


def test_tokenizers_that_are_not_one_are_one_line(tmp_path, base_tokenizers, monkeypatch):
  good = json.loads(base_tokenizers["bpe"])
  eos = good["added_tokens"][0]
  cases = [(b"{not json", "tokenizer.json: not JSON (Expecting property name"),
           (b"[1, 2]", "tokenizer.json: not a JSON object (a list)"),
           ({k: v for k, v in good.items() if k != "model"}, "tokenizer.json: model: missing"),
           (dict(good, model=dict(good["model"], vocab=dict(good["model"]["vocab"], a=10 ** 11))),
            'tokenizer.json: model.vocab["a"]: id 100000000000 is not an integer in '
            "[0, 4194304)"),
           (dict(good, added_tokens=[dict(eos, id=-1)]),
            "tokenizer.json: added_tokens[0]: id -1 is not an integer"),
           (dict(good, model=dict(good["model"], type="Nope")),
            'tokenizer.json: model.type: "Nope" is not one of BPE'),
           (dict(good, pre_tokenizer="ByteLevel"),
            'tokenizer.json: pre_tokenizer: "ByteLevel" is not an object'),
           (dict(good, model=dict(good["model"], merges=[["a", "b", "c"]])),
            "tokenizer.json: model.merges: not a list of merges"),
           (dict(good, model=dict(good["model"], merges=[["zz", "qq"]])),
            "tokenizer.json: not a Hugging Face tokenizer.json (Token `zz` out of vocabulary")]
  for i, (tok, message) in enumerate(cases):
    path = _write_tokenizer(tmp_path / str(i), tok)
    with pytest.raises(ValueError) as e:
      hf_vocab.HuggingFaceVocabulary(path)
    assert str(e.value).startswith(str(tmp_path / str(i))) and message in str(e.value), e.value
    assert "\n" not in str(e.value)
  path = _write_tokenizer(tmp_path / "config", good, b"{not json")
  with pytest.raises(ValueError, match="tokenizer_config.json: not JSON"):
    hf_vocab.HuggingFaceVocabulary(path)
  monkeypatch.setattr(hf_vocab, "MAX_TOKENIZER_BYTES", 1000)
  path = _write_tokenizer(tmp_path / "big", good)
  with pytest.raises(ValueError, match=r"tokenizer.json: \d+ bytes, more than the 1000 this "
                                       r"file may have \(alignment.data.hf_vocab.MAX_TOKENIZER"):
    hf_vocab.HuggingFaceVocabulary(path)


def test_a_tokenizer_that_cannot_encode_is_refused_on_loading(tmp_path, base_tokenizers):
  tok = json.loads(base_tokenizers["unigram"])
  tok["model"]["unk_id"] = None
  path = _write_tokenizer(tmp_path / "u", tok)
  with pytest.raises(ValueError, match="tokenizer.json: cannot encode text \\(Encountered an "
                                       "unknown token but `unk_id` is missing\\)"):
    hf_vocab.HuggingFaceVocabulary(path)


def test_sparse_ids_make_the_vocabulary_as_large_as_its_largest_id(tmp_path, base_tokenizers):
  """A model sized by vocab_size holds every id the tokenizer gives."""
  tok = json.loads(base_tokenizers["bpe"])
  tok["model"]["vocab"]["a"] = 1000  # tokenizers counts some 400 tokens
  vocab = hf_vocab.HuggingFaceVocabulary(_write_tokenizer(tmp_path / "t", tok))
  assert vocab.tokenizer.get_vocab_size(with_added_tokens=True) < 1000
  assert vocab.vocab_size == 1001 and vocab.encode_batch(["a"]) == [[1000]]


def test_export_names_a_broken_tokenizer_in_one_line(tmp_path, base_tokenizers):
  hf_dir = write_hf_dir(tmp_path / "hf", T5)
  assert _convert(hf_dir, tmp_path / "export")[0] == 0
  for i, tok in enumerate([b"", b"{}", b'{"model": {"type": "BPE", "vocab": {"a": 1e30}}}']):
    path = _write_tokenizer(tmp_path / f"tok{i}", tok)
    rc, _, err = run_cli(export.main, [f"--params={tmp_path / 'export'}",
                                       f"--output={tmp_path / 'out'}", f"--tokenizer={path}"])
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: --tokenizer={path}: not a vocabulary: {path}: "), err
  assert not (tmp_path / "out").exists()


_ODD_IDS = [10 ** 11, -1, 2 ** 31, 2 ** 32, 2 ** 63, 10 ** 30, 1.5, "3", None, True, [1], 0,
            4194304, 4194303, 1000]


def _mutate_tokenizer(rng, tok):
  """Mutates the parsed tokenizer.json `tok` (a dict) in place; returns what it did."""
  model = tok.get("model")
  kind = rng.choice(["section", "model", "vocab id", "vocab id", "vocab id", "vocab type",
                     "merges", "added", "added", "unk"])
  if kind == "section":
    key = rng.choice(["normalizer", "pre_tokenizer", "post_processor", "decoder",
                      "truncation", "padding"])
    tok[key] = rng.choice([5, "x", [], {}, {"type": "Nope"}, {"type": 5}, None,
                           {"strategy": "BatchLongest", "direction": "Right", "pad_id": 10 ** 9,
                            "pad_type_id": 0, "pad_token": "x", "pad_to_multiple_of": None},
                           {"strategy": "BatchLongest", "direction": "Right", "pad_id": 3,
                            "pad_type_id": 0, "pad_token": "x", "pad_to_multiple_of": None}])
    return f"{key}={json.dumps(tok[key])[:60]}"
  if not isinstance(model, dict):
    tok["model"] = rng.choice([None, 5, "BPE", []])
    return f"model={tok['model']}"
  if kind == "model":
    if rng.random() < 0.3:
      del tok["model"]
      return "no model"
    model["type"] = rng.choice(["XYZ", 5, None, "WordLevel", "WordPiece", "Unigram", "BPE"])
    return f"model.type={model['type']}"
  vocab = model.get("vocab")
  if kind == "vocab id" and isinstance(vocab, dict) and vocab:
    token = rng.choice(sorted(vocab))
    vocab[token] = rng.choice(_ODD_IDS)
    return f"vocab[{token!r}]={json.dumps(vocab[token])}"
  if kind == "vocab id" and isinstance(vocab, list) and vocab:
    i = rng.randrange(len(vocab))
    vocab[i] = rng.choice([["a"], "a", [1, 2], ["a", "x"], ["a", float("nan")], [],
                           ["a", float("inf")], ["a", -1e30], [vocab[0][0], 0.0]])
    return f"vocab[{i}]={json.dumps(vocab[i])}"
  if kind in ("vocab id", "vocab type"):
    model["vocab"] = rng.choice([[], "x", 5, {}, None, {"a": 0}, [["a", 0.0]] * 3])
    return f"vocab={json.dumps(model['vocab'])[:40]}"
  if kind == "merges":
    merges = model.get("merges")
    if isinstance(merges, list) and merges and rng.random() < 0.8:
      i = rng.randrange(len(merges))
      merges[i] = rng.choice([5, ["a"], ["a", "b", "c"], "onlyone", "a b c", ["zz", "qq"],
                              None, ["a", 5]])
      return f"merges[{i}]={json.dumps(merges[i])}"
    model["merges"] = rng.choice([{}, "x", 5, [], None])
    return f"merges={json.dumps(model['merges'])}"
  if kind == "unk":
    if model.get("type") == "Unigram":
      model["unk_id"] = rng.choice([10 ** 9, -1, "x", None, 10 ** 30, 1])
      return f"unk_id={model['unk_id']}"
    model["unk_token"] = rng.choice(["nope", 5, "<|end_of_text|>", []])
    return f"unk_token={model['unk_token']}"
  added = tok.get("added_tokens")
  if not isinstance(added, list) or rng.random() < 0.15:
    tok["added_tokens"] = rng.choice([{}, "x", None, [], [5]])
    return f"added_tokens={json.dumps(tok['added_tokens'])}"
  choice = rng.randrange(5)
  if choice == 0 and added:
    entry = rng.choice(added)
    if isinstance(entry, dict):
      entry["id"] = rng.choice(_ODD_IDS)
      return f"added id {json.dumps(entry['id'])}"
  if choice == 1 and added:
    entry = rng.choice(added)
    if isinstance(entry, dict):
      entry["content"] = rng.choice([5, None, "", "<pad>", "x" * 10_000])
      return f"added content {json.dumps(entry['content'])[:20]}"
  if choice == 2 and added:
    added.remove(rng.choice(added))
    return "an added token removed (the EOS?)"
  new = {"id": rng.choice([10 ** 9, 405, 4194303, 2 ** 40, 0]), "content": "<|new|>",
         "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": rng.choice([True, "yes"])}
  added.append(new)
  return f"added token id {new['id']} special {new['special']}"


def _mutate_raw(rng, data):
  kind = rng.choice(["truncate", "flip", "insert", "empty", "bom", "nested", "digits",
                     "not an object"])
  if not data:
    return "nothing (empty)", data
  if kind == "truncate":
    at = rng.randrange(len(data))
    return f"truncated at byte {at}", data[:at]
  if kind in ("flip", "insert"):
    return fuzz_bytes.flip_or_insert(rng, data, kind)
  if kind == "empty":
    return "empty", rng.choice([b"", b" ", b"\n"])
  if kind == "bom":
    return "BOM", b"\xef\xbb\xbf" + data
  if kind == "nested":
    return "100k nested lists", b"[" * 100_000 + b"]" * 100_000
  if kind == "digits":
    return "a 5000-digit id", data.replace(b': 400,', b': ' + b"9" * 5000 + b',', 1)
  return "not an object", rng.choice([b"[]", b'"tokenizer"', b"3", b"null", b"true"])


_CONFIGS = [b"{not json", b"[]", b'{"eos_token": "<nope>"}', b'{"eos_token": 5}',
            b'{"eos_token": {"content": 3}}', b'{"pad_token": "</s>"}', b'{"bos_token": ["x"]}',
            b'{"eos_token": "' + b"x" * 10_000 + b'"}', b"\xff"]


def _tokenizer_case(root, base, index, tokenizers_):
  """The index-th mutated tokenizer of `base` written under root; (path, mutations)."""
  rng = random.Random(f"tokenizer-{base}-{index}")
  directory = os.path.join(root, f"{base}{index}")
  os.makedirs(directory)
  data, done = tokenizers_[base], []
  for _ in range(rng.choice([1, 1, 1, 2])):
    try:
      tok = json.loads(data)
    except (ValueError, RecursionError):
      tok = None
    if isinstance(tok, dict) and rng.random() < 0.8:
      done.append(_mutate_tokenizer(rng, tok))
      data = json.dumps(tok).encode()
    else:
      what, data = _mutate_raw(rng, data)
      done.append(what)
  path = os.path.join(directory, "tokenizer.json")
  with open(path, "wb") as f:
    f.write(data)
  if rng.random() < 0.1:
    config = rng.choice(_CONFIGS)
    with open(os.path.join(directory, hf_vocab.CONFIG), "wb") as f:
      f.write(config)
    done.append(f"tokenizer_config.json {config[:24]!r}")
  return path, "; ".join(done)


def _check_vocabulary(vocab):
  """What is wrong with a vocabulary that loaded (None: nothing)."""
  size = vocab.vocab_size
  if not 0 < size <= validate.CEILINGS["vocab_size"]:
    return f"vocab_size {size}"
  if not (0 <= vocab.eos_id < size and 0 <= vocab.pad_id < size):
    return f"eos {vocab.eos_id}, pad {vocab.pad_id} of {size}"
  ids = vocab.encode_batch(TEXTS)
  if any(not 0 <= i < size for row in ids for i in row):
    return f"an id outside [0, {size}): {ids}"
  vocab.decode_batch(ids + [[size - 1, 0, vocab.eos_id]])
  return None


def _check_tokenizer_case(root, base, index, tokenizers_):
  path, _ = _tokenizer_case(root, base, index, tokenizers_)
  try:
    with _time_limit(CASE_SECONDS):
      try:
        vocab = hf_vocab.HuggingFaceVocabulary(path)
      except ValueError as e:
        message = str(e)
        if ("\n" in message or len(message) > 400
            or not message.startswith(os.path.dirname(path) + "/")):
          return f"not one line naming the file: {message[:400]!r}", 2
        return None, 2
      return _check_vocabulary(vocab), 0
  except BaseException as e:  # pylint: disable=broad-except  (the property under test)
    return f"raised {type(e).__name__}: {str(e)[:300]}", -1
  finally:
    shutil.rmtree(os.path.dirname(path))


@pytest.mark.parametrize("base", ["bpe", "unigram"])
def test_fuzzed_tokenizers_load_or_end_with_one_line(tmp_path, base_tokenizers, base):
  before = _peak_rss()
  cases = TOKENIZER_CASES // 2
  failures, outcomes = [], {0: 0, 2: 0}
  for index in range(cases):
    problem, rc = _check_tokenizer_case(str(tmp_path), base, index, base_tokenizers)
    if problem:
      what = _tokenizer_case(str(tmp_path / "again"), base, index, base_tokenizers)[1]
      failures.append(f"_tokenizer_case(root, {base!r}, {index}) [{what}]: {problem}")
    else:
      outcomes[rc] += 1
  assert not failures, f"{len(failures)} of {cases} cases failed:\n" + "\n".join(failures[:40])
  assert _peak_rss() - before < MAX_GROWTH, (before, _peak_rss())
  assert outcomes[0] >= cases // 20 and outcomes[2] >= cases // 2, outcomes

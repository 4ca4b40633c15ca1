"""`alignment.models.export`: params exports back to Hugging Face, loaded by
`from_pretrained` (the oracle) and compared with our logits."""
import json
import os

import numpy as np
import pytest

import hf_models  # noqa: E402  (skips the module without torch/transformers)
import transformers  # noqa: E402

from alignment import checkpoint  # noqa: E402
from alignment.data import environment as E  # noqa: E402
from alignment.data import vocab as V  # noqa: E402
from alignment.models import convert, export, zoo  # noqa: E402
from hf_tokenizer import BOS, EOS, build_tokenizer, fixture_texts  # noqa: E402
import zoo_params  # noqa: E402  (tests/zoo_params.py)

pytestmark = [pytest.mark.hf]


def _export_cli(params_dir, output, *flags):
  return export.main(["--params", str(params_dir), "--output", str(output), *flags])


def _hf_logits(hf, batch):
  if hf.config.is_encoder_decoder:
    return hf_models.hf_t5_logits(hf, *batch[:3])
  return hf_models.hf_decoder_logits(hf, *batch)


MODELS = {
    "flan_t5": (hf_models.tiny_hf_flan_t5, transformers.T5ForConditionalGeneration),
    "original_t5": (lambda: hf_models.tiny_hf_t5(seed=2, original=True),
                    transformers.T5ForConditionalGeneration),
    "llama3_rope_tied": (lambda: hf_models.tiny_hf_llama(
        seed=5, tie=True, initializer_range=0.2, rope_parameters=hf_models.LLAMA3_ROPE),
                         transformers.LlamaForCausalLM),
    "qwen2": (lambda: hf_models.tiny_hf_llama(seed=6, qwen2=True, initializer_range=0.2),
              transformers.Qwen2ForCausalLM),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_hf_convert_export_round_trip(name, tmp_path):
  """HF model -> our params export (convert) -> export CLI -> from_pretrained:
  the reloaded model's logits equal ours, and its config is the same model."""
  make, cls = MODELS[name]
  hf = make()
  cfg, params = hf_models.to_zoo(hf)
  convert.save(params, cfg, str(tmp_path / "zoo"))
  assert _export_cli(tmp_path / "zoo", tmp_path / "hf") == 0
  assert sorted(os.listdir(tmp_path)) == ["hf", "zoo"]  # no temporary left beside it
  back = cls.from_pretrained(tmp_path / "hf").eval()
  assert type(back) is cls
  assert convert.config_from_hf(back.config.to_dict()) == cfg
  batch = hf_models.batch(8, lp=7)
  ours = hf_models.zoo_logits(cfg, params, *batch)
  hf_models.assert_logits_match(ours, _hf_logits(back, batch), batch[3])


def test_zoo_model_exports(tmp_path):
  """t5-tiny (our vocabulary size and layout) with random parameters, written by
  `checkpoint.export_params` as every training loop writes <workdir>/export
  (the online policy's export has this form), loads in transformers with our
  logits; --dtype=bfloat16 writes the same tensors rounded, in half the bytes."""
  cfg = zoo.get("t5-tiny")
  params = zoo_params.random_params(cfg, 3)
  checkpoint.export_params(params, cfg, str(tmp_path / "export"))
  assert _export_cli(tmp_path / "export", tmp_path / "hf") == 0
  assert _export_cli(tmp_path / "export", tmp_path / "bf16", "--dtype=bfloat16") == 0
  written = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert written["tie_word_embeddings"] is False and written["feed_forward_proj"] == "gated-gelu"
  # No vocabulary.json: the package's ids, and no tokenizer is guessed.
  assert (written["eos_token_id"], written["pad_token_id"], written["decoder_start_token_id"]) == (
      1, 0, 0)
  assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "generation_config.json",
                                                 "model.safetensors"]
  # The embedded environment's SentencePiece model goes out as T5Tokenizer's spiece.model
  # and tokenises the environment's texts as we do.
  assert _export_cli(tmp_path / "export", tmp_path / "sp", "--tokenizer=sentencepiece") == 0
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "sp")
  texts = [t for ex in E.Environment().examples("train", 10) for t in ex.values()
           if isinstance(t, str)]
  assert len(texts) >= 20
  assert [tok(t, add_special_tokens=False)["input_ids"] for t in texts] == V.encode_batch(
      V.get_vocabulary("sentencepiece"), texts)
  assert (tok.eos_token_id, tok.pad_token_id) == (1, 0)
  batch = hf_models.batch(9, lp=7, vocab=cfg.vocab_size)
  ours = hf_models.zoo_logits(cfg, params, *batch)
  cls = transformers.T5ForConditionalGeneration
  hf_models.assert_logits_match(ours, _hf_logits(cls.from_pretrained(tmp_path / "hf"), batch),
                                batch[3])
  full, half = (convert.load_safetensors_dir(str(tmp_path / d)) for d in ("hf", "bf16"))
  assert full.keys() == half.keys()
  for name, x in full.items():  # bfloat16 keeps 8 bits of mantissa
    np.testing.assert_allclose(half[name], x, rtol=2 ** -8, atol=0, err_msg=name)
  sizes = [os.path.getsize(tmp_path / d / "model.safetensors") for d in ("hf", "bf16")]
  assert sizes[1] < 0.6 * sizes[0]
  assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"


def _tokenizer_dir(path, config=None):
  """A Llama-3-style tokenizer (BOS, EOS at the end, no PAD) with its tokenizer_config.json."""
  tok = build_tokenizer(str(path / "tokenizer.json"), specials=(BOS, EOS))
  (path / "tokenizer_config.json").write_text(json.dumps(
      config or {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS,
                 "eos_token": EOS, "model_max_length": 8192}))
  v = V.get_vocabulary(tok)
  return tok, v, v.tokenizer.token_to_id(BOS), v.tokenizer.token_to_id(EOS)


def _assert_same_tokens(hf_dir, vocab):
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  texts = fixture_texts()[:24] + ["unseen wörds ✓ 123"]
  assert [tok(t, add_special_tokens=False)["input_ids"] for t in texts] == V.encode_batch(
      vocab, texts)
  return tok


def test_token_ids_and_tokenizer_travel_from_import_to_export(tmp_path):
  """A Llama-3-style source (EOS at the tokenizer's end, a BOS, no PAD; two EOS ids
  in generation_config.json, as Llama 3.1 Instruct has) -> convert -> export:
  the exported config.json / generation_config.json carry the source's ids, not
  the package's 0/1 (a serving engine would stop at token 1), and the tokenizer
  goes along: `AutoTokenizer` reads it and tokenises as our vocabulary does."""
  src = tmp_path / "src"
  src.mkdir()
  tok_path, vocab, bos, eos = _tokenizer_dir(src)
  assert (bos, eos) == (vocab.vocab_size - 2, vocab.vocab_size - 1) and eos > 1
  hf = hf_models.tiny_hf_llama(seed=7, vocab=512, pad_token_id=None, bos_token_id=bos,
                               eos_token_id=eos)
  hf.generation_config.eos_token_id = [eos, bos]
  hf.save_pretrained(src)
  assert convert.main(["--hf_dir", str(src), "--output", str(tmp_path / "zoo")]) == 0
  assert json.loads((tmp_path / "zoo" / "vocabulary.json").read_text()) == {
      "eos_token_id": [eos, bos], "bos_token_id": bos, "vocabulary": tok_path}
  assert _export_cli(tmp_path / "zoo", tmp_path / "hf") == 0
  written = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert (written["eos_token_id"], written["bos_token_id"], written["pad_token_id"]) == (
      [eos, bos], bos, None)
  assert json.loads((tmp_path / "hf" / "generation_config.json").read_text()) == {
      "eos_token_id": [eos, bos], "bos_token_id": bos}
  back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
  assert back.generation_config.eos_token_id == [eos, bos]
  tok = _assert_same_tokens(tmp_path / "hf", vocab)
  assert (tok.eos_token_id, tok.bos_token_id) == (eos, bos)


def test_a_policy_trained_on_a_tokenizer_json_exports_with_it(tmp_path, capsys):
  """What a loop writes (<workdir>/export with its data's vocabulary.json) exports
  with that tokenizer's ids and files; --tokenizer overrides it."""
  tok_path, vocab, bos, eos = _tokenizer_dir(tmp_path / "tok")
  cfg = zoo.get("llama-nano", vocab_size=512)
  checkpoint.export_params(zoo_params.random_params(cfg, 4), cfg, str(tmp_path / "export"),
                           tokens=V.token_record(vocab))
  assert _export_cli(tmp_path / "export", tmp_path / "hf") == 0
  assert f"token ids EOS {eos}, BOS {bos} from {tmp_path / 'export'}" in capsys.readouterr().out
  written = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert (written["eos_token_id"], written["pad_token_id"], written["bos_token_id"]) == (
      eos, None, bos)
  assert sorted(os.listdir(tmp_path / "hf")) == [
      "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
      "tokenizer_config.json"]
  assert _assert_same_tokens(tmp_path / "hf", vocab).eos_token_id == eos
  assert _export_cli(tmp_path / "export", tmp_path / "byte", "--tokenizer=byte") == 0
  written = json.loads((tmp_path / "byte" / "config.json").read_text())
  assert (written["eos_token_id"], written["pad_token_id"]) == (1, 0)
  assert type(transformers.AutoTokenizer.from_pretrained(tmp_path / "byte")).__name__ == (
      "ByT5Tokenizer")


def test_token_errors_are_one_line(tmp_path, capsys):
  tok_path, vocab, _, _ = _tokenizer_dir(tmp_path / "tok")
  small = zoo.get("llama-nano", vocab_size=256)
  params = zoo_params.random_params(small, 0)
  checkpoint.export_params(params, small, str(tmp_path / "small"))
  record = V.token_record(vocab)
  checkpoint.export_params(params, small, str(tmp_path / "past"),
                           tokens=dict(record, vocabulary=None))
  gone = str(tmp_path / "gone" / "tokenizer.json")
  checkpoint.export_params(params, small, str(tmp_path / "gone_export"),
                           tokens=dict(record, vocabulary=gone, eos_token_id=1,
                                       bos_token_id=None))
  checkpoint.export_params(params, small, str(tmp_path / "typed"),
                           tokens=dict(record, vocabulary=None, eos_token_id="</s>"))
  cases = [("small", ["--tokenizer", tok_path], f"has {vocab.vocab_size} tokens, more than "
                                                 "the model's 256"),
           ("small", ["--tokenizer", gone], "--tokenizer="),
           ("past", [], f"eos_token_id {record['eos_token_id']} is past the model's 256"),
           ("gone_export", [], "pass --tokenizer=PATH"),
           ("typed", [], "eos_token_id must be a token id")]
  (tmp_path / "not_a.model").write_text("not a SentencePiece model")
  cases.append(("small", ["--tokenizer", str(tmp_path / "not_a.model")], "not a vocabulary"))
  for i, (params_dir, flags, message) in enumerate(cases):
    capsys.readouterr()
    assert _export_cli(tmp_path / params_dir, tmp_path / f"o{i}", *flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / f"o{i}")
  assert not [p for p in os.listdir(tmp_path) if p.startswith("o")]  # nothing half-written
  # --tokenizer=none: the record's ids, no tokenizer (its file is gone).
  assert _export_cli(tmp_path / "gone_export", tmp_path / "ids_only", "--tokenizer=none") == 0
  assert json.loads((tmp_path / "ids_only" / "config.json").read_text())["eos_token_id"] == 1
  assert "tokenizer.json" not in os.listdir(tmp_path / "ids_only")


def test_a_failure_while_writing_leaves_nothing(tmp_path, capsys, monkeypatch):
  """A disk that fills up (or a tokenizer file gone) while the output is written:
  one line, and neither the output nor its temporary directory remains."""
  _, vocab, _, _ = _tokenizer_dir(tmp_path / "tok")
  cfg = zoo.get("llama-nano", vocab_size=512)
  checkpoint.export_params(zoo_params.random_params(cfg, 1), cfg, str(tmp_path / "export"),
                           tokens=V.token_record(vocab))

  def full(*args, **kwargs):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(export.shutil, "copyfile", full)
  capsys.readouterr()
  assert _export_cli(tmp_path / "export", tmp_path / "hf") == 2
  err = capsys.readouterr().err
  assert "cannot write" in err and "No space left on device" in err and err.count("\n") == 1
  assert sorted(os.listdir(tmp_path)) == ["export", "tok"]


def test_ids_a_hugging_face_config_may_hold(tmp_path):
  """Older Llama configs say pad_token_id -1 (none); a bool is no id; a T5 without a
  PAD still pads and starts its decoder with 0; a BOS the tokenizer lacks is none."""
  (tmp_path / "config.json").write_text(json.dumps(
      {"pad_token_id": -1, "eos_token_id": 2, "bos_token_id": 1}))
  assert convert.hf_tokens(str(tmp_path)) == {"eos_token_id": 2, "bos_token_id": 1,
                                              "vocabulary": None}
  (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": True}))
  with pytest.raises(convert.ConversionError, match="generation_config.json: eos_token_id "
                                                     "must be a token id"):
    convert.hf_tokens(str(tmp_path))
  t5 = export.config_to_hf(zoo.get("t5-nano", vocab_size=64),
                           {"eos_token_id": 5, "pad_token_id": None, "bos_token_id": None})
  assert (t5["eos_token_id"], t5["pad_token_id"], t5["decoder_start_token_id"]) == (5, 0, 0)
  _, vocab, _, _ = _tokenizer_dir(tmp_path / "tok", {"eos_token": EOS, "bos_token": "<nope>"})
  assert vocab.bos_id is None and vocab.eos_id == vocab.vocab_size - 1


def test_export_errors_are_one_line(tmp_path, capsys):
  cfg = zoo.get("t5-nano", vocab_size=16)
  params = zoo_params.random_params(cfg, 0)
  # A preference model's extra head is refused, not silently dropped.
  checkpoint.export_params(dict(params, value_head={"kernel": np.zeros((32, 1), np.float32)}),
                           cfg, str(tmp_path / "pm"))
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "model_config.json").write_text("{not json")
  cases = [(tmp_path / "missing", tmp_path / "o1", "no such directory"),
           (tmp_path / "bad", tmp_path / "o2", "not a model config"),
           (tmp_path / "pm" / "params", tmp_path / "o3", "not a params export"),
           (tmp_path / "pm", tmp_path / "o4", "value_head"),
           (tmp_path / "pm", tmp_path / "bad", "already exists")]
  for params_dir, output, message in cases:
    capsys.readouterr()
    assert _export_cli(params_dir, output) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not os.path.exists(output) or output == tmp_path / "bad"
  assert sorted(os.listdir(tmp_path)) == ["bad", "pm"]  # nothing half-written
  with pytest.raises(export.ExportError, match="out_bias without qkv_bias"):
    export.config_to_hf(zoo.get("llama-nano", out_bias=True))


def test_a_relative_params_path_exports(tmp_path, monkeypatch):
  """README's `--params=runs/online/export` as written, from the directory holding
  it: orbax wants absolute paths, so export makes them (issue 26.6)."""
  cfg = zoo.get("llama-nano", vocab_size=16)
  checkpoint.export_params(zoo_params.random_params(cfg, 1), cfg,
                           str(tmp_path / "runs/online/export"))
  monkeypatch.chdir(tmp_path)
  assert export.main(["--params=runs/online/export", "--output=hf_policy"]) == 0
  assert os.path.exists(tmp_path / "hf_policy" / "model.safetensors")


def test_chat_template_and_eos_list_travel_so_generate_stops_where_we_do(tmp_path):
  """A tiny Llama chat model (its template in chat_template.jinja, two EOS ids in
  generation_config.json, as Llama 3.1 Instruct) -> convert -> export ->
  from_pretrained: apply_chat_template + greedy generate gives our greedy
  sampler's tokens and stops at the same EOS (issue 26.3)."""
  import torch  # pylint: disable=g-import-not-at-top
  from alignment import generate, sampling  # pylint: disable=g-import-not-at-top
  from hf_tokenizer import LLAMA3_TEMPLATE, build_chat_model  # pylint: disable=g-import-not-at-top
  src = tmp_path / "src"
  build_chat_model(str(src), chat_template=None)
  (src / "chat_template.jinja").write_text(LLAMA3_TEMPLATE)
  tok = transformers.AutoTokenizer.from_pretrained(src)
  eot = tok.convert_tokens_to_ids("<|eot_id|>")
  hf = hf_models.tiny_hf_llama(seed=3, vocab=len(tok), pad_token_id=None, eos_token_id=eot)
  hf.save_pretrained(src)
  messages = [{"role": "user", "content": "ana rome . ben cat ."}]
  prompt = list(tok.apply_chat_template(messages, add_generation_prompt=True,
                                        return_dict=True)["input_ids"])
  cfg, params = convert.convert_dir(str(src))
  free = generate.generate(cfg, params, [prompt], sampling.SamplingConfig(
      max_new_tokens=8, greedy=True, eos_id=eot, pad_id=None))
  second = int(free.tokens[0, 2])  # greedy decoding's third token: the second EOS id
  hf.generation_config.eos_token_id = [eot, second]
  hf.generation_config.save_pretrained(src)
  assert convert.main(["--hf_dir", str(src), "--output", str(tmp_path / "zoo")]) == 0
  assert _export_cli(tmp_path / "zoo", tmp_path / "hf") == 0
  assert (tmp_path / "hf" / "chat_template.jinja").read_text() == LLAMA3_TEMPLATE
  cfg, params, tokens = generate.load_policy(str(tmp_path / "zoo"))
  vocab = generate.load_vocabulary(str(tmp_path / "zoo"), tokens)
  ours = generate.generate(cfg, params, [prompt], sampling.SamplingConfig(
      max_new_tokens=8, greedy=True, **generate.stop_ids(tokens, vocab)))
  length = int(ours.lengths[0])
  assert ours.finished[0] and int(ours.tokens[0, length - 1]) == second and length <= 3
  back_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
  ids = back_tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                     return_tensors="pt")["input_ids"]
  assert ids[0].tolist() == prompt
  with torch.no_grad():
    theirs = back.generate(ids, max_new_tokens=8, do_sample=False)[0, len(prompt):].tolist()
  assert theirs == ours.tokens[0, :length].tolist()

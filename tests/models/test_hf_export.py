"""`alignment.models.export`: params exports back to Hugging Face, loaded by
`from_pretrained` (the oracle) and compared with our logits."""
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

import hf_models  # noqa: E402  (skips the module without torch/transformers)
import transformers  # noqa: E402

from alignment import checkpoint  # noqa: E402
from alignment.models import convert, export, zoo  # noqa: E402

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


def _random_params(cfg, seed):
  """A zoo LanguageModel's parameters, random at a fan-in scale (no init to compile)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: (rng.normal(size=x.shape) / np.sqrt(np.prod(x.shape[:-1]))).astype(np.float32),
      nn.unbox(zoo.abstract_params(cfg)))


def test_zoo_model_exports(tmp_path):
  """t5-tiny (our vocabulary size and layout) with random parameters, written by
  `checkpoint.export_params` as every training loop writes <workdir>/export
  (the online policy's export has this form), loads in transformers with our
  logits; --dtype=bfloat16 writes the same tensors rounded, in half the bytes."""
  cfg = zoo.get("t5-tiny")
  params = _random_params(cfg, 3)
  checkpoint.export_params(params, cfg, str(tmp_path / "export"))
  assert _export_cli(tmp_path / "export", tmp_path / "hf") == 0
  assert _export_cli(tmp_path / "export", tmp_path / "bf16", "--dtype=bfloat16") == 0
  written = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert written["tie_word_embeddings"] is False and written["feed_forward_proj"] == "gated-gelu"
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


def test_export_errors_are_one_line(tmp_path, capsys):
  cfg = zoo.get("t5-nano", vocab_size=16)
  params = _random_params(cfg, 0)
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

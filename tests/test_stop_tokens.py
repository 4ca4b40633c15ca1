"""Stop tokens carried everywhere (issue 26, item 3): a chat import whose template ends
a turn with another token than the tokenizer's EOS (Gemma's <end_of_turn> and <eos>)
has every sampler stop at both, and the EOS list of the model a run starts from (a
converted Llama 3.1 Instruct's) reaches every export the run writes and the Hugging
Face export's generation_config.json, with the chat template.

The models are tests/hf_tokenizer.py's tiny tokenizer with Gemma's template, built
here, never downloaded.
"""
import json
import os

import jax
import numpy as np
import pytest

from alignment import checkpoint, layout, sampling
from alignment import config as config_lib
from alignment import main as main_lib
from alignment.data import chat, stream, tasks
from alignment.data import import_pairs as ip
from alignment.data import vocab as V
from alignment.models import convert, export, heads, zoo
from hf_tokenizer import GEMMA_TEMPLATE, build_chat_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT_LEN, RESPONSE_LEN = 32, 12


def _m(role, content):
  return {"role": role, "content": content}


def _chat_file(path, n: int = 40) -> str:
  """n systemless chat pairs (Gemma has no system role), each prompt its own."""
  with open(path, "w") as f:
    for i in range(n):
      f.write(json.dumps({"prompt": [_m("user", f"Name a colour ({i}).")],
                          "chosen": [_m("assistant", "Blue.")],
                          "rejected": [_m("assistant", "Why?")]}) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def gemma_import(tmp_path_factory):
  """(model directory, import directory, its vocabulary, EOS id, end-of-turn id)."""
  root = tmp_path_factory.mktemp("stops")
  model = build_chat_model(str(root / "gemma"), "gemma")
  out = str(root / "import")
  ip.import_file(_chat_file(root / "chat.jsonl"), "chat", out, vocab=model,
                 max_prompt_tokens=PROMPT_LEN, max_response_tokens=RESPONSE_LEN,
                 validation_fraction=0.3, name=f"stops_{root.name}")
  vocab = V.get_vocabulary(model)
  return (model, out, vocab, vocab.tokenizer.token_to_id("<eos>"),
          vocab.tokenizer.token_to_id("<end_of_turn>"))


def test_a_gemma_import_stops_every_sampler_at_its_end_of_turn(gemma_import):
  """The ids the import records as its replies' end are the ids the samplers stop at
  (beside EOS), and what an export of its vocabulary records; Llama 3 Instruct's
  template, whose end-of-turn token is its EOS, keeps the single id."""
  model, out, vocab, eos, eot = gemma_import
  assert vocab.eos_id == eos != eot
  assert ip.read_metadata(out)["chat_template"]["end_of_turn"] == [eot]
  assert chat.end_of_turn_ids(vocab) == (eot,)
  assert V.stop_ids(vocab) == (eos, eot)
  assert V.sampling_ids(vocab) == {"eos_id": (eos, eot), "pad_id": None}
  assert V.token_record(vocab)["eos_token_id"] == [eos, eot]
  # The pair-set sampler's config (the online loop and evaluation add the policy
  # export's list to the same ids: `sampling.with_model_eos`).
  assert sampling.SamplingConfig(**V.sampling_ids(vocab)).eos_id == (eos, eot)
  rows, ended = V.cut_at_eos(np.array([[5, eot, 7], [5, 6, 7], [eos, 9, 9]]),
                             **V.sampling_ids(vocab))
  assert rows == [[5], [5, 6, 7], []] and ended.tolist() == [True, False, True]
  llama = build_chat_model(os.path.join(os.path.dirname(model), "llama3"), "llama3")
  v = V.get_vocabulary(llama)
  assert V.stop_ids(v) == (v.eos_id,) == (v.tokenizer.token_to_id("<|eot_id|>"),)
  assert V.token_record(v)["eos_token_id"] == v.eos_id
  assert V.stop_ids(V.get_vocabulary("sentencepiece")) == (1,)


def _zero_params(model) -> dict:
  """A model's parameters as numpy zeros, RMSNorm scales 1 (no initialisation run)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  init = heads.init_fn(model, PROMPT_LEN, RESPONSE_LEN)
  abstract = jax.eval_shape(lambda k: nn.unbox(init(k)), jax.random.PRNGKey(0))
  return jax.tree_util.tree_map_with_path(
      lambda path, x: np.full(x.shape, float(path[-1].key == "scale"), x.dtype), abstract)


def _converted_policy(directory: str, vocab, eot: int, extra: int) -> str:
  """A llama-nano written as `convert` writes a Hugging Face model (its source's EOS
  list [EOS, extra] in vocabulary.json, as Llama 3.1 Instruct's generation_config),
  whose residual stream is its token embedding's first axis alone (attention and MLP
  weights zero), so every next token is <end_of_turn> with probability about 1/2 and
  uniform over the rest otherwise."""
  cfg = zoo.get("llama-nano", vocab_size=V.model_vocab_size(vocab))
  params = _zero_params(heads.LanguageModel(cfg))
  params["backbone"]["token_embed"]["embedding"][:, 0] = 1  # RMS-normed: sqrt(d_model)
  params["lm_head"]["kernel"][0, eot] = np.log(vocab.vocab_size) / np.sqrt(cfg.d_model)
  convert.save(params, cfg, directory, tokens={"eos_token_id": [vocab.eos_id, extra],
                                               "vocabulary": vocab.path})
  return directory


def _pm_export(directory: str, vocab) -> str:
  """A pairwise PM with zero weights (every pair a tie): the online judge and the
  golden PM."""
  cfg = zoo.get("llama-nano", vocab_size=V.model_vocab_size(vocab))
  params = _zero_params(heads.PairwisePreferenceModel(cfg))
  checkpoint.export_params(params, cfg, directory)
  return directory


@pytest.mark.e2e
@pytest.mark.slow
def test_an_online_run_on_a_gemma_import_from_a_converted_model_stops_and_exports(
    gemma_import, tmp_path):
  """A converted decoder with an EOS list -> an online run of 1 step on the Gemma
  import: every sampled response ends at its first stop id (EOS, <end_of_turn>, the
  list's other id) or at the length limit, most at <end_of_turn>; the run's export
  (and the policy its evaluation keeps) records [EOS, <end_of_turn>, other], and its Hugging Face export carries that list
  in generation_config.json (as transformers reads it) and Gemma's chat template."""
  transformers = pytest.importorskip("transformers")
  _, out, vocab, eos, eot = gemma_import
  extra = vocab.tokenizer.token_to_id("<start_of_turn>")
  policy = _converted_policy(str(tmp_path / "converted"), vocab, eot, extra)
  pm = _pm_export(str(tmp_path / "pm"), vocab)
  name = tasks.resolve(out)
  c = config_lib.load(os.path.join(ROOT, "configs", "online.py:tiny"))
  config_lib.apply_overrides(c, [f"{k}={v!r}" for k, v in {
      "model.name": "llama-nano", "data.task": f"{name}_prompts",
      "data.prompt_len": PROMPT_LEN, "data.response_len": RESPONSE_LEN,
      "data.batch_size": 8, "init.policy": policy, "judge.checkpoint": pm,
      "train.num_steps": 1, "train.checkpoint_every": 1, "train.log_every": 1,
      "eval.prompts_task": f"{name}_prompts", "eval.pairs_task": name,
      "eval.golden_checkpoint": pm, "eval.kl_prompts": 8, "eval.win_prompts": 8,
      "eval.classifier_pairs": 8, "eval.batch_size": 8, "eval.steps": [1],
      "eval.save_params": True}.items()])
  workdir = str(tmp_path / "online")
  main_lib.run(c, workdir)

  stops = (eos, eot, extra)
  batch = stream.fixed_pairs(layout.stream(workdir), 8)
  responses = [(t, m) for pair in ((batch.chosen, batch.chosen_mask),
                                   (batch.rejected, batch.rejected_mask))
               for t, m in zip(*pair)]
  at_eot = 0
  for tokens, mask in responses:
    n = int(np.sum(mask))
    first = next((i for i, t in enumerate(tokens[:n]) if t in stops), None)
    assert first == n - 1 or (first is None and n == RESPONSE_LEN), tokens[:n]
    at_eot += first is not None and tokens[first] == eot
  assert at_eot >= len(responses) // 2, at_eot

  record = checkpoint.load_tokens(layout.export(workdir))
  assert record["eos_token_id"] == [eos, eot, extra]
  assert record["vocabulary"] == vocab.path
  # So does the policy an evaluation keeps (eval.save_params): e.g. a curve's peak.
  assert checkpoint.load_tokens(layout.eval_policy(workdir, 1)) == record
  assert export.main(["--params", layout.export(workdir),
                      "--output", str(tmp_path / "hf")]) == 0
  assert transformers.GenerationConfig.from_pretrained(
      tmp_path / "hf").eos_token_id == [eos, eot, extra]
  config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
  assert config["chat_template"] == GEMMA_TEMPLATE

"""`python -m alignment.generate`: what a policy writes, from a params export or a
Hugging Face directory, in-process on toy models."""
import json

import pytest

from alignment import checkpoint, generate, sampling
from alignment.data import vocab as V
from alignment.models import zoo
import zoo_params  # tests/zoo_params.py


@pytest.fixture(scope="module")
def byte_export(tmp_path_factory):
  """A llama-nano over the byte vocabulary, exported as a loop exports its policy."""
  vocab = V.get_vocabulary("byte")
  cfg = zoo.get("llama-nano", vocab_size=vocab.vocab_size)
  path = str(tmp_path_factory.mktemp("gen") / "export")
  checkpoint.export_params(zoo_params.random_params(cfg, 0), cfg, path,
                           tokens=V.token_record(vocab))
  return path


def _headers(out):
  return [line for line in out.splitlines() if line.startswith("prompt ")]


def test_samples_and_greedy_from_an_export(byte_export, tmp_path, capsys):
  """n samples per prompt of --input, each with its length, stop and sum log-prob;
  the printed log-prob is the sampler's, and greedy is the same for every seed."""
  (tmp_path / "prompts.txt").write_text("ana rome .\n\nben cat .\n")
  assert generate.main([f"--params={byte_export}", f"--input={tmp_path / 'prompts.txt'}",
                        "--n=3", "--max_new_tokens=6", "--top_p=0.9", "--seed=1"]) == 0
  heads = _headers(capsys.readouterr().out)
  assert [h.split(":")[0] for h in heads] == [f"prompt {i}, sample {j}"
                                            for i in range(2) for j in range(3)]
  cfg, params, tokens = generate.load_policy(byte_export)
  vocab = generate.load_vocabulary(byte_export, tokens)
  config = sampling.SamplingConfig(max_new_tokens=6, top_p=0.9, num_samples=3,
                                   vocab_size=vocab.vocab_size, **generate.stop_ids(tokens, vocab))
  out = generate.generate(cfg, params, V.encode_batch(vocab, ["ana rome .", "ben cat ."]),
                          config, seed=1)
  for head, length, logprobs in zip(heads, out.lengths, out.logprobs):
    assert f": {length} tokens," in head and head.endswith(f"{logprobs.sum():.4f}")
  greedy = []
  for seed in (0, 5):
    assert generate.main([f"--params={byte_export}", "--prompt=ana rome .", "--greedy",
                          "--max_new_tokens=4", f"--seed={seed}"]) == 0
    greedy.append(capsys.readouterr().out)
  assert greedy[0] == greedy[1] and len(_headers(greedy[0])) == 1


def test_bad_input_is_one_line(byte_export, tmp_path, capsys):
  (tmp_path / "bad.json").write_text('{"role": "user"}')
  (tmp_path / "empty.txt").write_text("\n\n")
  cases = [([f"--params={tmp_path / 'missing'}", "--prompt=x"], "missing: no such directory"),
           ([f"--params={tmp_path}", "--prompt=x"], "neither a params export"),
           ([f"--params={byte_export}", "--prompt=x", "--n=0"], "--n="),
           ([f"--params={byte_export}", "--prompt=x", "--top_p=2"], "--top_p="),
           ([f"--params={byte_export}", f"--input={tmp_path / 'empty.txt'}"], "no prompts"),
           ([f"--params={byte_export}", f"--input={tmp_path / 'none.txt'}"], "none.txt"),
           ([f"--params={byte_export}", f"--messages={tmp_path / 'bad.json'}"],
            "bad.json: must hold"),
           # the byte vocabulary has no chat template
           ([f"--params={byte_export}", f"--messages={tmp_path / 'm.json'}"], "m.json")]
  (tmp_path / "m.json").write_text(json.dumps([{"role": "user", "content": "hi"}]))
  for argv, message in cases:
    capsys.readouterr()
    assert generate.main(argv) == 2, argv
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: "), err


@pytest.mark.hf
def test_messages_on_a_hugging_face_directory(tmp_path, capsys):
  """A Hugging Face directory (a chat tokenizer, two EOS ids in generation_config),
  converted in memory: --messages renders the chat template as transformers does,
  and the response stops at either EOS."""
  import hf_models  # pylint: disable=g-import-not-at-top  (skips without torch)
  from hf_tokenizer import build_chat_model  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  build_chat_model(str(tmp_path / "hf"))
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  eot = tok.convert_tokens_to_ids("<|eot_id|>")
  hf = hf_models.tiny_hf_llama(seed=3, vocab=len(tok), pad_token_id=None, eos_token_id=eot)
  hf.save_pretrained(tmp_path / "hf")
  messages = [{"role": "user", "content": "ana rome ."}]
  (tmp_path / "m.json").write_text(json.dumps(messages))
  cfg, params, tokens = generate.load_policy(str(tmp_path / "hf"))
  vocab = generate.load_vocabulary(str(tmp_path / "hf"), tokens)
  prompt = list(tok.apply_chat_template(messages, add_generation_prompt=True,
                                        return_dict=True)["input_ids"])
  assert generate._chat_prompt(str(tmp_path / "m.json"), vocab) == prompt
  free = generate.generate(cfg, params, [prompt], sampling.SamplingConfig(
      max_new_tokens=8, greedy=True, eos_id=eot, pad_id=None))
  second = int(free.tokens[0, 2])  # a token greedy decoding emits third
  hf.generation_config.eos_token_id = [eot, second]
  hf.generation_config.save_pretrained(tmp_path / "hf")
  assert generate.main([f"--params={tmp_path / 'hf'}", f"--messages={tmp_path / 'm.json'}",
                        "--greedy", "--max_new_tokens=8"]) == 0
  head = _headers(capsys.readouterr().out)[0]
  first = list(free.tokens[0]).index(second) + 1
  assert f": {first} tokens, ended at EOS" in head, head


def test_an_export_and_its_hugging_face_directory_write_the_same(byte_export, tmp_path,
                                                                  capsys):
  """The Hugging Face directory `alignment.models.export` writes (the byte vocabulary
  as ByT5Tokenizer) generates what the params export does, from a relative path."""
  from alignment.models import export  # pylint: disable=g-import-not-at-top
  assert export.main([f"--params={byte_export}", f"--output={tmp_path / 'hf'}"]) == 0
  outputs = []
  for params in (byte_export, "hf"):
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as m:
      m.chdir(tmp_path)
      assert generate.main([f"--params={params}", "--prompt=ana rome .", "--greedy",
                            "--max_new_tokens=5"]) == 0
    outputs.append(capsys.readouterr().out)
  assert outputs[0] == outputs[1] and _headers(outputs[0])

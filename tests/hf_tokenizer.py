"""A tiny Hugging Face tokenizer.json built from the fixtures' texts (never downloaded):
a byte-level BPE of 400 tokens with Llama 3's special-token names appended."""
import os

from alignment.data import import_pairs as ip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
EOS = "<|end_of_text|>"
BOS = "<|begin_of_text|>"


def fixture_texts() -> list[str]:
  texts = []
  for fmt, file in (("tldr", "tldr.jsonl"), ("jsonl", "pairs.jsonl"), ("hh", "hh.jsonl")):
    for r in ip.read_records(os.path.join(FIXTURES, file), fmt):
      texts += [r.prompt, r.chosen, r.rejected]
  return texts


def build_tokenizer(path: str, specials=(EOS,)) -> str:
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(fixture_texts(), trainer=trainers.BpeTrainer(
      vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False))
  tok.add_special_tokens(list(specials))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tok.save(path)
  return path


# Chat models: the tiny tokenizer with a chat template in its tokenizer_config.json.
# LLAMA3 is Llama 3 Instruct's template (BOS before the first message, headers, every
# message trimmed and closed by <|eot_id|>); GEMMA is Gemma's (no system role: it raises,
# "model" for the assistant, turns closed by <end_of_turn> and a newline).
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
CHAT_MODELS = {
    "llama3": {"specials": (BOS, EOS, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
               "config": {"bos_token": BOS, "eos_token": "<|eot_id|>",
                          "chat_template": LLAMA3_TEMPLATE}},
    "gemma": {"specials": ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"),
              "config": {"bos_token": "<bos>", "eos_token": "<eos>",
                         "chat_template": GEMMA_TEMPLATE}},
}


def build_chat_model(directory: str, style: str = "llama3", **config) -> str:
  """directory/tokenizer.json and a tokenizer_config.json with style's chat template
  (config's keys replace or, given None, remove its entries); returns directory."""
  import json  # pylint: disable=g-import-not-at-top
  model = CHAT_MODELS[style]
  build_tokenizer(os.path.join(directory, "tokenizer.json"), specials=model["specials"])
  settings = {**model["config"], **config}
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump({k: v for k, v in settings.items() if v is not None}, f)
  return directory

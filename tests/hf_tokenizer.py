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

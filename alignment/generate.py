"""Sampled responses of a policy, with their log-probs.

    python -m alignment.generate --params=DIR --prompt=TEXT [--n=1] [--temperature=1.0]
        [--top_p=1.0] [--top_k=0] [--greedy] [--max_new_tokens=64] [--seed=0]
    python -m alignment.generate --params=DIR --messages=FILE ...
    python -m alignment.generate --params=DIR --input=FILE ...

DIR is a params export (a run's <workdir>/export, or `alignment.models.convert`'s
output) or a Hugging Face model directory (config.json + safetensors), converted
in memory (`convert.convert_dir`). The tokenizer and the stop ids are the
model's: an export's vocabulary.json (`checkpoint.load_tokens`), a Hugging Face
directory's tokenizer.json (or the spiece.model / ByT5Tokenizer that
`alignment.models.export` writes for the package's vocabularies) and
config.json / generation_config.json (`convert.hf_tokens`). Every EOS id of
the record stops a response (a list, as Llama 3.1 Instruct's, stops at the
first of any); its PAD is never drawn.

The prompts: `--prompt` one text; `--input` a text file, one prompt per
non-empty line; `--messages` a JSON file holding a list of {"role", "content"}
messages, rendered with the model's chat template (`alignment.data.chat`,
transformers' `apply_chat_template(..., add_generation_prompt=True)`). A text
prompt is encoded as the loops encode prompts: no BOS or EOS added.

For each prompt and sample it prints a header line, `prompt I, sample J: N
tokens, ended at EOS (or: at max_new_tokens), log-prob S` (S: the sum of the
response's token log-probs under the model itself, untempered, the EOS
included), then the response's text (special tokens dropped). Paths are
relative to the current directory. Bad input (a missing directory or file,
a malformed messages file, an option out of range) ends in one line naming
it, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence


class GenerateError(ValueError):
  pass


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split()) or type(e).__name__
  return text if len(text) <= 300 else text[:300] + "..."


def load_policy(path: str):
  """(zoo config, LanguageModel params as numpy, token record) of an export or a
  Hugging Face directory (module docstring)."""
  from alignment import checkpoint  # pylint: disable=g-import-not-at-top
  from alignment.models import convert, export, validate  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise GenerateError(f"{path}: no such directory")
  try:
    if os.path.exists(os.path.join(path, checkpoint.MODEL_CONFIG_FILE)):
      cfg, params = export.read_lm_as_numpy(path)
      tokens = checkpoint.load_tokens(path) or {}
    elif os.path.exists(os.path.join(path, "config.json")):
      cfg, params = convert.convert_dir(path)
      tokens = convert.hf_tokens(path)
      if not tokens.get("vocabulary"):
        tokens["vocabulary"] = _exported_vocabulary(path)
    else:
      raise GenerateError(f"{path}: neither a params export (model_config.json) nor a "
                          "Hugging Face model directory (config.json)")
  except (export.ExportError, convert.ConversionError, validate.ModelFileError,
          checkpoint.CheckpointError) as e:
    raise GenerateError(str(e)) from None
  return cfg, params, tokens


def _exported_vocabulary(path: str) -> Optional[str]:
  """The package's vocabularies as `alignment.models.export` writes them: the
  SentencePiece model as spiece.model, the byte vocabulary as ByT5Tokenizer."""
  if os.path.exists(os.path.join(path, "spiece.model")):
    return os.path.abspath(os.path.join(path, "spiece.model"))
  config = os.path.join(path, "tokenizer_config.json")
  try:
    with open(config, encoding="utf-8") as f:
      byte = json.load(f).get("tokenizer_class") == "ByT5Tokenizer"
  except (OSError, ValueError, AttributeError):
    return None
  return "byte" if byte else None


def load_vocabulary(path: str, tokens: dict):
  """The model's vocabulary, named by its token record."""
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  name = tokens.get("vocabulary")
  if not name:
    raise GenerateError(f"{path}: the model records no tokenizer (no vocabulary.json naming "
                        "one, no tokenizer.json): its responses cannot be read as text")
  try:
    return vocab_lib.get_vocabulary(name)
  except Exception as e:  # pylint: disable=broad-except  (protobuf, TF, tokenizers errors)
    raise GenerateError(f"{path}: its vocabulary {name!r} cannot be read: "
                        f"{_one_line(e)}") from None


def stop_ids(tokens: dict, vocab) -> dict:
  """SamplingConfig's eos_id (every EOS id of the record, else the vocabulary's) and
  pad_id (the record's PAD unless it is an EOS)."""
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  ids = vocab_lib.sampling_ids(vocab)
  eos = tokens.get("eos_token_id")
  if eos is not None:
    ids["eos_id"] = tuple(eos) if isinstance(eos, list) else eos
  eos_set = set(ids["eos_id"]) if isinstance(ids["eos_id"], tuple) else {ids["eos_id"]}
  if "pad_token_id" in tokens:
    ids["pad_id"] = tokens["pad_token_id"]
  if ids["pad_id"] in eos_set:
    ids["pad_id"] = None
  return ids


def read_prompts(args, vocab) -> list[list[int]]:
  """Token ids of the prompts the flags give (module docstring)."""
  from alignment.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  if args.prompt is not None:
    texts = [args.prompt]
  elif args.input is not None:
    try:
      with open(args.input, encoding="utf-8") as f:
        texts = [line.rstrip("\r\n") for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
      raise GenerateError(f"{args.input}: unreadable: {_one_line(e)}") from None
    if not texts:
      raise GenerateError(f"{args.input}: no prompts (one per non-empty line)")
  else:
    return [_chat_prompt(args.messages, vocab)]
  if not all(texts):
    raise GenerateError("--prompt: empty")
  return vocab_lib.encode_batch(vocab, texts)


def _chat_prompt(file: str, vocab) -> list[int]:
  from alignment.data import chat  # pylint: disable=g-import-not-at-top
  try:
    with open(file, encoding="utf-8") as f:
      messages = json.load(f)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise GenerateError(f"{file}: unreadable: {_one_line(e)}") from None
  if not (isinstance(messages, list) and messages and all(
      isinstance(m, dict) and isinstance(m.get("role"), str)
      and isinstance(m.get("content"), str) for m in messages)):
    raise GenerateError(f'{file}: must hold a non-empty JSON list of {{"role", "content"}} '
                        "messages with text values")
  try:
    template = chat.load_template(vocab)
    text = template.render(messages, True, "messages")
  except ValueError as e:  # ChatError too
    raise GenerateError(f"{file}: {_one_line(e)}") from None
  return vocab.encode_batch([text])[0]


def generate(cfg, params, prompts: Sequence[Sequence[int]], config, seed: int = 0):
  """SampleOutput (host numpy) of `config` on the prompts (left padded)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from alignment import sampling  # pylint: disable=g-import-not-at-top
  from alignment.data.batches import PAD_ID, PromptBatch  # pylint: disable=g-import-not-at-top
  from alignment.models import heads  # pylint: disable=g-import-not-at-top
  width = max(len(p) for p in prompts)
  prompt = np.full((len(prompts), width), PAD_ID, np.int32)
  mask = np.zeros((len(prompts), width), np.int32)
  for i, p in enumerate(prompts):
    if len(p):
      prompt[i, width - len(p):], mask[i, width - len(p):] = p, 1
  sampler = sampling.Sampler(heads.LanguageModel(cfg), config)
  return jax.device_get(sampler(params, PromptBatch(prompt, mask), jax.random.key(seed)))


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--params", required=True,
                      help="a params export or a Hugging Face model directory")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--prompt", help="one prompt's text")
  source.add_argument("--messages", help="JSON file: a list of {role, content} messages, "
                                         "rendered with the model's chat template")
  source.add_argument("--input", help="text file, one prompt per non-empty line")
  parser.add_argument("--n", type=int, default=1, help="samples per prompt")
  parser.add_argument("--temperature", type=float, default=1.0)
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--top_k", type=int, default=0)
  parser.add_argument("--greedy", action="store_true", help="argmax decoding")
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  from alignment import sampling  # pylint: disable=g-import-not-at-top
  try:
    try:
      config = sampling.SamplingConfig(
          max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
          top_p=args.top_p, greedy=args.greedy, num_samples=args.n)
    except sampling.SamplingConfigError as e:
      raise GenerateError(str(e).replace("SamplingConfig.num_samples", "--n").replace(
          "SamplingConfig.", "--")) from None
    cfg, params, tokens = load_policy(args.params)
    vocab = load_vocabulary(args.params, tokens)
    prompts = read_prompts(args, vocab)
    import dataclasses  # pylint: disable=g-import-not-at-top
    try:
      config = dataclasses.replace(config, vocab_size=min(vocab.vocab_size, cfg.vocab_size),
                                   **stop_ids(tokens, vocab))
    except sampling.SamplingConfigError as e:
      raise GenerateError(f"{args.params}: its token ids: {e}") from None
  except GenerateError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out = generate(cfg, params, prompts, config, args.seed)
  for row, (ids, length, finished, logprobs) in enumerate(
      zip(out.tokens, out.lengths, out.finished, out.logprobs)):
    text = vocab.decode([int(i) for i in ids[:length - int(finished)]])
    end = "ended at EOS" if finished else "ended at max_new_tokens"
    print(f"prompt {row // args.n}, sample {row % args.n}: {int(length)} tokens, {end}, "
          f"log-prob {float(logprobs[:length].sum()):.4f}")
    print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""A model's chat template, rendered as transformers renders it, and pairs tokenized with it.

`load_template(vocabulary)` takes a `hf_vocab.HuggingFaceVocabulary` (a model
directory's tokenizer.json) and finds its template where transformers 5 looks:
chat_template.jinja beside tokenizer.json first, else the "chat_template" of
tokenizer_config.json (a string, or a list of {"name", "template"}: the one
named "default"). No template is a ValueError naming the directory.

Rendering (`ChatTemplate.render`) follows transformers' `apply_chat_template`
(transformers/utils/chat_template_utils.py): jinja2's immutable sandbox with
trim_blocks and lstrip_blocks, the loopcontrols extension and
`{% generation %}` blocks (rendered as their body), the globals
`raise_exception`, `strftime_now`, `dict` and `namespace`, a `tojson` that
does not escape HTML, and the variables messages ([{"role", "content"}]),
tools=None, documents=None, add_generation_prompt and the special tokens
tokenizer_config.json names (bos_token, eos_token, unk_token, sep_token,
pad_token, cls_token, mask_token: those it has). The rendered text is
encoded without added special tokens (`HuggingFaceVocabulary.encode_batch`),
as `apply_chat_template(..., tokenize=True)` encodes it. One difference, on
purpose: where transformers writes a variable nobody set as empty text
(`{{ bos_token }}` with no bos_token in the config), this refuses the
conversation, naming the variable (a prompt silently missing its BOS trains
a model on text it will never see).

A pair (`ChatTemplate.pair_ids`):
  prompt    the prompt messages rendered with add_generation_prompt=True: the
            ids of `apply_chat_template(prompt, add_generation_prompt=True)`;
  response  the ids of the whole conversation (prompt + the response's
            messages, `apply_chat_template(conversation)`) after the prompt's
            ids, up to and including the last special token the template
            writes there: the end-of-turn token (Llama 3's <|eot_id|>,
            ChatML's <|im_end|>, Gemma's <end_of_turn>). What a template
            writes after it (ChatML's and Gemma's newline) is the gap before a
            next turn, not part of the reply: generation stops at the
            end-of-turn token. So prompt + response is the template's
            conversation, cut after its last end-of-turn token.
A conversation whose ids do not begin with the prompt's (a template that
renders a prompt differently when a reply follows, or BPE merging the
generation prompt's last characters with the reply's first) cannot be split
and is refused; so is a reply with no special token after it.

Long prompts (`on_long="truncate"`): whole turns are dropped from the oldest
(a user message with the assistant's reply to it; a first system message is
kept), the fewest that make the rendered prompt fit; the last user turn is
never cut: a prompt whose system message and last user turn alone are over
the limit is refused. With `on_long="error"` a prompt over the limit is
refused. Errors are `ChatError`s whose text names the record's field
('field "prompt": ...'); the importer puts the file and record before it.
"""
from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
from typing import NamedTuple, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox
import jinja2.utils

TEMPLATE_FILE = "chat_template.jinja"
CONFIG = "tokenizer_config.json"
# transformers' SPECIAL_TOKENS_ATTRIBUTES: the names its templates see.
SPECIAL_TOKEN_VARIABLES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                           "cls_token", "mask_token")


class ChatError(ValueError):
  """A conversation the template cannot make a pair of; the text names the field."""


class _Unset(jinja2.Undefined):
  """A name no variable sets: written out, added to, called ..., it is an error naming
  the variable, not empty text; a message's missing key is jinja's usual Undefined."""

  def __init__(self, hint=None, obj=jinja2.utils.missing, name=None,
               exc=jinja2.UndefinedError):
    if obj is jinja2.utils.missing and hint is None:  # a template variable
      exc = functools.partial(_MissingVariable, name)
    super().__init__(hint, obj, name, exc)

  def __str__(self):
    if isinstance(self._undefined_exception, functools.partial):
      self._fail_with_undefined_error()
    return super().__str__()


class _MissingVariable(jinja2.UndefinedError):

  def __init__(self, name, message=None):
    super().__init__(message)
    self.name = name


class _GenerationBlock(jinja2.ext.Extension):
  """`{% generation %}...{% endgeneration %}`: transformers marks the assistant's text
  with it (for assistant masks); the text is its body."""
  tags = {"generation"}

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

  def _body(self, caller):
    return caller()


class _Namespace(jinja2.utils.Namespace):
  """jinja's namespace() without attributes that start with "_" (as transformers')."""

  def __init__(*args, **kwargs):  # pylint: disable=no-method-argument  (jinja's signature)
    self, args = args[0], args[1:]
    attrs = dict(*args, **kwargs)
    for name in attrs:
      _Namespace._check(name)
    jinja2.utils.Namespace.__init__(self, attrs)

  def __setitem__(self, name, value):
    _Namespace._check(name)
    jinja2.utils.Namespace.__setitem__(self, name, value)

  @staticmethod
  def _check(name):
    if isinstance(name, str) and name.startswith("_"):
      raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} starts with _")


class _Dict:
  """dict() and dict.fromkeys() for templates, without the type itself."""

  def __call__(self, *args, **kwargs):
    return dict(*args, **kwargs)

  def fromkeys(self, *args, **kwargs):
    return dict.fromkeys(*args, **kwargs)


def _raise_exception(message):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


def _environment() -> jinja2.Environment:
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, undefined=_Unset,
      extensions=[_GenerationBlock, jinja2.ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals.update(raise_exception=_raise_exception, dict=_Dict(), namespace=_Namespace,
                     strftime_now=lambda fmt: datetime.datetime.now().strftime(fmt))
  return env


def _one_line(text: str, limit: int = 160) -> str:
  text = " ".join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _token_text(value) -> str | None:
  """A tokenizer_config.json special token: a string or an AddedToken's dict."""
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) and value else None


class Pair(NamedTuple):
  prompt: list[int]
  chosen: list[int]     # ends with its end-of-turn token
  rejected: list[int]
  turns_dropped: int    # exchanges dropped from the prompt's start to fit the limit


class ChatTemplate:
  """A model's chat template with its tokenizer (module docstring)."""

  def __init__(self, source: str, origin: str, variables: dict[str, str], vocabulary):
    self.source, self.origin, self.variables = source, origin, variables
    self.sha256 = hashlib.sha256(source.encode()).hexdigest()
    self.vocabulary = vocabulary
    try:
      self.template = _environment().from_string(source)
    except jinja2.TemplateSyntaxError as e:
      raise ValueError(f"{origin}: the chat template does not compile (line {e.lineno}: "
                       f"{_one_line(e.message)})") from None
    added = vocabulary.tokenizer.get_added_tokens_decoder()
    self.special_ids = frozenset(i for i, token in added.items() if token.special)

  def render(self, messages: Sequence[dict], add_generation_prompt: bool, field: str) -> str:
    """The template's text for messages; a template error is a ChatError naming field."""
    try:
      return self.template.render(messages=list(messages), tools=None, documents=None,
                                  add_generation_prompt=add_generation_prompt,
                                  **self.variables)
    except _MissingVariable as e:
      given = ", ".join(sorted(self.variables)) or "no special tokens"
      raise ChatError(f'field "{field}": the chat template needs the variable "{e.name}", '
                      f"which nothing sets ({CONFIG} gives {given})") from None
    except jinja2.TemplateError as e:  # raise_exception's, a sandbox's or jinja's own
      raise ChatError(f'field "{field}": the chat template refused it: '
                      f"{_one_line(e.message or type(e).__name__)}") from None
    except Exception as e:  # pylint: disable=broad-except  (a template is the model's code)
      raise ChatError(f'field "{field}": the chat template failed: {type(e).__name__}: '
                      f"{_one_line(e)}") from None

  def _encode(self, texts: list[str]) -> list[list[int]]:
    return self.vocabulary.encode_batch(texts)

  def _reply(self, prompt_ids: list[int], conversation_ids: list[int], side: str) -> list[int]:
    if conversation_ids[:len(prompt_ids)] != prompt_ids:
      raise ChatError(f'fields "prompt" and "{side}": the chat template\'s tokens for the '
                      "conversation do not begin with its tokens for the prompt (generation "
                      "prompt on), so the reply cannot be split off")
    reply = conversation_ids[len(prompt_ids):]
    ends = [i for i, t in enumerate(reply) if t in self.special_ids]
    if not ends:
      raise ChatError(f'field "{side}": the chat template writes no special token after the '
                      "reply, so it has no end-of-turn token")
    return reply[:ends[-1] + 1]

  def pair_ids(self, prompt: list[dict], chosen: list[dict], rejected: list[dict],
               max_prompt_tokens: int, on_long: str) -> Pair:
    """Token ids of a pair (module docstring); prompt ends with the user's message,
    chosen and rejected are the messages after it (ending with the assistant's)."""
    texts = [self.render(prompt, True, "prompt"), self.render(prompt + chosen, False, "chosen"),
             self.render(prompt + rejected, False, "rejected")]
    prompt_ids, chosen_ids, rejected_ids = self._encode(texts)
    dropped = 0
    if len(prompt_ids) > max_prompt_tokens:
      if on_long == "error":
        raise ChatError(f'field "prompt": {len(prompt_ids)} tokens, over the limit of '
                        f"{max_prompt_tokens} (raise the limit or pass --on_long=truncate: "
                        "whole turns are dropped from the oldest)")
      dropped, prompt = self._fewest_turns_dropped(prompt, len(prompt_ids), max_prompt_tokens)
      texts = [self.render(prompt, True, "prompt"),
               self.render(prompt + chosen, False, "chosen"),
               self.render(prompt + rejected, False, "rejected")]
      prompt_ids, chosen_ids, rejected_ids = self._encode(texts)
    return Pair(prompt_ids, self._reply(prompt_ids, chosen_ids, "chosen"),
                self._reply(prompt_ids, rejected_ids, "rejected"), dropped)

  def _fewest_turns_dropped(self, prompt: list[dict], length: int,
                            limit: int) -> tuple[int, list[dict]]:
    """(k, the prompt without its k oldest exchanges) for the least k that fits."""
    system = prompt[:1] if prompt[0]["role"] == "system" else []
    turns = prompt[len(system):]  # user, assistant, ..., user
    exchanges = (len(turns) - 1) // 2

    def fits(k):
      kept = system + turns[2 * k:]
      return len(self._encode([self.render(kept, True, "prompt")])[0]) <= limit

    if not exchanges or not fits(exchanges):
      left = "its last user turn" + (" and system message" if system else "")
      raise ChatError(f'field "prompt": {length} tokens, over the limit of {limit}, and '
                      f"{left} alone are over it too: turns are dropped whole, the last user "
                      "turn never cut (raise --max_prompt_tokens)")
    low, high = 1, exchanges  # fits(high); the rendered length falls as turns go
    while low < high:
      mid = (low + high) // 2
      if fits(mid):
        high = mid
      else:
        low = mid + 1
    return low, system + turns[2 * low:]


def load_template(vocabulary) -> ChatTemplate:
  """The chat template of a Hugging Face vocabulary's model directory (module docstring);
  a ValueError naming the directory when it has none."""
  from alignment.data import hf_vocab  # pylint: disable=g-import-not-at-top  (loads TF)
  if not isinstance(vocabulary, hf_vocab.HuggingFaceVocabulary):
    raise ValueError("conversations are rendered with the model's chat template: pass a Hugging "
                     "Face model directory (its tokenizer.json and tokenizer_config.json)")
  directory = os.path.dirname(vocabulary.path)
  config = vocabulary.config
  source, origin = None, os.path.join(directory, TEMPLATE_FILE)
  if os.path.exists(origin):
    with open(origin, encoding="utf-8") as f:
      source = f.read()
  else:
    origin = os.path.join(directory, CONFIG)
    source = config.get("chat_template")
    if isinstance(source, list):  # named templates: transformers uses "default"
      named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
      source = named.get("default")
  if not isinstance(source, str) or not source.strip():
    raise ValueError(f"{directory}: no chat template (no {TEMPLATE_FILE}, no \"chat_template\" "
                     f"in {CONFIG}); conversations are rendered with the model's own")
  variables = {}
  for name in SPECIAL_TOKEN_VARIABLES:
    text = _token_text(config.get(name))
    if text is not None:
      variables[name] = text
  return ChatTemplate(source, origin, variables, vocabulary)


# A conversation every template renders: what `end_of_turn_ids` splits.
_PROBE = ([{"role": "user", "content": "Hello"}], [{"role": "assistant", "content": "Hi"}])


def end_of_turn_ids(vocabulary) -> tuple[int, ...]:
  """The end-of-turn id of a Hugging Face vocabulary's chat template (Llama 3's
  <|eot_id|>, Gemma's <end_of_turn>): the last id of a one-turn reply split off as
  `pair_ids` splits an import's (module docstring), so it is the id a chat import of
  this vocabulary records in metadata.json's chat_template.end_of_turn. () for any
  other vocabulary, one without a template, or a template that refuses the probe."""
  from alignment.data import hf_vocab  # pylint: disable=g-import-not-at-top  (loads TF)
  if not isinstance(vocabulary, hf_vocab.HuggingFaceVocabulary):
    return ()
  return _end_of_turn_ids(vocabulary)


@functools.lru_cache(maxsize=None)
def _end_of_turn_ids(vocabulary) -> tuple[int, ...]:
  try:
    template = load_template(vocabulary)
    pair = template.pair_ids(_PROBE[0], _PROBE[1], _PROBE[1], max_prompt_tokens=1 << 20,
                             on_long="error")
  except ValueError:  # no template (ValueError), or one that refuses the probe (ChatError)
    return ()
  return (int(pair.chosen[-1]),)

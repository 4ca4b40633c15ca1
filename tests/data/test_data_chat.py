"""import_pairs --format=chat: TRL's conversational layouts, JSONL or Parquet, tokenized
with the model's own chat template to the ids of transformers' apply_chat_template.

The models are tests/hf_tokenizer.py's tiny tokenizer with a Llama-3-style template
and with Gemma's (no system role), built here, never downloaded. Tests marked hf
compare against `transformers.AutoTokenizer.from_pretrained(dir).apply_chat_template`.
"""
import json
import os

import pytest

from alignment.data import chat
from alignment.data import import_pairs as ip
from alignment.data import pair_records
from alignment.data import vocab as V
from hf_tokenizer import build_chat_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHAT = os.path.join(ROOT, "tests", "fixtures", "chat.jsonl")


def _m(role, content):
  return {"role": role, "content": content}


SYSTEM = _m("system", "You are a kind tutor.")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  return build_chat_model(str(tmp_path_factory.mktemp("llama3")), "llama3")


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
  return build_chat_model(str(tmp_path_factory.mktemp("gemma")), "gemma")


def _rows(out, split="train"):
  from alignment.data.tf_setup import tf  # pylint: disable=g-import-not-at-top
  rows = []
  for raw in tf.compat.v1.io.tf_record_iterator(os.path.join(out, ip.split_file(split))):
    f = tf.train.Example.FromString(raw).features.feature
    row = {k: list(f[k].int64_list.value) for k in ("prompt", "chosen", "rejected", "line")}
    row.update({k: f[k].bytes_list.value[0].decode() for k in ("prompt_text", "chosen_text")})
    rows.append(row)
  return rows


def _import(src, out, model, *flags):
  return ip.main([f"--input={src}", "--format=chat", f"--output={out}", f"--vocab={model}",
                  *flags])


def _hf(model):
  transformers = pytest.importorskip("transformers")
  tok = transformers.AutoTokenizer.from_pretrained(model)

  def ids(messages, **kwargs):
    out = tok.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)
  return tok, ids


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------

def test_each_layout_reads_as_prompt_and_responses():
  records = {r.id: r.messages for r in ip.read_records(CHAT, "chat")}
  # TRL's explicit prompt, texts: one user message, one assistant message each.
  assert records["1"] == ([_m("user", "What is the capital of France?")],
                          [_m("assistant", "Paris.")], [_m("assistant", "Lyon, I think.")])
  # Explicit prompt as messages, with a system message.
  assert records["2"][0] == [_m("system", "Answer in one word."), _m("user", "Name a colour.")]
  # TRL's implicit prompt: the messages two whole conversations share (multi-turn, system).
  prompt, chosen, rejected = records["3"]
  assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
  assert chosen == [_m("assistant", "6. Well done for asking!")]
  assert rejected == [_m("assistant", "Work it out yourself.")]
  # HuggingFaceH4's ultrafeedback_binarized: a prompt text and whole conversations.
  assert records["4"] == ([_m("user", "How do I boil an egg?")],
                          [_m("assistant", "Put it in boiling water for nine minutes.")],
                          [_m("assistant", "I don't know.")])
  # A response of several messages stays whole, as in TRL.
  assert [m["role"] for m in records["5"][1]] == ["assistant", "user", "assistant"]


# ---------------------------------------------------------------------------
# The ids are transformers'
# ---------------------------------------------------------------------------

@pytest.mark.hf
def test_llama3_template_ids_equal_apply_chat_template(tmp_path, llama):
  out = str(tmp_path / "out")
  assert _import(CHAT, out, llama) == 0
  tok, hf_ids = _hf(llama)
  eot = tok.convert_tokens_to_ids("<|eot_id|>")
  rows = _rows(out)
  records = list(ip.read_records(CHAT, "chat"))
  assert len(rows) == len(records) == 5
  for row, r in zip(rows, records):
    prompt, chosen, rejected = r.messages
    assert row["prompt"] == hf_ids(prompt, add_generation_prompt=True), r.id
    assert row["prompt"] + row["chosen"] == hf_ids(prompt + chosen), r.id
    assert row["prompt"] + row["rejected"] == hf_ids(prompt + rejected), r.id
    assert row["chosen"][-1] == eot and row["prompt"][0] == tok.bos_token_id
    assert json.loads(row["prompt_text"]) == prompt  # the texts: the messages as JSON
  meta = ip.read_metadata(out)
  assert meta["chat_template"]["end_of_turn"] == [eot] and meta["source_format"] == "chat"
  assert meta["chat_template"]["file"] == os.path.join(llama, "tokenizer_config.json")


@pytest.mark.hf
def test_systemless_template_ids_equal_apply_chat_template_up_to_the_end_of_turn(tmp_path,
                                                                                gemma):
  src = tmp_path / "in.jsonl"
  with open(CHAT) as f:  # Gemma has no system role: the records without one
    src.write_text("".join(l for l in f if '"system"' not in l))
  out = str(tmp_path / "out")
  assert _import(src, out, gemma) == 0
  tok, hf_ids = _hf(gemma)
  end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
  rows = _rows(out)
  assert len(rows) == 3
  for row, r in zip(rows, ip.read_records(str(src), "chat")):
    prompt, chosen, _ = r.messages
    assert row["prompt"] == hf_ids(prompt, add_generation_prompt=True)
    whole = hf_ids(prompt + chosen)
    n = len(row["prompt"]) + len(row["chosen"])
    # The pair is the template's conversation cut after its last end-of-turn token;
    # the newline Gemma writes after it belongs to the gap before a next turn.
    assert row["prompt"] + row["chosen"] == whole[:n] and row["chosen"][-1] == end_of_turn
    assert tok.decode(whole[n:]) == "\n"
  meta = ip.read_metadata(out)
  assert meta["chat_template"]["end_of_turn"] == [end_of_turn] != [tok.eos_token_id]
  bad = tmp_path / "system.jsonl"
  bad.write_text(json.dumps({"prompt": [SYSTEM, _m("user", "a")], "chosen": "b",
                             "rejected": "c"}) + "\n")
  assert _import(bad, tmp_path / "o2", gemma) == 2
  assert not (tmp_path / "o2").exists()


@pytest.mark.hf
def test_rendering_matches_transformers_on_the_template_language(tmp_path, llama):
  """namespace, loop controls, tojson, {% generation %}, strftime_now, raise_exception's
  absence, whitespace control: the text transformers renders."""
  template = (
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.role == 'system' %}"
      "{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}\n"
      "  {% if m.role == 'assistant' %}{% generation %}<|start_header_id|>{{ ns.n }}"
      "<|end_header_id|>{{ m.content | tojson }}<|eot_id|>{% endgeneration %}\n"
      "  {% else %}{{ bos_token }}{{ m | tojson }}{% endif %}\n{% endfor %}"
      "{% if add_generation_prompt %}<|start_header_id|>{{ strftime_now('%Y') }}"
      "<|end_header_id|>{% endif %}")
  model = build_chat_model(str(tmp_path / "m"), "llama3", chat_template=template)
  tok, hf_ids = _hf(model)
  ours = chat.load_template(V.get_vocabulary.__wrapped__(model))
  messages = [SYSTEM, _m("user", "Ünïcode <b>&</b> \"q\""), _m("assistant", "ok"),
              _m("user", "again")]
  for gen in (False, True):
    assert ours.render(messages, gen, "prompt") == tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=gen)
    assert ours._encode([ours.render(messages, gen, "prompt")])[0] == hf_ids(
        messages, add_generation_prompt=gen)


def _ultrafeedback_shards(directory):
  """Three shards, as on the Hub: TRL's implicit layout (multi-turn, system messages,
  score columns never read), H4's prompt + whole conversations, explicit messages."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  os.makedirs(directory)
  implicit = []
  for i in range(5):
    head = ([SYSTEM] if i % 2 == 0 else []) + [
        _m("user", f"What is {i} + {i}?"), _m("assistant", f"{2 * i}."),
        _m("user", "And times two?")]
    implicit.append({"chosen": head + [_m("assistant", f"{4 * i}, well done!")],
                     "rejected": head + [_m("assistant", "Work it out.")],
                     "score_chosen": 8.0, "score_rejected": 2.0,
                     "messages": head + [_m("assistant", "unread")]})
  h4 = [{"prompt": f"Name {i} colours.", "prompt_id": f"p{i}",
         "chosen": [_m("user", f"Name {i} colours."), _m("assistant", "Red and blue.")],
         "rejected": [_m("user", f"Name {i} colours."), _m("assistant", "No.")]}
        for i in range(3)]
  explicit = [{"prompt": [SYSTEM, _m("user", f"Spell {w}.")],
               "chosen": [_m("assistant", "-".join(w))], "rejected": [_m("assistant", w)]}
              for w in ("cat", "dog")]
  for name, rows in (("train-00000-of-00003", implicit), ("train-00001-of-00003", h4),
                     ("train-00002-of-00003", explicit)):
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(directory, name + ".parquet"),
                   row_group_size=2)
  return implicit + h4 + explicit


@pytest.mark.hf
def test_ultrafeedback_style_parquet_shards_import_to_apply_chat_template_ids(
    tmp_path, llama, monkeypatch):
  monkeypatch.setattr(pair_records, "PARQUET_BATCH", 2)  # batches and chunks that end mid-shard
  monkeypatch.setattr(ip, "CHUNK", 3)
  records = _ultrafeedback_shards(str(tmp_path / "data"))
  out = str(tmp_path / "out")
  assert _import(tmp_path / "data", out, llama) == 0
  tok, hf_ids = _hf(llama)
  rows = _rows(out)
  assert [r["line"] for r in rows] == [[i] for i in range(len(records))]  # global indices
  for row, r in zip(rows, ip.read_records(str(tmp_path / "data"), "chat")):
    prompt, chosen, rejected = r.messages
    assert row["prompt"] == hf_ids(prompt, add_generation_prompt=True)
    assert row["prompt"] + row["chosen"] == hf_ids(prompt + chosen)
    assert row["prompt"] + row["rejected"] == hf_ids(prompt + rejected)
  first = json.loads(rows[0]["prompt_text"])
  assert first == records[0]["chosen"][:-1]  # the shared prefix: system .. last user turn
  assert ip.read_metadata(out)["num_records"] == 10
  one = str(tmp_path / "one")  # a single Parquet file reads as its shard did
  assert _import(tmp_path / "data" / "train-00000-of-00003.parquet", one, llama) == 0
  assert _rows(one) == rows[:5]


def test_parquet_is_read_in_batches_of_the_read_columns_only(tmp_path, monkeypatch):
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  _ultrafeedback_shards(str(tmp_path / "data"))
  calls = []
  real = pq.ParquetFile.iter_batches

  def spy(self, *args, **kwargs):
    calls.append((kwargs.get("batch_size"), sorted(kwargs.get("columns"))))
    return real(self, *args, **kwargs)

  monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
  records = ip.read_records(str(tmp_path / "data"), "chat")
  next(records)
  assert len(calls) == 1  # one record read: the first shard opened, nothing more
  list(records)
  assert calls == [(pair_records.PARQUET_BATCH, ["chosen", "rejected"]),
                   (pair_records.PARQUET_BATCH, ["chosen", "prompt", "rejected"]),
                   (pair_records.PARQUET_BATCH, ["chosen", "prompt", "rejected"])]


def test_a_chat_import_is_a_task_like_any_other(tmp_path, llama):
  from alignment.data import pipeline  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "out")
  assert _import(CHAT, out, llama, "--validation_fraction=0.4") == 0
  name = ip.register_imported(out)
  assert ip.read_metadata(out)["splits"] == {"train": 4, "validation": 1}
  for split in ("train", "validation"):
    rec = pipeline.load_records(name, split, "pairs", 512, 128, process_index=0,
                                process_count=1)
    sft = pipeline.load_records(name + "_sft", split, "sft", 512, 128, process_index=0,
                                process_count=1)
    real = lambda key: sorted(list(row[mask == 1]) for row, mask in zip(rec[key],
                                                                      rec[key + "_mask"]))
    for key in ("prompt", "chosen", "rejected"):
      assert real(key) == sorted(r[key] for r in _rows(out, split)), (split, key)
    assert (sft["response"] == rec["chosen"]).all()


# ---------------------------------------------------------------------------
# Lengths
# ---------------------------------------------------------------------------

def _long_conversation():
  turns = []
  for i in range(4):
    turns += [_m("user", f"Question {i}: " + "why " * 10), _m("assistant", f"Answer {i}.")]
  return [SYSTEM] + turns + [_m("user", "Last question: " + "how " * 10)]


def test_truncate_drops_whole_turns_from_the_oldest(tmp_path, llama):
  prompt = _long_conversation()
  template = chat.load_template(V.get_vocabulary(llama))
  length = lambda msgs: len(template.pair_ids(msgs, [_m("assistant", "x")],
                                              [_m("assistant", "y")], 10_000, "error").prompt)
  without_two = [SYSTEM] + prompt[5:]  # the two oldest exchanges gone
  limit = length(without_two)
  assert length([SYSTEM] + prompt[3:]) > limit  # one exchange gone is not enough
  src = tmp_path / "in.jsonl"
  src.write_text(json.dumps({"prompt": prompt, "chosen": "Because.", "rejected": "No."})
                 + "\n")
  out = str(tmp_path / "out")
  assert _import(src, out, llama, f"--max_prompt_tokens={limit}", "--on_long=truncate") == 0
  row = _rows(out)[0]
  expected = template.pair_ids(without_two, [_m("assistant", "Because.")],
                               [_m("assistant", "No.")], limit, "error")
  assert (row["prompt"], row["chosen"]) == (expected.prompt, expected.chosen)
  assert ip.read_metadata(out)["truncated"]["prompt"] == 1
  assert json.loads(row["prompt_text"]) == prompt  # the text stored is the record's
  # The last user turn is never cut: below system + last turn, the record is refused.
  floor = length([SYSTEM, prompt[-1]])
  assert _import(src, tmp_path / "o2", llama, f"--max_prompt_tokens={floor - 1}",
                 "--on_long=truncate") == 2
  assert _import(src, tmp_path / "o3", llama, f"--max_prompt_tokens={floor}",
                 "--on_long=truncate") == 0
  assert json.loads(_rows(str(tmp_path / "o3"))[0]["prompt_text"]) == prompt


def test_long_responses_are_cut_without_their_end_of_turn(tmp_path, llama):
  src = tmp_path / "in.jsonl"
  src.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello there, friend " * 5,
                             "rejected": "Go."}) + "\n")
  out = str(tmp_path / "out")
  assert _import(src, out, llama, "--max_response_tokens=8", "--on_long=truncate") == 0
  row, eot = _rows(out)[0], V.get_vocabulary(llama).tokenizer.token_to_id("<|eot_id|>")
  assert len(row["chosen"]) == 8 and eot not in row["chosen"] and row["rejected"][-1] == eot
  assert ip.read_metadata(out)["truncated"] == {"prompt": 0, "chosen": 1, "rejected": 0}


# ---------------------------------------------------------------------------
# Bad input: one line each, nothing written
# ---------------------------------------------------------------------------

GOOD = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})
U, A = _m("user", "q"), _m("assistant", "a")
BAD = [
    ("roles out of order", {"prompt": [U, U], "chosen": [A], "rejected": [A]},
     'field "prompt[1].role": "user" out of order, expected "assistant"'),
    ("system not first", {"prompt": [U, A, SYSTEM, U], "chosen": [A], "rejected": [A]},
     'field "prompt[2].role": "system" out of order, expected "user"'),
    ("empty content", {"prompt": [_m("user", "  ")], "chosen": "c", "rejected": "r"},
     'field "prompt[0].content": empty text'),
    ("missing content", {"prompt": [{"role": "user"}], "chosen": "c", "rejected": "r"},
     'field "prompt[0].content" is missing'),
    ("content parts", {"prompt": [{"role": "user", "content": [{"type": "text", "text": "q"}]}],
                       "chosen": "c", "rejected": "r"},
     'field "prompt[0].content": expected text, got list'),
    ("unknown role", {"prompt": [_m("tool", "q")], "chosen": "c", "rejected": "r"},
     'field "prompt[0].role": expected "system", "user" or "assistant", got \'tool\''),
    ("message not an object", {"prompt": ["q"], "chosen": "c", "rejected": "r"},
     'field "prompt[0]": expected a message {"role", "content"}, got str'),
    ("prompt ends with the assistant", {"prompt": [U, A], "chosen": [A], "rejected": [A]},
     'field "prompt[1].role": the last message is the assistant\'s; a prompt ends with the '
     "user's turn"),
    ("response ends with the user", {"prompt": [U], "chosen": [A, U], "rejected": [A]},
     'field "chosen[1].role": the last message is the user\'s; a conversation ends with '
     "the assistant's reply"),
    ("whole conversation ends with the user", {"chosen": [U, A, U], "rejected": [U, A]},
     'field "chosen[2].role": the last message is the user\'s'),
    ("different prompts", {"chosen": [U, A, _m("user", "x"), A],
                           "rejected": [U, A, _m("user", "y"), A]},
     'fields "chosen" and "rejected": different prompts (they part at chosen[2], a "user" '
     "message"),
    ("different first messages", {"chosen": [U, A], "rejected": [_m("user", "z"), A]},
     'fields "chosen" and "rejected": different prompts (they part at chosen[0]'),
    ("the same conversation", {"chosen": [U, A], "rejected": [U, A]},
     'fields "chosen" and "rejected": the same conversation, nothing to compare'),
    ("conversation is not after the prompt", {"prompt": "p", "chosen": [U, A],
                                              "rejected": [A]},
     'fields "prompt" and "chosen": "chosen" opens with a "user" message, so it is a whole '
     "conversation, but it does not begin with the prompt"),
    ("texts without a prompt", {"chosen": "c", "rejected": [U, A]},
     'field "prompt" is missing (and "chosen" is a text'),
    ("no messages", {"prompt": [], "chosen": "c", "rejected": "r"},
     'field "prompt": no messages'),
    ("mistyped response", {"prompt": "p", "chosen": 3, "rejected": "r"},
     'field "chosen": expected text or a list of messages, got int'),
    ("prompt over the limit", {"prompt": "p " * 600, "chosen": "c", "rejected": "r"},
     'field "prompt": '),
]


@pytest.mark.parametrize("why,record,message", BAD, ids=[b[0] for b in BAD])
def test_bad_chat_records_end_with_one_line_naming_file_record_field(tmp_path, capsys, llama,
                                                                    why, record, message):
  del why
  src = tmp_path / "in.jsonl"
  src.write_text(GOOD + "\n" + json.dumps(record) + "\n")
  out = tmp_path / "out"
  assert _import(src, out, llama) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith(f"import_pairs: error: {src}:2: {message}"), err
  assert not out.exists() and os.listdir(tmp_path) == ["in.jsonl"]


def test_bad_parquet_rows_and_files_are_named_by_shard_and_row(tmp_path, capsys, llama):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  data = tmp_path / "data"
  records = _ultrafeedback_shards(str(data))
  bad = dict(records[6], rejected=[_m("user", "Name 1 colours."), _m("assistant", "")])
  rows = records[5:8]
  rows[1] = bad
  shard = data / "train-00001-of-00003.parquet"
  pq.write_table(pa.Table.from_pylist(rows), shard)
  cases = [
      (data, f'{shard}: row 1 (record 6): field "rejected[1].content": empty text'),
      (shard, f'{shard}: row 1: field "rejected[1].content": empty text'),
  ]
  garbage = tmp_path / "garbage.parquet"
  garbage.write_bytes(b"PAR1 not really")
  damaged = tmp_path / "damaged.parquet"  # invalid UTF-8 in a string page (the fuzzer's find)
  pq.write_table(pa.Table.from_pylist(records[5:8]), damaged, compression="NONE")
  damaged.write_bytes(damaged.read_bytes().replace(b"Red and blue.", b"Red \xffnd blue.", 1))
  cases.append((damaged, f"{damaged}: not a readable Parquet file (invalid UTF-8 in a text "
                "column, rows 0 to 2)"))
  empty = tmp_path / "empty"
  empty.mkdir()
  cases += [(garbage, f"{garbage}: not a readable Parquet file ("),
            (empty, f"{empty}: no *.parquet files in the directory"),
            (tmp_path / "absent.parquet", f"{tmp_path / 'absent.parquet'}: not a readable "
             "Parquet file (")]
  for i, (src, message) in enumerate(cases):
    assert _import(src, tmp_path / f"out{i}", llama) == 2, src
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"import_pairs: error: {message}"), err
    assert not (tmp_path / f"out{i}").exists()


def test_template_problems_are_one_line(tmp_path, capsys, llama):
  src = tmp_path / "in.jsonl"
  src.write_text(GOOD + "\n")
  cases = [
      ("byte", "--format=chat needs a chat template: --vocab=byte: conversations are "
       "rendered with the model's chat template"),
      (build_chat_model(str(tmp_path / "plain"), chat_template=None),
       f"--format=chat needs a chat template: --vocab={tmp_path / 'plain'}: "
       f"{tmp_path / 'plain'}: no chat template"),
      (build_chat_model(str(tmp_path / "nobos"), bos_token=None),
       f'{src}:1: field "prompt": the chat template needs the variable "bos_token", which '
       "nothing sets (tokenizer_config.json gives eos_token)"),
      (build_chat_model(str(tmp_path / "syntax"), chat_template="{% for m in messages %}"),
       f"--format=chat needs a chat template: --vocab={tmp_path / 'syntax'}: "
       f"{tmp_path / 'syntax' / 'tokenizer_config.json'}: the chat template does not compile"),
      (build_chat_model(str(tmp_path / "raises"),
                        chat_template="{{ raise_exception('No\\nthanks') }}"),
       f'{src}:1: field "prompt": the chat template refused it: No thanks'),
      (build_chat_model(str(tmp_path / "failing"),
                        chat_template="{{ messages[0]['content'] + 1 }}"),
       f'{src}:1: field "prompt": the chat template failed: TypeError: '),
      # "Assistant: " then "c": BPE writes " c" as one token, so the prompt's last token
      # (the space) is not where the conversation's tokens begin the reply.
      (build_chat_model(str(tmp_path / "merges"), chat_template=(
          "{% for m in messages %}{{ m.role }}: {{ m.content }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}assistant: {% endif %}")),
       f'{src}:1: fields "prompt" and "chosen": the chat template\'s tokens for the '
       "conversation do not begin with its tokens for the prompt"),
      (build_chat_model(str(tmp_path / "no_end"), chat_template=(
          "{% for m in messages %}{{ m.role }}:\n{{ m.content }}\n{% endfor %}"
          "{% if add_generation_prompt %}assistant:\n{% endif %}")),
       f'{src}:1: field "chosen": the chat template writes no special token after the reply'),
  ]
  for i, (vocab, message) in enumerate(cases):
    out = tmp_path / f"out{i}"
    assert _import(src, out, vocab) == 2, vocab
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"import_pairs: error: {message}"), err
    assert not out.exists()


def test_template_sources_as_transformers_reads_them(tmp_path):
  model = build_chat_model(str(tmp_path / "m"), chat_template=[
      {"name": "tool_use", "template": "tools"}, {"name": "default", "template": "default"}])
  template = chat.load_template(V.get_vocabulary.__wrapped__(model))
  assert template.source == "default" and template.origin.endswith("tokenizer_config.json")
  with open(os.path.join(model, "chat_template.jinja"), "w") as f:
    f.write("from the file")  # transformers 5 writes templates here; it wins
  template = chat.load_template(V.get_vocabulary.__wrapped__(model))
  assert (template.source, template.origin) == ("from the file",
                                               os.path.join(model, "chat_template.jinja"))
  assert template.variables == {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}

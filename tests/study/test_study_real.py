"""The study from rater-labelled pairs (configs/study.py:real), end to end at a tiny size.

A UltraFeedback-style Parquet file of conversational pairs (system messages,
several turns; built here from tests/fixtures/chat.jsonl) -> import_pairs
--format=chat with a Llama-3-style chat template (tests/hf_tokenizer.py: a tiny
tokenizer.json whose EOS is <|eot_id|>, the template's end-of-turn token), with
validation and eval splits -> golden PM on the raters' labels -> SFT on the chosen
replies -> D_golden of SFT samples relabelled by the golden PM -> proxy PM -> online
and offline IPO -> evaluation -> results.json and report.md, every model a decoder
(llama-nano): the path of a Llama Instruct checkpoint. The golden judge used is
checked from what the study wrote and by asking the golden PM again, not from stage
names; every sample the study drew (D_golden's, the online loop's) ends at the
end-of-turn token or at the length limit; the aligned policy's export keeps the
template and the EOS ids through `alignment.models.export`, and `alignment.generate`
samples from it. The plan tests import TL;DR comparisons (tests/data/test_data_import.py
checks that import itself).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alignment import config as config_lib
from alignment.data import import_pairs
from alignment.data import tasks
from alignment.data import vocab as V
from hf_tokenizer import LLAMA3_TEMPLATE, build_chat_model  # noqa: E402
import xla_env  # tests/xla_env.py

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CHAT = os.path.join(FIXTURES, "chat.jsonl")


def _tldr_file(path, n: int = 96) -> str:
  """n comparisons in the TL;DR format, variations of the fixture's records (one post
  each, so the prompt-hash split spreads them)."""
  with open(os.path.join(FIXTURES, "tldr.jsonl")) as f:
    base = [json.loads(line) for line in f if line.strip()]
  with open(path, "w") as f:
    for i in range(n):
      r = json.loads(json.dumps(base[i % len(base)]))
      key = "post" if "post" in r["info"] else "article"
      r["info"][key] = f"{r['info'][key]} ({i})"
      f.write(json.dumps(r) + "\n")
  return str(path)


def _m(role, content):
  return {"role": role, "content": content}


def _chat_parquet(path, n: int = 96) -> str:
  """n conversational pairs as HuggingFaceH4's ultrafeedback_binarized holds them (a
  prompt, whole conversations, score columns never read), variations of the chat
  fixture's records: each prompt a system message and at least two user turns (an
  exchange put before a single-turn prompt), the system message numbered so that the
  prompt-hash split spreads them."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  base = [r.messages for r in import_pairs.read_records(CHAT, "chat")]
  rows = []
  for i in range(n):
    prompt, chosen, rejected = base[i % len(base)]
    turns = [m for m in prompt if m["role"] != "system"]
    if len(turns) == 1:
      turns = [_m("user", "Hi"), _m("assistant", "Hello.")] + turns
    prompt = [_m("system", f"Be kind ({i}).")] + turns
    rows.append({"prompt_id": f"p{i}", "prompt": prompt, "chosen": prompt + chosen,
                 "rejected": prompt + rejected, "score_chosen": 8.0, "score_rejected": 3.0})
  pq.write_table(pa.Table.from_pylist(rows), str(path))
  return str(path)


TINY = ["base_variant=tiny", "model=llama-nano", "sizes=['llama-nano']",
        "seeds=[0]", "experiments=['fig1']", "batch_size=8", "prompt_len=96",
        "response_len=24", "num_pairs=16", "held_out_pairs=8", "tie_slack=0.5",
        "sample_batch=8", "sft.steps=16", "sft.learning_rate=1e-2", "golden_pm.steps=4",
        "golden_pm.eval_batches=1", "pm.steps=4", "online.steps=2", "offline.steps=2",
        "checkpoint_every=2", "eval.points=1", "eval.first=2", "eval.kl_prompts=8",
        "eval.win_prompts=8", "eval.proxy_prompts=8", "eval.classifier_pairs=8",
        "eval.batch_size=8", "bootstrap=50"]


@pytest.mark.e2e
@pytest.mark.slow
def test_real_study_from_chat_pairs(tmp_path, capsys):
  model = build_chat_model(str(tmp_path / "llama3"), "llama3")
  src = _chat_parquet(tmp_path / "ultrafeedback.parquet")
  data = str(tmp_path / "chat_import")
  meta = import_pairs.import_file(src, "chat", data, max_prompt_tokens=96,
                                  max_response_tokens=24, on_long="truncate",
                                  validation_fraction=0.3, eval_fraction=0.15, vocab=model)
  vocab = V.get_vocabulary(model)
  eot = vocab.tokenizer.token_to_id("<|eot_id|>")
  assert meta["splits"]["validation"] >= 16 and meta["splits"]["eval"] >= 8
  assert meta["chat_template"]["end_of_turn"] == [eot] == [vocab.eos_id]
  workdir = tmp_path / "study"
  # The README's command, in a fresh process: one device, the session's XLA flags
  # (tests/xla_env.py).
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=xla_env.flags(1))
  env.pop(tasks.TASK_DIRS_ENV, None)
  env.pop("ALIGNMENT_XLA_CACHE", None)
  proc = subprocess.run(
      [sys.executable, "-m", "alignment.study", "--config=configs/study.py:real",
       f"--workdir={workdir}", f"--config.import_dir={data}"] +
      [f"--config.{o}" for o in TINY], capture_output=True, text=True, cwd=ROOT, env=env,
      timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  results = json.loads((workdir / "results.json").read_text())
  assert "## Set-up gate" in (workdir / "report.md").read_text()
  golden_export = str(workdir / "golden_pm" / "export")
  assert results["study"] == "real"
  assert results["golden_judge"]["kind"] == "golden_pm"
  assert results["golden_judge"]["export"] == golden_export
  assert {r["name"] for r in results["runs"]} == {"online_ipo_s0", "offline_ipo_s0"}

  def stage(name):
    return json.loads((workdir / name / "STAGE.json").read_text())

  # The golden PM trained on the import's rater pairs (its train split) from SFT.
  gpm = stage("golden_pm")["config"]
  assert gpm["data"]["task"] == meta["name"] and not gpm["data"]["replay_dir"]
  assert gpm["init"]["backbone"] == str(workdir / "sft" / "export")
  assert stage("sft")["config"]["data"]["task"] == meta["name"] + "_sft"
  # Every evaluation scored golden win rates with the golden PM.
  for name in ("sft_eval", "online_ipo_s0", "offline_ipo_s0"):
    assert stage(name)["config"]["eval"]["golden_checkpoint"] == golden_export, name
  # D_golden was labelled by the golden PM: its summary says so, and asking the golden
  # PM again about the written pairs gives the written labels.
  pairs = stage("pairs")["summary"]
  for split in ("train", "held_out"):
    assert pairs[split]["labelled_by"] == "golden_model"
    assert pairs[split]["golden_export"] == golden_export
  _check_labels_are_the_golden_pms(workdir, golden_export)
  # Every reply the study sampled (the SFT policy's in D_golden, the online policy's)
  # ended at the template's end-of-turn token, or at the length limit without one.
  for samples in ("pairs/train", "pairs/held_out", "online_ipo_s0/stream"):
    _check_replies_end_at(workdir / samples, eot, limit=24)
  # So did the evaluation's (eot is the only EOS: a reply under the limit ended at it).
  for name, step in (("sft_eval", 0), ("online_ipo_s0", 2), ("offline_ipo_s0", 2)):
    length = np.load(workdir / name / "eval" / f"step_{step:06d}.npz")["length"]
    assert (length < 24).mean() >= 0.5, (name, length)
  # The aligned policy's export carries the tokenizer (its directory: the chat template)
  # and its EOS out, and so does its Hugging Face directory.
  policy = workdir / "online_ipo_s0" / "export"
  tokens = json.loads((policy / "vocabulary.json").read_text())
  assert tokens == V.token_record(vocab) and tokens["eos_token_id"] == eot
  _check_export_and_generate(str(policy), tmp_path, eot, capsys)


def _check_labels_are_the_golden_pms(workdir, export):
  from alignment import judges, sharding  # pylint: disable=g-import-not-at-top
  from alignment.data import batches as B  # pylint: disable=g-import-not-at-top
  from alignment.data import stream  # pylint: disable=g-import-not-at-top
  held = stream.fixed_pairs(str(workdir / "pairs" / "held_out"), 8)
  c = json.loads((workdir / "pm" / "STAGE.json").read_text())["config"]
  cfg = config_lib.load(os.path.join(ROOT, "configs", "pm.py:tiny"))
  config_lib.apply_overrides(cfg, [f"data.prompt_len={c['data']['prompt_len']}",
                                   f"data.response_len={c['data']['response_len']}"],
                             where="test")
  mesh, rules = sharding.mesh_and_rules(cfg.mesh)
  golden = judges.ModelGoldenJudge(judges.load_model_judge(export, cfg.data, mesh, rules),
                                   export)
  prompts = B.PromptBatch(np.asarray(held.prompt), np.asarray(held.prompt_mask))
  # The stream's chosen response is the labelled winner (labels="argmax").
  prob = golden.compare(prompts, *[np.asarray(x) for x in (
      held.chosen, held.chosen_mask, held.rejected, held.rejected_mask)]).prob_first
  # This process compiles the golden PM differently (8 devices, optimised): only near
  # ties could flip.
  clear = np.abs(prob - 0.5) > 1e-4
  assert clear.sum() >= 4 and (prob[clear] > 0.5).all(), prob


def _check_replies_end_at(directory, eot: int, limit: int):
  """Each reply of a stream of pairs holds `eot` only as its last token, and ends with
  it unless it fills `limit`; at least half end with it (the SFT policy learnt to end its
  turn: a sampler that ran past `eot` would fail the first check, not pass vacuously)."""
  from alignment.data import stream  # pylint: disable=g-import-not-at-top
  rec = stream.read_stream(str(directory), process_index=0, process_count=1)
  ended = 0
  for ids, mask in ((rec["chosen"], rec["chosen_mask"]), (rec["rejected"], rec["rejected_mask"])):
    for row, n in zip(np.asarray(ids), np.asarray(mask).sum(-1)):
      assert n > 0 and eot not in row[:n - 1].tolist(), (directory, row, n)
      assert row[n - 1] == eot or n == limit, (directory, row, n)
      ended += int(row[n - 1] == eot)
  assert ended >= len(rec["chosen"]), (directory, ended, len(rec["chosen"]))


def _check_export_and_generate(policy: str, tmp_path, eot: int, capsys):
  """`alignment.models.export` keeps the chat template and the EOS ids; `alignment.generate`
  samples from that directory with the template (--messages) and stops at the EOS."""
  from alignment import generate  # pylint: disable=g-import-not-at-top
  from alignment.models import export  # pylint: disable=g-import-not-at-top
  hf = str(tmp_path / "hf_policy")
  assert export.main([f"--params={policy}", f"--output={hf}"]) == 0
  with open(os.path.join(hf, "tokenizer_config.json")) as f:
    assert json.load(f)["chat_template"] == LLAMA3_TEMPLATE
  with open(os.path.join(hf, "generation_config.json")) as f:
    assert json.load(f)["eos_token_id"] in (eot, [eot])
  messages = tmp_path / "messages.json"
  messages.write_text(json.dumps([_m("system", "You are a kind tutor."),
                                  _m("user", "Name a colour.")]))
  capsys.readouterr()
  assert generate.main([f"--params={hf}", f"--messages={messages}", "--n=4",
                        "--max_new_tokens=24"]) == 0
  heads = [l for l in capsys.readouterr().out.splitlines() if l.startswith("prompt 0, sample")]
  assert len(heads) == 4 and any("ended at EOS" in h for h in heads), heads


def _import(tmp_path):
  return import_pairs.import_file(_tldr_file(tmp_path / "t.jsonl", 32), "tldr",
                                  str(tmp_path / "imp"), max_prompt_tokens=64,
                                  max_response_tokens=16, on_long="truncate",
                                  validation_fraction=0.3, name=f"real_{tmp_path.name}")


def _plan(tmp_path, *overrides):
  from alignment import study  # pylint: disable=g-import-not-at-top
  c = config_lib.load(os.path.join(ROOT, "configs", "study.py:real"))
  config_lib.apply_overrides(c, list(overrides), where="test")
  return {st.name: st for st in study.plan(c, str(tmp_path / "w"))}


def test_real_plan_golden_pm_judges_and_a_given_sft(tmp_path):
  meta = _import(tmp_path)
  stages = _plan(tmp_path, f"import_dir={tmp_path / 'imp'}", "sft_export=/given/sft",
                 "experiments=['fig1']", "seeds=[0]", "rl.arms=['rloo_golden']")
  golden = str(tmp_path / "w" / "golden_pm" / "export")
  assert stages["sft"].kind == "given" and stages["sft"].params["export"] == "/given/sft"
  assert stages["golden_pm"].config.init.backbone == "/given/sft"
  assert stages["golden_pm"].config.data.task == meta["name"]
  assert "golden_pm" in stages["pairs"].deps
  for st in stages.values():
    if st.kind in ("online", "offline", "eval"):
      assert st.config.eval.golden_checkpoint == golden, st.name
      assert st.config.eval.sft == "/given/sft"
      assert st.config.data.task.startswith(meta["name"])
  # The attribution's golden-judged online arm is judged by the golden PM.
  stages = _plan(tmp_path, f"import_dir={tmp_path / 'imp'}", "sft_export=/given/sft",
                 "experiments=['fig1', 'attribution']", "seeds=[0]")
  judged = stages["online_ipo_golden_s0"]
  assert judged.config.judge.kind == "golden" and judged.config.judge.golden_checkpoint == golden
  assert "golden_pm" in judged.deps and "pm" not in judged.config.judge.checkpoint
  assert stages["offline_ipo_proxy_labels_s0"].config.data.replay_dir == str(
      tmp_path / "w" / "proxy_labels" / "train")
  assert stages["proxy_labels"].deps == ("pairs", "pm")


def test_real_plan_refuses_what_rater_pairs_cannot_feed(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="import_dir"):
    _plan(tmp_path)
  _import(tmp_path)
  with pytest.raises(config_lib.ConfigError, match="writer"):
    _plan(tmp_path, f"import_dir={tmp_path / 'imp'}", "experiments=['fig1','writer']")


def test_real_plan_takes_a_chat_import_whose_end_of_turn_is_not_the_eos(tmp_path,
                                                                          monkeypatch):
  """The samplers stop at the tokenizer's EOS and at its template's end-of-turn token
  (`vocab.sampling_ids`): a template whose end-of-turn token is another (here
  <|eot_id|> with eos_token <|end_of_text|>, as Gemma's <end_of_turn> and <eos>)
  plans as the README's Llama 3 Instruct set-up (eos_token <|eot_id|>) does; an
  import whose replies end at an id no sampler stops at (a template the probe cannot
  read) is refused in one line before anything trains."""
  from alignment.data import chat  # pylint: disable=g-import-not-at-top
  src = _chat_parquet(tmp_path / "chat.parquet", 32)
  for eos, name in (("<|eot_id|>", "same"), ("<|end_of_text|>", "other")):
    model = build_chat_model(str(tmp_path / name), "llama3", eos_token=eos)
    import_pairs.import_file(src, "chat", str(tmp_path / f"imp_{name}"), vocab=model,
                             max_prompt_tokens=96, max_response_tokens=24,
                             on_long="truncate", validation_fraction=0.3,
                             name=f"chat_{name}_{tmp_path.name}")
  for name in ("same", "other"):
    stages = _plan(tmp_path, f"import_dir={tmp_path / f'imp_{name}'}", "experiments=['fig1']")
    assert "golden_pm" in stages and "online_ipo_s0" in stages
  monkeypatch.setattr(chat, "end_of_turn_ids", lambda vocabulary: ())
  with pytest.raises(config_lib.ConfigError) as e:
    _plan(tmp_path, f"import_dir={tmp_path / 'imp_other'}", "experiments=['fig1']")
  message = str(e.value)
  assert "\n" not in message and os.path.join(str(tmp_path / "imp_other"), "metadata.json") in message
  assert "ends replies with '<|eot_id|>'" in message and "stop at '<|end_of_text|>'" in message


def test_embedded_plan_keeps_the_program(tmp_path):
  from alignment import study  # pylint: disable=g-import-not-at-top
  c = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  stages = study.plan(c, str(tmp_path / "w"))
  assert "golden_pm" not in {st.name for st in stages}
  assert all(st.config.eval.golden_checkpoint == "" for st in stages
             if st.kind in ("online", "offline", "eval"))

"""The report's "What the policies write": which recorded samples it shows, how it
writes them into Markdown, and a study whose runs recorded none (no training here:
the evaluations' side files are written by hand)."""
import json
import os
import re

import numpy as np
import pytest

from alignment import config as config_lib
from alignment import evaluation, layout
from alignment.study import report
from alignment.study import stages as stages_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(name, arm, seed, foundation=0, sft_eval="sft_eval"):
  return {"name": name, "arm": arm, "mode": "online" if arm.startswith("online") else "offline",
          "hparams": {"seed": seed}, "foundation": foundation, "sft_eval": sft_eval,
          "points": []}


def _record(workdir, stage, step, texts, scores):
  """An evaluation's side file: (prompt, response) texts and golden scores."""
  path = evaluation.samples_path(layout.stage(str(workdir), stage), step)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  evaluation.save_samples(path, [{"prompt": p, "response": r, "golden_score": g,
                                  "ended_at_eos": True} for (p, r), g in zip(texts, scores)])


def test_each_policy_is_its_seed0_run_at_its_step_escaped_and_cut(tmp_path):
  runs = [_run("online_ipo_s1", "online_ipo", 1), _run("online_ipo_s0", "online_ipo", 0),
          _run("f1/online_ipo_s0", "online_ipo", 1000, foundation=1, sft_eval="f1/sft_eval"),
          _run("offline_ipo_s0", "offline_ipo", 0), _run("offline_ipo_s1", "offline_ipo", 1)]
  arms = {"online_ipo": {"peak_step": 4}, "offline_ipo": {"peak_step": 8}}
  prompts = ["post | one\nline *two* <b>", "post two"]
  long = "word " * 100
  _record(tmp_path, "sft_eval", 0, [(prompts[0], "sft a"), (prompts[1], "")], [1.5, -2.25])
  _record(tmp_path, "online_ipo_s0", 4, [(prompts[0], long), (prompts[1], "on_b")], [3.0, 0.5])
  _record(tmp_path, "offline_ipo_s0", 8, [(prompts[0], "off a"), (prompts[1], "off b")],
          [0.25, 1.0])
  # What must not be shown: another seed, another step, another foundation.
  for stage, step in (("online_ipo_s1", 4), ("online_ipo_s0", 8), ("offline_ipo_s1", 8),
                      ("f1/sft_eval", 0), ("f1/online_ipo_s0", 4)):
    _record(tmp_path, stage, step, [(prompts[0], "WRONG"), (prompts[1], "WRONG")], [9.0, 9.0])
  shown = report.shown_points(runs, arms)
  assert [(p, r["name"], s) for p, r, s in shown] == [
      ("SFT", "online_ipo_s0", 0), ("online peak", "online_ipo_s0", 4),
      ("offline peak", "offline_ipo_s0", 8)]
  samples = report.policy_samples(str(tmp_path), shown)
  got = [(s["prompt_index"], s["policy"], s["step"], s["response"], s["golden_score"])
         for s in samples]
  assert got == [(0, "SFT", 0, "sft a", 1.5), (1, "SFT", 0, "", -2.25),
                 (0, "online peak", 4, long, 3.0), (1, "online peak", 4, "on_b", 0.5),
                 (0, "offline peak", 8, "off a", 0.25), (1, "offline peak", 8, "off b", 1.0)]
  assert {s["prompt"] for s in samples if s["prompt_index"] == 0} == {prompts[0]}
  md = report.samples_lines(samples)
  text = "\n".join(md)
  assert md[0] == "## What the policies write" and "WRONG" not in text
  assert r"**Prompt 1:** post \| one<br>line \*two\* \<b\>" in md
  assert "**Prompt 2:** post two" in md
  table = [line for line in md if line.startswith("| ")]
  assert all(line.count("|") - line.count(r"\|") == 6 for line in table), table
  assert "| SFT | online_ipo_s0 | 0 | 1.5 | sft a |" in md
  assert "| SFT | online_ipo_s0 | 0 | -2.25 | *(empty)* |" in md
  assert "| online peak | online_ipo_s0 | 4 | 0.5 | on\\_b |" in md
  cut = report.md_text(long)
  assert cut.endswith("word...") and len(cut) == report.TEXT_LIMIT - 1 + len("...")
  assert f"| 3.0 | {cut} |" in text
  # A peak at step 0 is the SFT policy's point, read where step 0 is recorded.
  at_start = report.shown_points(runs, {"online_ipo": {"peak_step": 0}})
  assert [(p, s) for p, _, s in at_start] == [("SFT", 0), ("online peak", 0)]
  assert [s["response"] for s in report.policy_samples(str(tmp_path), at_start)] == [
      "sft a", "", "sft a", ""]


def test_markdown_text_is_one_escaped_line():
  assert report.md_text("a|b\r\nc\rd\ne\tf") == r"a\|b<br>c<br>d<br>e f"
  assert report.md_text(r"\|") == r"\\\|"  # the backslash is not left to escape the pipe
  assert report.md_text("`x` _y_ [z](u) <i>&amp; #h ~s~ !") == (
      r"\`x\` \_y\_ \[z\](u) \<i\>\&amp; \#h \~s\~ \!")
  assert report.md_text("x" * 10, limit=10) == "x" * 10
  assert report.md_text("x" * 11, limit=10) == "x" * 10 + "..."
  assert report.md_text("ab|" * 5, limit=4) == r"ab\|a..."  # cut before escaping


def test_a_damaged_samples_file_is_named(tmp_path):
  path = evaluation.samples_path(str(tmp_path), 2)
  os.makedirs(os.path.dirname(path))
  for text in ("{not json", json.dumps({"prompt": "p"}), json.dumps([{"prompt": "p"}])):
    with open(path, "w") as f:
      f.write(text)
    with pytest.raises(ValueError, match=f"^{re.escape(path)}: ") as e:
      evaluation.load_samples(path)
    assert "\n" not in str(e.value)
  assert evaluation.load_samples(str(tmp_path / "none.json")) is None


def test_a_study_recorded_without_samples_still_writes_its_report(tmp_path):
  """Runs evaluated by code that kept no samples: the section says so, results.json's
  samples is empty; once step 0's samples are there, they are shown."""
  study = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  stage = stages_lib.Stage("online_ipo_s0", "online", group="fig1", arm="online_ipo",
                           run={"algorithm": "ipo", "mode": "online", "data": "online",
                                "hparams": {"seed": 0}})
  report.write(study, str(tmp_path), [stage])
  md = (tmp_path / "report.md").read_text()
  assert "## What the policies write\n\nNo samples recorded" in md
  assert md.index("## What the policies write") < md.index("## Stages")
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["samples"] == [] and list(results).index("samples") < list(results).index("runs")
  _record(tmp_path, "sft_eval", 0, [("the post", "a digest")], [0.75])
  report.write(study, str(tmp_path), [stage])
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["samples"] == [{"prompt_index": 0, "prompt": "the post", "policy": "SFT",
                                 "run": "online_ipo_s0", "step": 0, "response": "a digest",
                                 "golden_score": 0.75}]
  assert "| SFT | online_ipo_s0 | 0 | 0.75 | a digest |" in (tmp_path / "report.md").read_text()
  # A study without Fig. 1's runs has no such section.
  report.write(study, str(tmp_path / "other"), [])
  assert "What the policies write" not in (tmp_path / "other" / "report.md").read_text()


def test_the_shown_responses_stop_before_their_eos():
  tokens = np.array([[5, 6, 1, 0], [5, 7, 8, 9], [4, 128009, 0, 0], [0, 0, 0, 0]])
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
  assert evaluation._response_ids(tokens, mask, 1) == (
      [[5, 6], [5, 7, 8, 9], [4, 128009], []], [True, False, False, False])
  assert evaluation._response_ids(tokens, mask, (128001, 128009)) == (
      [[5, 6, 1], [5, 7, 8, 9], [4], []], [False, False, True, False])

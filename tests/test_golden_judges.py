"""The golden judge's two kinds behind one interface: the program and a golden PM."""
import numpy as np
import pytest

from alignment import algorithms, judges
from alignment import config as config_lib
from alignment.data import batches as B
from alignment.data import vocab as vocab_lib


class _FixedPM:
  """A stand-in ModelJudge: P(y1 beats y2) from the first token ids."""
  mesh = None

  def __init__(self):
    self.calls = []

  def compare(self, prompts, y1, m1, y2, m2):
    self.calls.append(y1.shape[0])
    prob = 1 / (1 + np.exp(-(y1[:, 0] - y2[:, 0]).astype(np.float32)))
    return algorithms.Comparison(prob_first=prob, first_wins=prob > 0.5)


def _batch(n):
  rng = np.random.default_rng(0)
  prompts = B.PromptBatch(np.ones((n, 3), np.int32), np.ones((n, 3), bool))
  y = [rng.integers(2, 9, (n, 4)).astype(np.int32) for _ in range(2)]
  m = np.ones((n, 4), bool)
  return prompts, y[0], m, y[1], m


def test_model_golden_pair_scores_are_its_probability_and_verdict():
  pm = _FixedPM()
  golden = judges.ModelGoldenJudge(pm, "EXPORT", batch_size=4)
  prompts, y1, m1, y2, m2 = _batch(10)  # not a multiple of the batch: padded chunks
  g1, g2 = golden.pair_scores(prompts, y1, m1, y2, m2)
  prob = 1 / (1 + np.exp(-(y1[:, 0] - y2[:, 0]).astype(np.float64)))
  np.testing.assert_allclose(1 / (1 + np.exp(-(g1 - g2) / golden.tau)), prob, rtol=1e-5)
  np.testing.assert_array_equal(g1 > g2, prob > 0.5)
  np.testing.assert_array_equal(g1 == g2, y1[:, 0] == y2[:, 0])  # ties stay ties
  assert pm.calls == [4, 4, 4]  # one compiled shape
  np.testing.assert_array_equal(golden.compare(prompts, y1, m1, y2, m2).first_wins, prob > 0.5)


def test_program_pair_scores_are_its_scores():
  vocab = vocab_lib.get_vocabulary("sentencepiece")
  golden = judges.GoldenJudge(vocab)
  prompts, y1, m1, y2, m2 = _batch(6)
  g1, g2 = golden.pair_scores(prompts, y1, m1, y2, m2)
  np.testing.assert_allclose(g1, golden.scores(prompts, y1))
  np.testing.assert_allclose(g2, golden.scores(prompts, y2))
  assert judges.load_golden_judge("", vocab, None, None, None).kind == "golden"


def test_judge_golden_checkpoint_needs_the_golden_kind():
  c = config_lib.load("configs/online.py:tiny")
  config_lib.apply_overrides(c, ["judge.golden_checkpoint=GPM/export"], where="test")
  with pytest.raises(config_lib.ConfigError, match="golden_checkpoint"):
    config_lib.check_judge(c.judge)
  config_lib.apply_overrides(c, ["judge.kind=golden"], where="test")
  config_lib.check_judge(c.judge)


def test_the_judge_section_builds_the_golden_pm_when_given(monkeypatch):
  loaded = []
  monkeypatch.setattr(judges, "load_model_judge",
                      lambda path, *a, **k: loaded.append(path) or "golden-pm")
  c = config_lib.load("configs/online.py:tiny")
  config_lib.apply_overrides(c, ["judge.kind=golden", "judge.golden_checkpoint=GPM/export"],
                             where="test")
  assert judges.build(c.judge, c.data, None, None, None) == "golden-pm"
  assert loaded == ["GPM/export"]
  c.judge.golden_checkpoint = ""
  vocab = vocab_lib.get_vocabulary("sentencepiece")
  assert isinstance(judges.build(c.judge, c.data, vocab, None, None), judges.GoldenJudge)


def test_the_judge_section_names_a_known_kind_and_a_model_judge_its_export():
  c = config_lib.load("configs/online.py:tiny")
  with pytest.raises(config_lib.ConfigError, match="judge.checkpoint"):
    judges.build(c.judge, c.data, None, None, None)  # proxy, no export
  c.judge.kind = "oracle"
  with pytest.raises(config_lib.ConfigError, match="choose proxy, reward or golden"):
    judges.build(c.judge, c.data, None, None, None)

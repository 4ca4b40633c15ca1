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


# ---------------------------------------------------------------------------
# The noisy golden judge: the program with a share of its verdicts flipped
# ---------------------------------------------------------------------------


def _pairs(n, seed=0, length=6):
  """n synthetic pairs with distinct responses and ragged masks (zero padding)."""
  rng = np.random.default_rng(seed)
  prompts = B.PromptBatch(rng.integers(2, 60, (n, 5)).astype(np.int32), np.ones((n, 5), bool))
  ys, ms = [], []
  for _ in range(2):
    lengths = rng.integers(2, length + 1, n)
    m = np.arange(length)[None, :] < lengths[:, None]
    ys.append(np.where(m, rng.integers(2, 60, (n, length)), 0).astype(np.int32))
    ms.append(m)
  return prompts, ys[0], ms[0], ys[1], ms[1]


def _flips(prompts, y1, m1, y2, m2, rate, seed=0):
  return judges.pair_flips(prompts.prompt, prompts.prompt_mask, y1, m1, y2, m2, rate, seed)


def test_flip_rate_zero_is_the_golden_judge():
  vocab = vocab_lib.get_vocabulary("sentencepiece")
  c = config_lib.load("configs/online.py:tiny")
  config_lib.apply_overrides(c, ["judge.kind=golden"], where="test")
  assert type(judges.build(c.judge, c.data, vocab, None, None)) is judges.GoldenJudge
  batch = _pairs(64)
  golden = judges.GoldenJudge(vocab).compare(*batch)
  noisy = judges.NoisyGoldenJudge(vocab, 0.0).compare(*batch)
  np.testing.assert_array_equal(noisy.prob_first, golden.prob_first)
  np.testing.assert_array_equal(noisy.first_wins, golden.first_wins)


def test_the_flip_share_is_the_rate_within_binomial_bounds():
  n = 4000
  batch = _pairs(n, seed=1)
  for rate in (0.1, 0.3):
    share = _flips(*batch, rate).mean()
    assert abs(share - rate) < 4 * np.sqrt(rate * (1 - rate) / n), (rate, share)
  # Another seed flips other pairs (independently: about rate^2 of them both times).
  a, b = _flips(*batch, 0.3, seed=0), _flips(*batch, 0.3, seed=1)
  assert abs((a & b).mean() - 0.09) < 4 * np.sqrt(0.09 * 0.91 / n)
  assert not _flips(*batch, 0.0).any()


def test_the_same_pair_flips_the_same_way_whatever_its_padding_or_batch():
  prompts, y1, m1, y2, m2 = _pairs(300, seed=2)
  once = _flips(prompts, y1, m1, y2, m2, 0.2)
  np.testing.assert_array_equal(once, _flips(prompts, y1, m1, y2, m2, 0.2))  # no counter
  # Rows in another order and another batch, tokens wider and padded further: the content.
  order = np.random.default_rng(0).permutation(300)[:100]
  pad = lambda a, v: np.concatenate([a, np.full((a.shape[0], 3), v, a.dtype)], 1)
  again = judges.pair_flips(prompts.prompt[order].astype(np.int64), prompts.prompt_mask[order],
                            pad(y1[order], 7), pad(m1[order], False), pad(y2[order], 9),
                            pad(m2[order], False), 0.2, 0)
  np.testing.assert_array_equal(again, once[order])


def test_a_swapped_pair_gets_the_same_flip_and_the_opposite_verdict():
  vocab = vocab_lib.get_vocabulary("sentencepiece")
  prompts, y1, m1, y2, m2 = _pairs(400, seed=3)
  flips = _flips(prompts, y1, m1, y2, m2, 0.3)
  np.testing.assert_array_equal(flips, _flips(prompts, y2, m2, y1, m1, 0.3))
  noisy = judges.NoisyGoldenJudge(vocab, 0.3)
  golden = judges.GoldenJudge(vocab).compare(prompts, y1, m1, y2, m2)
  ab = noisy.compare(prompts, y1, m1, y2, m2)
  ba = noisy.compare(prompts, y2, m2, y1, m1)
  # A flipped verdict is the other response, its probability 1 - P; the rest are golden's.
  np.testing.assert_allclose(ab.prob_first, np.where(flips, 1 - golden.prob_first,
                                                     golden.prob_first), rtol=1e-6)
  untied = golden.prob_first != 0.5
  assert untied.mean() > 0.5 and flips[untied].any()
  np.testing.assert_array_equal(ab.first_wins[untied], golden.first_wins[untied] ^ flips[untied])
  # Antisymmetric: swapping y1 and y2 swaps the verdict (ties go to y2 both ways, as golden's).
  np.testing.assert_array_equal(ab.first_wins[untied], ~ba.first_wins[untied])
  np.testing.assert_allclose(ab.prob_first + ba.prob_first, 1.0, rtol=1e-6)
  assert not hasattr(noisy, "rewards")  # RL asks it pair by pair: noisy too


def test_flip_rate_is_checked_and_only_for_the_golden_program(monkeypatch):
  vocab = vocab_lib.get_vocabulary("sentencepiece")
  c = config_lib.load("configs/online.py:tiny")
  config_lib.apply_overrides(c, ["judge.kind=golden", "judge.flip_rate=0.25",
                                 "judge.flip_seed=7"], where="test")
  judge = judges.build(c.judge, c.data, vocab, None, None)
  assert isinstance(judge, judges.NoisyGoldenJudge) and judge.kind == "golden"
  assert (judge.flip_rate, judge.flip_seed) == (0.25, 7)
  for rate in (0.5, -0.1, 0.9):
    c.judge.flip_rate = rate
    with pytest.raises(config_lib.ConfigError, match="judge.flip_rate"):
      judges.build(c.judge, c.data, vocab, None, None)
  c.judge.flip_rate = 0.1
  for kind in ("proxy", "reward"):
    c.judge.kind = kind
    c.judge.checkpoint = "PM/export"
    with pytest.raises(config_lib.ConfigError, match="judge.flip_rate.*only the golden"):
      judges.build(c.judge, c.data, vocab, None, None)
  c.judge.kind, c.judge.golden_checkpoint = "golden", "GPM/export"
  monkeypatch.setattr(judges, "load_model_judge", lambda *a, **k: "golden-pm")
  with pytest.raises(config_lib.ConfigError, match="judge.flip_rate.*golden PM"):
    judges.build(c.judge, c.data, vocab, None, None)

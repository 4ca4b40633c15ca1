"""The golden judge on token ids agrees with the text judge, in batches, for both vocabularies."""
import numpy as np
import pytest

from alignment.data import batches
from alignment.data import environment as E
from alignment.data import golden
from alignment.data import vocab as V


def _encode(vocab, exs, key, lp=64, lr=32, eos=True):
  v = V.get_vocabulary(vocab)
  prompts = V.encode_batch(v, [ex["prompt"] for ex in exs])
  responses = [r + [batches.EOS_ID] * eos for r in V.encode_batch(v, [ex[key] for ex in exs])]
  return batches.left_pad(prompts, lp)[0], batches.right_pad(responses, lr)[0]


@pytest.mark.parametrize("vocab", ["sentencepiece", "byte"])
def test_judge_on_ids_equals_judge_on_text(vocab):
  env = E.Environment(E.env_config(vocab))
  exs = list(env.examples("train", 64))
  prompt, a = _encode(vocab, exs, "response_a")
  _, b = _encode(vocab, exs, "response_b")
  judge = golden.GoldenJudge(vocab)
  np.testing.assert_allclose(judge.score(prompt, a), [ex["golden_a"] for ex in exs], atol=1e-5)
  np.testing.assert_allclose(judge.preference(prompt, a, b), [ex["golden_prob"] for ex in exs],
                             atol=1e-5)
  np.testing.assert_array_equal(judge.verdict(prompt, a, b), [ex["label"] == 0 for ex in exs])


def test_responses_without_eos_are_charged_as_truncated():
  exs = list(E.Environment().examples("train", 8))
  prompt, ended = _encode("sentencepiece", exs, "response_a")
  _, cut = _encode("sentencepiece", exs, "response_a", eos=False)
  judge = golden.GoldenJudge()
  np.testing.assert_allclose(judge.score(prompt, ended) - judge.score(prompt, cut), 1.0,
                             atol=1e-6)


def test_ids_after_eos_are_ignored_and_unknown_ids_cost_verbosity():
  exs = list(E.Environment().examples("train", 4))
  prompt, resp = _encode("sentencepiece", exs, "response_a")
  judge = golden.GoldenJudge()
  junk = resp.copy()
  junk[:, -3:] = 77  # after the EOS
  np.testing.assert_allclose(judge.score(prompt, junk), judge.score(prompt, resp))
  wide = np.full_like(resp, batches.PAD_ID)
  wide[:, 0], wide[:, 1] = 400, batches.EOS_ID  # an id past the vocabulary, then EOS
  assert (judge.score(prompt, wide) == pytest.approx(-0.1))


def test_scores_a_full_online_step_of_pairs():
  """2 x 2048 responses, as the win-rate evaluation asks (timed by benchmarks, not here)."""
  exs = list(E.Environment().examples("eval", 2048))
  prompt, a = _encode("sentencepiece", exs, "response_a")
  _, b = _encode("sentencepiece", exs, "response_b")
  p = golden.GoldenJudge().preference(prompt, a, b)
  assert p.shape == (2048,) and p.dtype == np.float32
  np.testing.assert_allclose(p, [ex["golden_prob"] for ex in exs], atol=1e-5)

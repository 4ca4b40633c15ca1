"""Vocabularies: the shipped SentencePiece model, the byte vocabulary, id helpers."""
import numpy as np
import pytest

from alignment.data import batches
from alignment.data import language as lang
from alignment.data import vocab as V


def test_shipped_model_is_what_the_build_produces():
  with open(V.SP_MODEL_PATH, "rb") as f:
    shipped = f.read()
  assert V.build_sentencepiece() == shipped, "run `python -m alignment.data.vocab --build`"


def test_every_word_is_one_piece_and_specials_follow_t5():
  v = V.get_vocabulary("sentencepiece")
  assert (v.pad_id, v.eos_id, v.unk_id) == (batches.PAD_ID, batches.EOS_ID, 2)
  assert v.vocab_size == V.SP_VOCAB_SIZE == 3 + len(lang.all_words())
  words = lang.all_words()
  ids = V.encode_batch(v, words)
  assert all(len(i) == 1 for i in ids), [w for w, i in zip(words, ids) if len(i) != 1]
  assert len({i[0] for i in ids}) == len(words)
  text = " ".join(words)
  assert V.decode_batch(v, [V.encode_batch(v, [text])[0]]) == [text]


def test_unknown_words_and_ids_decode_as_unk():
  v = V.get_vocabulary("sentencepiece")
  assert V.encode_batch(v, ["ana xylophone"])[0][1] == 2
  assert V.decode_batch(v, [[V.encode_batch(v, ["ana"])[0][0], 500, -3]])[0].split() == [
      "ana", "⁇", "⁇"]


def test_byte_vocabulary():
  v = V.get_vocabulary("byte")
  assert (v.pad_id, v.eos_id, v.vocab_size) == (0, 1, 259)
  assert V.encode_batch(v, ["ab é"]) == [[100, 101, 35, 198, 172]]
  assert V.decode_batch(v, [[100, 101, 35, 198, 172]]) == ["ab é"]
  assert V.vocabulary_name(v) == "byte"
  assert V.vocabulary_name(V.get_vocabulary()) == "sentencepiece"


def test_unknown_vocabulary_is_an_error():
  with pytest.raises(ValueError, match="unknown vocabulary"):
    V.get_vocabulary("nope")


def test_cut_at_eos():
  rows = np.array([[5, 6, 1, 7, 0], [5, 6, 7, 8, 9], [5, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
  cut, ended = V.cut_at_eos(rows)
  assert cut == [[5, 6], [5, 6, 7, 8, 9], [5], []]
  assert ended.tolist() == [True, False, False, True]


def test_strip_left_padding():
  rows = np.array([[0, 0, 4, 5], [3, 4, 5, 6]])
  assert V.strip_left_padding(rows) == [[4, 5], [3, 4, 5, 6]]
  assert V.strip_left_padding(rows, np.array([[0, 0, 0, 1], [1, 1, 1, 1]])) == [[5], [3, 4, 5, 6]]

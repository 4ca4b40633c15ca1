"""The word-level language of the embedded environment.

A world of people (NAMES) and facts about them: each fact gives a person one
VALUE of an ATTRIBUTE (city, job, pet, ...). Every value word belongs to
exactly one attribute, so a value alone says which attribute it answers, and a
fact is the pair (person, value). That keeps the golden judge a small parser:
it never has to understand templates, only to spot names and values.

Posts state facts in sentences built from TEMPLATES ("ana moved to oslo ."),
with connective and opener words that carry no facts. Digests state facts
compactly ("ana : oslo , chef") or in prose ("ana lives in oslo and is a
chef"), the prose words counting as verbosity.

Every word here is a single SentencePiece piece in the shipped vocabulary
(tests check it), so a text's length in tokens is its number of words. Words
are short so that posts stay readable at the byte level too.
"""
from __future__ import annotations

NAMES = (
    "ana", "ben", "cara", "dan", "eva", "finn", "gus", "hana", "ivo", "jade", "kai", "lena",
    "milo", "nora", "otto", "pia", "rosa", "sam", "tom", "uma", "vera", "will", "yara", "zoe",
)

# attribute -> its values (disjoint across attributes). Six each: with more, a
# tiny model needs markedly more steps to learn to copy values from the post.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "city": ("rome", "oslo", "lima", "cairo", "delhi", "tokyo"),
    "job": ("baker", "nurse", "pilot", "judge", "chef", "poet"),
    "pet": ("cat", "dog", "parrot", "rabbit", "horse", "goat"),
    "colour": ("red", "blue", "green", "yellow", "pink", "grey"),
    "food": ("pasta", "rice", "soup", "bread", "mango", "sushi"),
    "sport": ("tennis", "golf", "rugby", "hockey", "boxing", "karate"),
    "music": ("piano", "violin", "drums", "flute", "guitar", "harp"),
    "vehicle": ("bike", "van", "truck", "boat", "tram", "taxi"),
}

VALUE_TO_ATTRIBUTE: dict[str, str] = {v: a for a, vs in ATTRIBUTES.items() for v in vs}

# How posts state a fact; {e} the person, {v} the value. Several per attribute,
# so that a model must read the value, not the template, to know the fact.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "city": ("{e} lives in {v}", "{e} moved to {v}", "{e} grew up in {v}"),
    "job": ("{e} works as a {v}", "{e} is a {v}", "{e} trained as a {v}"),
    "pet": ("{e} has a {v}", "{e} adopted a {v}", "{e} keeps a {v}"),
    "colour": ("{e} likes {v}", "{e} wears {v}", "{e} painted the door {v}"),
    "food": ("{e} eats {v}", "{e} cooks {v}", "{e} loves {v}"),
    "sport": ("{e} plays {v}", "{e} watches {v}", "{e} took up {v}"),
    "music": ("{e} plays the {v}", "{e} learned the {v}", "{e} owns a {v}"),
    "vehicle": ("{e} drives a {v}", "{e} rides a {v}", "{e} bought a {v}"),
}

# How a prose digest states a fact about an already named person.
PROSE: dict[str, str] = {
    "city": "lives in {v}", "job": "is a {v}", "pet": "has a {v}", "colour": "likes {v}",
    "food": "eats {v}", "sport": "plays {v}", "music": "plays the {v}", "vehicle": "drives a {v}",
}

# Sentence openers in posts (no facts).
CONNECTIVES = ("also", "and", "then", "so", "btw", "honestly", "today", "lately")
OPENERS = ("hi all .", "quick update .", "long story .", "news from home .")
# Words a sloppy digest adds: they state nothing.
FILLER = ("also", "really", "basically", "just", "mostly", "probably", "very", "quite", "and")

# Punctuation with a structural role in digests: ":" after the person, "," between
# facts, ";" between people, "." ends a post sentence.
STRUCTURE = (":", ",", ";", ".")


def all_words() -> list[str]:
  """Every word of the language, each once, in a fixed order."""
  words: list[str] = []
  seen = set()

  def add(w):
    if w not in seen:
      seen.add(w)
      words.append(w)

  for w in NAMES:
    add(w)
  for vs in ATTRIBUTES.values():
    for v in vs:
      add(v)
  for ts in list(TEMPLATES.values()) + [tuple(PROSE.values()), CONNECTIVES, OPENERS, FILLER,
                                         STRUCTURE]:
    for t in ts:
      for w in t.split():
        if w not in ("{e}", "{v}"):
          add(w)
  return words

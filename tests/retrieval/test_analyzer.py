"""The analyzer's documented rules, and the Porter stemmer word for word against Snowball's."""

from __future__ import annotations

import re
import unicodedata

import pytest
import snowballstemmer
from astrai.retrieval import ENGLISH_STOPWORDS, Analyzer, porter_stem


def test_unicode_word_split_and_lowercase():
    text = "Straße, naïve café: ΑΘΗΝΑ日本語 x_y 3.14 don't"
    assert Analyzer().tokens(text) == ["straße", "naïve", "café", "αθηνα日本語", "x_y", "3", "14", "don", "t"]
    assert Analyzer(lowercase=False).tokens("Hello World") == ["Hello", "World"]


def test_combining_marks_split_words_precomposed_letters_do_not():
    decomposed = unicodedata.normalize("NFD", "naïve")
    assert Analyzer().tokens(decomposed) == ["nai", "ve"]  # U+0308 is not a word character
    assert Analyzer().tokens(unicodedata.normalize("NFC", decomposed)) == ["naïve"]


def test_stopwords_are_dropped_after_lowercasing():
    analyzer = Analyzer(stopwords="english")
    assert analyzer.tokens("The cat AND the hat") == ["cat", "hat"]
    assert Analyzer(stopwords=["cat"]).tokens("The cat") == ["the"]
    assert Analyzer(stopwords="english") == Analyzer(stopwords=ENGLISH_STOPWORDS)
    with pytest.raises(ValueError, match="stopwords"):
        Analyzer(stopwords="german")


def test_stemming_applies_to_lowercase_ascii_words_only():
    analyzer = Analyzer(stem=True)
    assert analyzer.tokens("Running connections generalizations naïvely") == [
        "run", "connect", "gener", "naïvely"]
    assert Analyzer(lowercase=False, stem=True).tokens("Running running") == ["Running", "run"]


def test_settings_round_trip():
    analyzer = Analyzer(lowercase=False, stem=True, stopwords=["b", "a"])
    assert Analyzer.from_dict(analyzer.to_dict()) == analyzer
    assert analyzer.stopwords == ("a", "b")


def test_porter_matches_snowball_porter_on_real_words(docs):
    reference = snowballstemmer.stemmer("porter")
    words = sorted({w for doc in docs for w in re.findall(r"[a-z]+", doc.lower()) if len(w) > 2})
    assert len(words) > 3000
    wrong = [(w, porter_stem(w), reference.stemWord(w)) for w in words if porter_stem(w) != reference.stemWord(w)]
    assert not wrong, wrong[:20]


@pytest.mark.parametrize("word,stem", [
    ("caresses", "caress"), ("ponies", "poni"), ("agreed", "agre"), ("plastered", "plaster"), ("motoring", "motor"),
    ("hopping", "hop"), ("filing", "file"), ("happy", "happi"), ("relational", "relat"), ("triplicate", "triplic"),
    ("revival", "reviv"), ("adjustment", "adjust"), ("controll", "control"), ("generalizations", "gener"),
])
def test_porter_paper_examples(word, stem):
    assert porter_stem(word) == stem


def test_short_and_non_ascii_words_are_unchanged():
    assert [porter_stem(w) for w in ("is", "as", "s", "café", "x86", "Cats")] == ["is", "as", "s", "café", "x86", "Cats"]

"""mmproxy._native.prompt_features: the cheap prompt features the learned router reads beside an embedding."""

import math

import pytest

from mmproxy._native import PROMPT_FEATURE_NAMES, prompt_features

CODE = """Why does this raise a KeyError?
```python
def count_words(text):
    counts = {}
    for word in text.split():
        counts[word] += 1
    return counts
```"""

WORD_PROBLEM = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)

MULTIPLE_CHOICE = """Which planet is known as the Red Planet?
A. Venus
B. Mars
C. Jupiter
D. Saturn"""

PROSE = "Tell me about the history of the city and its old harbour."

JAPANESE = "東京の人口は何人ですか。"

# Counts driven far past their caps, and a lone surrogate (read as U+FFFD).
EXTREMES = ["?" * 100, "{}" * 5000, "A. x\n" * 2000, "1+1=2 " * 1000, "\ud800"]


def features(text: str) -> dict[str, float]:
    return dict(zip(PROMPT_FEATURE_NAMES, prompt_features(text), strict=True))


def test_one_value_per_name() -> None:
    assert len(PROMPT_FEATURE_NAMES) == len(set(PROMPT_FEATURE_NAMES)) == 14
    for text in ["", PROSE, CODE]:
        assert len(prompt_features(text)) == len(PROMPT_FEATURE_NAMES)


def test_empty_text_is_all_zeros() -> None:
    assert prompt_features("") == [0.0] * len(PROMPT_FEATURE_NAMES)


@pytest.mark.parametrize("text", [PROSE, CODE, WORD_PROBLEM, MULTIPLE_CHOICE, JAPANESE, *EXTREMES])
def test_values_are_finite_and_in_unit_range(text: str) -> None:
    for name, value in features(text).items():
        assert math.isfinite(value) and 0.0 <= value <= 1.0, (name, value)


def test_length_grows_the_length_features() -> None:
    short, long = features(PROSE), features("\n".join([PROSE] * 20))
    for name in ("chars", "words", "lines"):
        assert long[name] > short[name], name


def test_code_lights_code_not_math() -> None:
    f = features(CODE)
    assert f["code"] > 0.3
    assert f["math"] == 0.0


def test_word_problem_lights_numbers_and_math() -> None:
    f, prose = features(WORD_PROBLEM), features(PROSE)
    assert f["numbers"] > prose["numbers"] == 0.0
    assert f["digit_share"] > 0.0
    assert f["math"] > 0.0
    assert f["code"] == 0.0


def test_arithmetic_is_math() -> None:
    assert features("What is 3 + 4?")["math"] > 0.0
    assert features("If x=5, what is 2x?")["math"] > 0.0


def test_multiple_choice_lights_choices() -> None:
    assert features(MULTIPLE_CHOICE)["choices"] == pytest.approx(4 / 5)
    assert features("Options: (a) tea (b) coffee")["choices"] == 0.0  # labels must open a line
    assert features(PROSE)["choices"] == 0.0


def test_non_latin_text_raises_non_ascii_share() -> None:
    assert features(PROSE)["non_ascii"] == 0.0
    assert features(JAPANESE)["non_ascii"] == 1.0
    assert 0.0 < features("Explain 量子力学 simply")["non_ascii"] < 1.0


def test_prose_markers_start_a_word() -> None:
    assert features("Why is the sky blue? Explain.")["reasoning"] > 0.0
    assert features("history, improve")["reasoning"] == features("history, improve")["creative"] == 0.0


def test_markers_ignore_case() -> None:
    assert features("WRITE A POEM")["creative"] == features("write a poem")["creative"] > 0.0

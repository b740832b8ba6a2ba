"""Caption attribute accuracy on hand-computed cases."""
from __future__ import annotations

import pytest

from epalm.dataset.metrics.attribute_accuracy import attribute_accuracy, parse_attributes
from epalm.demo.synthetic.image_world import ImageWorld

VOCAB = ImageWorld().attribute_vocabulary()
TWO_RED_CIRCLES_LEFT = {"count": "2", "colour": "red", "shape": "circle", "side": "left"}
ONE_BLUE_SQUARE_RIGHT = {"count": "1", "colour": "blue", "shape": "square", "side": "right"}


def score(caption: str, truth: dict) -> dict:
    return attribute_accuracy({"x": caption}, {"x": truth}, VOCAB)


def test_a_caption_stating_everything_right_scores_one():
    result = score("there are two red circles on the left side", TWO_RED_CIRCLES_LEFT)
    assert result == {"overall": 1.0, "per_attribute": {"colour": 1.0, "count": 1.0, "shape": 1.0, "side": 1.0},
                      "num_captions": 1, "num_attributes": 4}


def test_case_and_punctuation_do_not_matter_but_word_boundaries_do():
    assert score("Two RED circles, on the LEFT.", TWO_RED_CIRCLES_LEFT)["overall"] == 1.0
    # "reddish" is not "red", "lefty" is not "left": 2 of 4.
    result = score("two reddish circles lefty", TWO_RED_CIRCLES_LEFT)
    assert result["overall"] == 0.5
    assert result["per_attribute"] == {"colour": 0.0, "count": 1.0, "shape": 1.0, "side": 0.0}


def test_the_article_a_counts_as_one_only_before_a_colour_or_shape():
    assert parse_attributes("a blue square on the right", VOCAB)["count"] == {"1"}
    assert parse_attributes("there is a square", VOCAB)["count"] == {"1"}
    assert parse_attributes("a single blue square", VOCAB)["count"] == {"1"}
    # Articles before other words are not counts: "three ... on a table" states 3 only.
    assert parse_attributes("three red circles on a table in a picture", VOCAB)["count"] == {"3"}
    assert parse_attributes("blue squares in a picture", VOCAB)["count"] == set()
    assert score("a blue square on the right", ONE_BLUE_SQUARE_RIGHT)["overall"] == 1.0
    # Said of a scene with two circles, "a red circle" states count 1: wrong count, the rest right.
    result = score("a red circle on the left", TWO_RED_CIRCLES_LEFT)
    assert result["per_attribute"] == {"colour": 1.0, "count": 0.0, "shape": 1.0, "side": 1.0}


def test_stating_a_second_value_of_an_attribute_makes_it_wrong():
    # count {2, 3}, colour {red, blue}, shape {circle, square}: wrong; side {left}: right.
    result = score("two red circles and three blue squares on the left", TWO_RED_CIRCLES_LEFT)
    assert result["overall"] == 0.25
    assert result["per_attribute"] == {"colour": 0.0, "count": 0.0, "shape": 0.0, "side": 1.0}


def test_an_attribute_not_stated_is_wrong():
    result = score("red circles", TWO_RED_CIRCLES_LEFT)
    assert result["per_attribute"] == {"colour": 1.0, "count": 0.0, "shape": 1.0, "side": 0.0}
    assert score("", TWO_RED_CIRCLES_LEFT)["overall"] == 0.0


def test_scores_aggregate_over_captions_and_attributes():
    predictions = {1: "two red circles on the left",       # 4 / 4
                   2: "a blue circle on the left",         # count, colour right; shape, side wrong: 2 / 4
                   3: "three green triangles on the top"}  # 0 / 4
    truths = {1: TWO_RED_CIRCLES_LEFT, 2: ONE_BLUE_SQUARE_RIGHT,
              3: {"count": "2", "colour": "red", "shape": "square", "side": "right"},
              4: TWO_RED_CIRCLES_LEFT}  # no prediction: not scored
    result = attribute_accuracy(predictions, truths, VOCAB)
    assert result["overall"] == pytest.approx(6 / 12)
    assert result["per_attribute"] == pytest.approx({"colour": 2 / 3, "count": 2 / 3, "shape": 1 / 3,
                                                     "side": 1 / 3})
    assert result["num_captions"] == 3 and result["num_attributes"] == 12


def test_the_longest_phrase_wins_when_phrases_overlap():
    vocab = {"colour": {"red": ["red"], "dark red": ["dark red"]}, "thing": {"ball": ["ball", "balls"]}}
    assert parse_attributes("a dark red ball", vocab) == {"colour": {"dark red"}, "thing": {"ball"}}
    assert parse_attributes("a dark red ball and a red ball", vocab)["colour"] == {"dark red", "red"}
    truth = {"colour": "dark red", "thing": "ball"}
    assert attribute_accuracy({"a": "a dark red ball"}, {"a": truth}, vocab)["overall"] == 1.0
    assert attribute_accuracy({"a": "a red ball"}, {"a": truth}, vocab)["overall"] == 0.5


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="no predictions"):
        attribute_accuracy({}, {}, VOCAB)
    with pytest.raises(ValueError, match=r"prediction '7' \(str\) has no ground-truth"):
        attribute_accuracy({"7": "a red circle"}, {7: TWO_RED_CIRCLES_LEFT}, VOCAB)
    with pytest.raises(ValueError, match="colour='purple'"):
        attribute_accuracy({7: "a red circle"}, {7: {**TWO_RED_CIRCLES_LEFT, "colour": "purple"}}, VOCAB)
    with pytest.raises(ValueError, match="no word"):
        parse_attributes("red", {"colour": {"red": ["?"]}})

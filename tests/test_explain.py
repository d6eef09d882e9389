"""explain.py: the log-loss walk-through, its arithmetic and its input checks."""

from __future__ import annotations

import math

import pytest

from logreg_torch.explain import (
    DEFAULT_CUSTOMERS,
    LOG_CLAMP,
    explain,
    explain_numbers,
    parse_numbers,
)

LOSS_KEYS = ("by_hand", "binary_cross_entropy", "torch_bce_loss")


def _hand_log_loss(probs, labels):
    pairs = zip(probs, labels, strict=True)
    terms = [y * math.log(p) + (1 - y) * math.log(1 - p) for p, y in pairs]
    return -sum(terms) / len(terms)


def test_default_customers_hold_the_article_examples():
    assert [c.id for c in DEFAULT_CUSTOMERS] == list(range(1, len(DEFAULT_CUSTOMERS) + 1))
    assert 6 <= len(DEFAULT_CUSTOMERS) <= 10
    assert {c.target for c in DEFAULT_CUSTOMERS} == {0, 1}
    assert any(c.target == 1 and c.prob == 0.94 for c in DEFAULT_CUSTOMERS)
    assert any(c.target == 0 and c.prob == 0.1 for c in DEFAULT_CUSTOMERS)


def test_default_walk_through_shows_the_steps_and_the_numbers():
    text = explain()
    for part in ("ID", "bought", "true class", "p(jacket)", "jacket", "cardigan",
                 "Step 1", "Step 2", "Step 3", "corrected",
                 "logreg_torch.binary_cross_entropy", "torch.nn.BCELoss"):
        assert part in text
    assert "p = 0.94" in text  # the jacket buyer
    assert "1 - p = 1 - 0.1 = 0.9 " in text  # the cardigan buyer's corrected probability
    assert f"{math.log(0.94):.6f}" in text and f"{math.log(0.9):.6f}" in text
    assert "0.01" in text and f"{-math.log(0.01):.4f}" in text  # the confident mistake
    n = explain_numbers()
    assert text.count(f"{n['by_hand']:.12f}") == 3  # the three values, printed alike
    assert "clamps every log" not in text  # no p = 0 here
    assert explain(None, None) == text


def test_default_numbers_agree_with_a_hand_computation():
    n = explain_numbers()
    probs = [c.prob for c in DEFAULT_CUSTOMERS]
    labels = [c.target for c in DEFAULT_CUSTOMERS]
    assert n["probs"] == probs and n["labels"] == labels
    assert n["ids"] == [c.id for c in DEFAULT_CUSTOMERS]
    six, five = n["ids"].index(6), n["ids"].index(5)
    assert n["corrected"][six] == pytest.approx(0.94, abs=1e-15)
    assert n["corrected"][five] == pytest.approx(0.9, abs=1e-15)
    assert n["logs"][five] == pytest.approx(math.log(0.9), abs=1e-15)
    expected = _hand_log_loss(probs, labels)
    for key in LOSS_KEYS:
        assert n[key] == pytest.approx(expected, abs=1e-12)
    assert not n["clamped"]


@pytest.mark.parametrize(
    ("probs", "labels"),
    [
        ([0.94], [1]),
        ([0.1], [0]),
        ([0.3, 0.999, 0.001, 0.5], [1, 0, 0, 1]),
        ([1e-9, 1 - 1e-9], ["1", "0"]),
        ((0.25, 0.75), (1.0, 0.0)),
    ],
)
def test_custom_numbers_three_ways(probs, labels):
    n = explain_numbers(probs, labels)
    expected = _hand_log_loss(probs, [int(float(y)) for y in labels])
    for key in LOSS_KEYS:
        assert n[key] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert max(n[k] for k in LOSS_KEYS) - min(n[k] for k in LOSS_KEYS) <= 1e-12


def test_custom_walk_through():
    text = explain([0.94, 0.1, 0.5], ["1", 0, 1.0])
    assert text.count("jacket  ") >= 2 and "cardigan" in text
    assert "1 - p = 1 - 0.1 = 0.9" in text
    loss = _hand_log_loss([0.94, 0.1, 0.5], [1, 0, 1])
    assert f"{loss:.12f}" in text
    assert "/ 3 =" in text


def test_a_single_confident_mistake():
    n = explain_numbers([0.01], [1])
    assert n["by_hand"] == pytest.approx(-math.log(0.01), abs=1e-12)


@pytest.mark.parametrize(("probs", "labels"), [([0.0, 0.5], [1, 1]), ([1.0, 0.5], [0, 0])])
def test_a_certain_mistake_is_clamped_like_torch(probs, labels):
    n = explain_numbers(probs, labels)
    assert n["corrected"][0] == 0.0
    assert n["logs"][0] == -math.inf
    assert n["clamped_logs"][0] == LOG_CLAMP
    assert n["clamped"]
    expected = (100 - math.log(0.5)) / 2
    for key in LOSS_KEYS:
        assert n[key] == pytest.approx(expected, abs=1e-12)
    text = explain(probs, labels)
    assert "-inf" in text and "-100" in text and "clamps every log" in text


def test_a_certain_right_answer_costs_nothing():
    n = explain_numbers([1.0, 0.0], [1, 0])
    assert n["corrected"] == [1.0, 1.0]
    for key in LOSS_KEYS:
        assert n[key] == 0.0


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        ([0.5], None, "both probs and labels"),
        (None, [1], "both probs and labels"),
        ([0.5, 0.2], [1], "2 probs but 1 labels"),
        ([], [], "at least one"),
        ([1.5], [1], "between 0 and 1"),
        ([-0.1], [0], "between 0 and 1"),
        ([math.nan], [0], "between 0 and 1"),
        (["abc"], [0], "not a number"),
        ([None], [0], "not a number"),
        ([0.5], [2], "must be 0 (cardigan) or 1 (jacket)"),
        ([0.5], [0.5], "must be 0 (cardigan) or 1 (jacket)"),
        ([0.5], ["yes"], "must be 0 (cardigan) or 1 (jacket)"),
        ([0.5], [None], "must be 0 (cardigan) or 1 (jacket)"),
        ("0.5", "1", "parse_numbers"),
    ],
)
def test_bad_input_is_one_clear_value_error(probs, labels, message):
    for fn in (explain, explain_numbers):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) \
                as info:
            fn(probs, labels)
        assert "\n" not in str(info.value)


def test_errors_name_the_customer():
    with pytest.raises(ValueError, match="customer 3"):
        explain([0.1, 0.2, 7], [0, 1, 1])
    with pytest.raises(ValueError, match="label 3 of customer 2"):
        explain([0.1, 0.2], [0, 3])
    with pytest.raises(ValueError, match="label 2 of customer 2"):
        explain(parse_numbers("0.1,0.2"), parse_numbers("1,2"))
    with pytest.raises(ValueError, match="probability 1.5 of customer 1 "):
        explain(parse_numbers("1.5"), parse_numbers("1"))


def test_parse_numbers():
    assert parse_numbers("0.94,0.1") == [0.94, 0.1]
    assert parse_numbers(" 1, 0 ,1.0 ") == [1.0, 0.0, 1.0]
    assert parse_numbers("1e-3") == [0.001]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no numbers given"),
        ("   ", "no numbers given"),
        ("0.9,,0.1", "item 2 is empty"),
        ("0.9,", "item 2 is empty"),
        ("0.9,abc,0.1", "item 2 \\('abc'\\) is not a number"),
        ("0.9;0.1", "item 1 \\('0.9;0.1'\\) is not a number"),
        ("0.5,nan", "item 2 \\('nan'\\) is not a finite number"),
        ("inf", "item 1 \\('inf'\\) is not a finite number"),
    ],
)
def test_parse_numbers_names_the_bad_item(text, message):
    with pytest.raises(ValueError, match="^" + message):
        parse_numbers(text)
    with pytest.raises(ValueError, match="^--probs: "):
        parse_numbers(text, name="--probs")


def test_parsed_text_feeds_explain():
    n = explain_numbers(parse_numbers("0.94, 0.1"), parse_numbers("1, 0"))
    assert n["corrected"] == pytest.approx([0.94, 0.9], abs=1e-15)

"""The words every check uses, pinned on small cases: which known mistake a wrong answer is
(expect_close(..., mistakes=...), mistake_hint, naming_mistakes, same_answer), and seeded inputs."""
from __future__ import annotations

import pytest
import torch

from llmcourse.checking import (CheckFailed, expect, expect_close, generator, mistake_hint, naming_mistakes, randn,
                                same_answer, state_dict_of)

X = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
RIGHT = torch.softmax(X, dim=-1)
OVER_ROWS = torch.softmax(X, dim=0)
MISTAKES = [(lambda: torch.softmax(X, dim=0), "The values sum to 1 over the rows."),
            (lambda: X.exp(), "Divide by the sum.")]


def failure(call) -> CheckFailed:
    with pytest.raises(CheckFailed) as caught:
        call()
    return caught.value


# -- which known mistake is this --------------------------------------------------------------------

def test_a_wrong_answer_that_a_known_mistake_gives_gets_that_mistakes_hint():
    got = failure(lambda: expect_close(OVER_ROWS, RIGHT, "softmax(x)", hint="general", mistakes=MISTAKES))
    assert got.hint == "The values sum to 1 over the rows."
    assert got.message.startswith("softmax(x) does not match the expected values")  # the message says what differs
    got = failure(lambda: expect_close(X.exp(), RIGHT, "softmax(x)", hint="general", mistakes=MISTAKES))
    assert got.hint == "Divide by the sum."


def test_any_other_wrong_answer_keeps_the_general_hint():
    got = failure(lambda: expect_close(RIGHT + 0.1, RIGHT, "softmax(x)", hint="general", mistakes=MISTAKES))
    assert got.hint == "general"
    assert failure(lambda: expect_close(RIGHT + 0.1, RIGHT, "softmax(x)", mistakes=MISTAKES)).hint is None


def test_a_right_answer_passes_and_no_mistake_is_computed():
    def never():
        raise AssertionError("a mistake was computed for a right answer")

    expect_close(RIGHT.clone(), RIGHT, "softmax(x)", mistakes=[(never, "never")])


def test_a_mistake_whose_answer_is_the_right_one_is_never_named():
    # Off by 5e-4: wrong at float32's tolerance, yet within the looser tolerance of "the same answer as".
    near = RIGHT + 5e-4
    got = failure(lambda: expect_close(near, RIGHT, "softmax(x)", hint="general",
                                       mistakes=[(lambda: RIGHT.clone(), "a mistake that changes nothing here")]))
    assert got.hint == "general"
    assert mistake_hint(RIGHT, RIGHT, [(RIGHT, "no mistake here")]) is None


def test_a_mistake_that_raises_or_gives_none_for_these_inputs_is_skipped():
    def wrong_dim():
        return torch.softmax(X, dim=2)  # IndexError: these inputs have no dim 2

    mistakes = [(wrong_dim, "raises"), (lambda: None, "cannot happen here"), *MISTAKES]
    got = failure(lambda: expect_close(OVER_ROWS, RIGHT, "softmax(x)", hint="general", mistakes=mistakes))
    assert got.hint == "The values sum to 1 over the rows."


def test_mistakes_may_be_answers_instead_of_functions_and_the_first_that_fits_wins():
    mistakes = [(OVER_ROWS, "first"), (OVER_ROWS.clone(), "second")]
    assert mistake_hint(OVER_ROWS, RIGHT, mistakes) == "first"


def test_an_answer_of_another_shape_can_still_be_a_known_mistake():
    shifted = torch.log_softmax(X, dim=-1)[:, 1:]  # e.g. a shift that should not be there
    got = failure(lambda: expect_close(shifted, torch.log_softmax(X, dim=-1), "logprobs", hint="general",
                                       mistakes=[(lambda: torch.log_softmax(X, dim=-1)[:, 1:], "Do not shift."),
                                                 (lambda: X[:, 1:], "Normalise first.")]))
    assert "has shape (2, 2), but it should have shape (2, 3)" in got.message
    assert got.hint == "Do not shift."


def test_an_answer_with_nan_is_never_a_known_mistake():
    nan_where_the_mistake_has_nan = OVER_ROWS.clone()
    nan_where_the_mistake_has_nan[0, 0] = float("nan")
    got = failure(lambda: expect_close(nan_where_the_mistake_has_nan, RIGHT, "softmax(x)", hint="general",
                                       mistakes=[(nan_where_the_mistake_has_nan.clone(), "a mistake with NaN")]))
    assert "NaN" in got.message and got.hint == "general"


def test_a_wrong_dtype_still_names_the_mistake_its_values_are():
    got = failure(lambda: expect_close(OVER_ROWS.float(), RIGHT.double(), "softmax(x)", hint="general",
                                       check_dtype=True, mistakes=[(OVER_ROWS.double(), "over the rows")]))
    assert "dtype" in got.message and got.hint == "over the rows"


def test_boolean_masks_are_compared_exactly():
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    no_diagonal = torch.ones(4, 4, dtype=torch.bool).tril(-1)
    got = failure(lambda: expect_close(no_diagonal, causal, "causal_mask(4)", hint="general",
                                       mistakes=[(no_diagonal.clone(), "The diagonal is missing.")]))
    assert got.hint == "The diagonal is missing."
    assert not same_answer(no_diagonal, causal)


def test_naming_mistakes_works_for_any_check_and_any_kind_of_answer():
    expected = "Input: a\nOutput:"
    for got, hint in ((expected + " ", "No space at the end."), (expected + "\n", "general"), (7, "general")):
        with pytest.raises(CheckFailed) as caught:
            with naming_mistakes(got, expected, [(lambda: expected + " ", "No space at the end."),
                                                 (lambda: expected.upper(), "Keep the case.")]):
                expect(got == expected, f"format_prompt returned {got!r}", "general")
        assert caught.value.hint == hint
    with naming_mistakes(expected, expected, [(expected + " ", "never")]):
        expect(True, "a passing check raises nothing")


# -- when two answers are the same --------------------------------------------------------------------

def test_the_default_tolerance_is_ten_times_the_less_precise_dtypes():
    one = torch.ones(3)
    assert same_answer(one + 5e-4, one)  # float32: rtol 1e-3, atol 1e-4
    assert not same_answer(one + 5e-3, one)
    assert not same_answer(one.double() + 5e-4, one.double())  # float64: rtol 1e-6, atol 1e-8
    assert same_answer(one.double() + 5e-7, one.double())
    assert same_answer(one.double() + 5e-4, one)  # a float32 answer is only as precise as float32
    assert same_answer(one.half() + 0.05, one.half())  # float16: rtol 0.1, atol 0.1


def test_an_explicit_tolerance_replaces_the_default():
    one = torch.ones(3)
    assert not same_answer(one + 5e-4, one, rtol=1e-4, atol=1e-5)
    assert same_answer(one + 5e-2, one, rtol=0.1, atol=0)
    assert not same_answer(1.0 + 1e-12, 1.0, rtol=0, atol=0)


def test_shapes_must_agree_and_infinities_only_match_themselves():
    assert not same_answer(torch.ones(3), torch.ones(1, 3))
    inf = torch.tensor([float("-inf"), 1.0])
    assert same_answer(inf, inf.clone())
    assert not same_answer(inf, torch.tensor([-1e30, 1.0]))
    nan = torch.tensor([float("nan")])
    assert not same_answer(nan, nan.clone())


def test_numbers_sequences_and_other_values():
    assert same_answer(0.1 + 0.2, 0.3) and not same_answer(0.3, 0.31)
    assert same_answer(3, 3.0) and not same_answer(3, 4)
    assert same_answer(10 ** 9, 10 ** 9) and not same_answer(10 ** 9, 10 ** 9 + 1)  # ints are exact
    assert not same_answer(True, 1.0) and not same_answer("1.0", 1.0)
    assert same_answer((1.0, torch.ones(2)), [1.0 + 1e-9, torch.ones(2)])
    assert not same_answer([1.0, 2.0], [1.0])
    assert same_answer(["a b", "c"], ["a b", "c"]) and not same_answer(["a b"], ["a", "b"])
    assert not same_answer(torch.ones(1), 1.0) and not same_answer(None, torch.ones(1))


def test_a_float_answer_is_named_by_its_value():
    mistakes = [(2.0 * 3.0, "That is the sum, not the mean."), (float("nan"), "never")]
    assert mistake_hint(6.000001, 3.0, mistakes, rtol=1e-4) == "That is the sum, not the mean."
    assert mistake_hint(float("nan"), 3.0, mistakes) is None


# -- seeded inputs and modules as data ------------------------------------------------------------------

def test_seeded_inputs_are_the_same_every_time_and_in_every_dtype():
    assert torch.equal(randn(generator(3), 4, 5), randn(generator(3), 4, 5))
    assert not torch.equal(randn(generator(3), 4, 5), randn(generator(4), 4, 5))
    double = randn(generator(3), 4, 5, dtype=torch.float64, scale=2.0)
    assert double.dtype == torch.float64 and double.shape == (4, 5)
    assert torch.equal(randn(generator(3), 4, 5, scale=2.0), double.float())  # drawn in float64, then cast


def test_state_dict_of_gives_the_state_as_a_plain_dict_or_a_clear_failure():
    layer = torch.nn.Linear(3, 2)
    sd = state_dict_of(layer, "Linear(3, 2)")
    assert type(sd) is dict and set(sd) == {"weight", "bias"}

    class NotAModule:
        def state_dict(self, destination=None):
            return "junk"

    got = failure(lambda: state_dict_of(NotAModule(), "MultiHeadAttention(16, 4)"))
    assert got.message.startswith("MultiHeadAttention(16, 4).state_dict() did not return") and got.hint

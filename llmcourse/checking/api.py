"""What a check module uses: the `graded` decorator and assertions that speak to a learner.

A check is a pytest test function that takes the `student` fixture:

    ASSIGNMENT = "01_attention"

    @graded("softmax", points=2, hint="Subtract each row's maximum before exponentiating.")
    def test_softmax_is_stable(student):
        out = student.softmax(torch.tensor([[1000.0, 0.0]]))
        expect_close(out, torch.tensor([[1.0, 0.0]]), what="softmax of large logits")

Points, hint and exercise are pytest marker metadata; a failing check shows its message and hint.

A check of a side property says so with `requires_main=True`: that the input is left unchanged, the dtype,
device or shape is kept, the result is an int, a bad argument raises, two calls agree, the module has the
right layers. Such a check passes for code that returns nothing useful (a function that returns its input
leaves it unchanged), so it counts only once every main check of the exercise, one that compares the result
with the right answer, has passed:

    @graded("softmax", points=1, requires_main=True, hint="Don't change x in place.")
    def test_softmax_leaves_its_input_unchanged(student):
        ...

A wrong answer that a known mistake gives gets that mistake's hint instead of the check's general one:

    expect_close(out, ref.softmax(x, dim=-1), "softmax(x)",
                 mistakes=[(lambda: ref.softmax(x, dim=0), "The values sum to 1 along dim 0, not the last dim.")])
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator, NoReturn, Sequence

import pytest
import torch


def graded(exercise: str, points: float, hint: str, *, requires_main: bool = False):
    """Mark a check: the exercise it belongs to, what it is worth, the hint shown when it fails, and whether it
    checks a side property (counted only once the exercise's main checks pass)."""
    if points <= 0:
        raise ValueError("a check must be worth a positive number of points")

    def decorate(fn):
        return pytest.mark.graded(exercise=exercise, points=float(points), hint=hint,
                                  requires_main=bool(requires_main))(fn)

    return decorate


def visible(check):
    """Mark a check as visible: students run it in their notebook, before grading, and read its source.

    An assignment's checks, visible and hidden, are written in one file, `grader/checks/<assignment>.py`.
    `grader build` copies the visible ones, with the helpers and imports they use, into the student package
    (`llmcourse/checks/<assignment>.py`); a hidden check never leaves the grader. When a notebook is graded, each
    visible check runs once, from the student package's copy."""
    return pytest.mark.visible(check)


def is_visible(check) -> bool:
    """Whether a check function carries the `visible` mark."""
    return any(mark.name == "visible" for mark in getattr(check, "pytestmark", []))


class CheckFailed(AssertionError):
    """A check's verdict, with a message for the student and optionally a more specific hint."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


def fail(message: str, hint: str | None = None) -> NoReturn:
    raise CheckFailed(message, hint)


def expect(condition: Any, message: str, hint: str | None = None) -> None:
    if not condition:
        fail(message, hint)


def default_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing results computed in `dtype` two different, correct ways."""
    if dtype == torch.float64:
        return 1e-7, 1e-9
    if dtype in (torch.float16, torch.bfloat16):
        return 1e-2, 1e-2
    return 1e-4, 1e-5


def expect_tensor(value: Any, what: str, *, shape: Sequence[int] | None = None,
                  dtype: torch.dtype | None = None, hint: str | None = None) -> torch.Tensor:
    """`value` must be a tensor (of this shape and dtype); returns it."""
    if not isinstance(value, torch.Tensor):
        fail(f"{what} should be a torch tensor, but it is {_describe(value)}.", hint)
    if shape is not None and tuple(value.shape) != tuple(shape):
        fail(f"{what} has shape {tuple(value.shape)}, but it should have shape {tuple(shape)}.", hint)
    if dtype is not None and value.dtype != dtype:
        fail(f"{what} has dtype {value.dtype}, but it should have dtype {dtype}.", hint)
    return value


def expect_close(actual: Any, expected: torch.Tensor, what: str, *, rtol: float | None = None,
                 atol: float | None = None, hint: str | None = None, check_dtype: bool = False,
                 mistakes: Mistakes = ()) -> None:
    """`actual` must be a tensor of `expected`'s shape whose values match within tolerance. A wrong answer that one
    of the known `mistakes` gives fails with that mistake's hint (see `mistake_hint`)."""
    with naming_mistakes(actual, expected, mistakes):
        _expect_close(actual, expected, what, rtol=rtol, atol=atol, hint=hint, check_dtype=check_dtype)


def _expect_close(actual: Any, expected: torch.Tensor, what: str, *, rtol: float | None, atol: float | None,
                  hint: str | None, check_dtype: bool) -> None:
    actual = expect_tensor(actual, what, shape=tuple(expected.shape), hint=hint)
    if check_dtype and actual.dtype != expected.dtype:
        fail(f"{what} has dtype {actual.dtype}, but it should keep the input's dtype {expected.dtype}.", hint)
    if expected.dtype == torch.bool or actual.dtype == torch.bool:
        if actual.dtype != torch.bool:
            fail(f"{what} should be a boolean tensor (True/False), but it has dtype {actual.dtype}.", hint)
        wrong = (actual != expected)
        if wrong.any():
            idx = tuple(int(i) for i in wrong.nonzero()[0])
            fail(f"{what} is wrong at {int(wrong.sum())} of {wrong.numel()} positions, "
                 f"for example at index {idx}: got {bool(actual[idx])}, expected {bool(expected[idx])}.", hint)
        return
    default_rtol, default_atol = default_tolerance(expected.dtype)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    if (nan_a & ~nan_e).any():
        fail(f"{what} contains NaN where a number was expected ({int((nan_a & ~nan_e).sum())} entries).", hint)
    same_inf = torch.isinf(e) & (a == e)
    ok = same_inf | (nan_a & nan_e) | ((a - e).abs() <= atol + rtol * e.abs())
    if not bool(ok.all()):
        bad = (~ok).nonzero()[0]
        idx = tuple(int(i) for i in bad)
        err = (a - e).abs()[~ok].max().item()
        fail(f"{what} does not match the expected values: {int((~ok).sum())} of {ok.numel()} entries differ "
             f"(largest difference {err:.3g}); e.g. at index {idx} got {a[idx].item():.6g}, "
             f"expected {e[idx].item():.6g}.", hint)


# -- which known mistake is this --------------------------------------------------------------------

# Known mistakes: pairs of (the answer the mistake gives, or a function that computes it; the hint that names it).
Mistakes = Iterable[tuple[Any, str]]


def same_answer(a: Any, b: Any, *, rtol: float | None = None, atol: float | None = None) -> bool:
    """Whether two answers are the same. Tensors: one shape, and values within `rtol` and `atol`; by default ten
    times the tolerance of the less precise dtype (`default_tolerance`), since the two answers were computed by
    different code. NaN is the same as nothing (a NaN says that something else went wrong), an infinity only as
    itself. Python floats: the same, as float64. Tuples and lists: item by item. Anything else: `==`."""
    if isinstance(a, float) or isinstance(b, float):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            return False
        a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
            return False
        default_rtol, default_atol = max(default_tolerance(a.dtype), default_tolerance(b.dtype))
        rtol = 10 * default_rtol if rtol is None else rtol
        atol = 10 * default_atol if atol is None else atol
        return bool(torch.allclose(a.detach().double(), b.detach().double(), rtol=rtol, atol=atol))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same_answer(x, y, rtol=rtol, atol=atol) for x, y in zip(a, b))
    return bool(a == b)


def mistake_hint(actual: Any, expected: Any, mistakes: Mistakes, *, rtol: float | None = None,
                 atol: float | None = None) -> str | None:
    """The hint of the first known mistake whose answer `actual` is (by `same_answer`, with this tolerance), or None.

    A mistake whose answer is the right one (`expected`) for these inputs is never named: it is no mistake here.
    A mistake that cannot happen for these inputs (computing its answer raises, or gives None) is skipped."""
    for answer, hint in mistakes:
        if callable(answer):
            try:
                answer = answer()
            except Exception:  # noqa: BLE001  (e.g. a wrong dim that these inputs do not have)
                continue
        if answer is None or same_answer(answer, expected, rtol=rtol, atol=atol):
            continue
        if same_answer(actual, answer, rtol=rtol, atol=atol):
            return hint
    return None


@contextmanager
def naming_mistakes(actual: Any, expected: Any, mistakes: Mistakes, *, rtol: float | None = None,
                    atol: float | None = None) -> Iterator[None]:
    """A check that fails inside this block gets the hint of the known mistake whose answer `actual` is, if any:

        with naming_mistakes(got, expected, [(lambda: expected + " ", "Don't end the prompt with a space.")]):
            expect(got == expected, f"format_prompt(...) returned {got!r}")
    """
    try:
        yield
    except CheckFailed as failure:
        hint = mistake_hint(actual, expected, mistakes, rtol=rtol, atol=atol)
        if hint is None:
            raise
        raise CheckFailed(failure.message, hint) from None


def _describe(value: Any) -> str:
    if value is None:
        return "None (did the function forget to `return`?)"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} values"
    return f"a {type(value).__name__}"

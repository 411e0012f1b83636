import torch

from llmcourse.checking import expect, expect_close, graded

ASSIGNMENT = "00_basics"


@graded("add", points=2, hint="Return a + b; it must broadcast like torch does.")
def test_add_broadcasts(student):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 1, generator=g), torch.randn(3, generator=g)
    expect_close(student.add(a, b), a + b, what="add with broadcasting")


@graded("add", points=1, requires_main=True, hint="Do not change the inputs in place.")
def test_add_leaves_inputs_alone(student):
    a = student.put(torch.ones(3))
    student.add(a, torch.ones(3))
    expect(bool((a.fetch() == 1).all()), "add changed its first input in place")


@graded("scale", points=2, hint="Multiply every entry by the factor, for any dtype.")
def test_scale_float64(student):
    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expect_close(student.scale(x, -0.5), x * -0.5, what="scale(x, -0.5) in float64")


@graded("mean_rows", points=2, hint="Average over the last dimension, keeping the others.")
def test_mean_rows_random(student):
    x = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(3))
    expect_close(student.mean_rows(x), x.mean(-1), what="mean_rows of a (2, 3, 7) tensor")

import torch

from llmcourse.checking import expect_close, graded

ASSIGNMENT = "00_basics"


@graded("add", points=1, hint="Return a + b (element-wise).")
def test_add_two_vectors(student):
    expect_close(student.add(torch.ones(3), torch.arange(3.0)), torch.tensor([1.0, 2.0, 3.0]), what="add(ones, [0,1,2])")


@graded("scale", points=1, hint="Multiply every entry by the factor.")
def test_scale_by_two(student):
    expect_close(student.scale(torch.tensor([1.0, -2.0]), 2.0), torch.tensor([2.0, -4.0]), what="scale(x, 2)")


@graded("mean_rows", points=1, hint="Average over the last dimension.")
def test_mean_rows_shape(student):
    out = student.mean_rows(torch.ones(4, 5))
    expect_close(out, torch.ones(4), what="mean_rows(ones(4, 5))")

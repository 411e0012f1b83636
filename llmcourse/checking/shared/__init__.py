"""What the visible and the hidden checks of one assignment both use, one module per assignment
(`01_attention` -> `llmcourse.checking.shared.attention`): the tiny models and inputs both build, the hints an
exercise's checks share, and how an answer is read.

The checks (`grader.checks`) import from here and from `llmcourse.checking`. This package ships to students
with the copy of the visible checks that `grader build` writes (`llmcourse.checks`), which imports from it too.
"""

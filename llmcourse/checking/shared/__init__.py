"""What the visible and the hidden checks of one assignment both use, one module per assignment
(`01_attention` -> `llmcourse.checking.shared.attention`): the tiny models and inputs both build, the hints an
exercise's checks share, and how an answer is read.

The visible checks (`llmcourse.checks`) ship to students and so does this package. The hidden checks
(`grader.checks`) import from here and from `llmcourse.checking`, never from the visible checks, so that each
visible check module is only the checks a student runs.
"""

"""The course's checks, visible and hidden, one module per assignment (`01_attention` -> `grader.checks.attention`).

The checks marked `@visible` ship to students: `grader build` copies them, with what they use, into the student
package (`llmcourse.checks.attention`; see grader.shipping). Every other check stays in the grader.
"""

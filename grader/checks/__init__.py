"""Hidden checks, one module per assignment (`01_attention` -> `grader.checks.attention`); they never ship to students."""

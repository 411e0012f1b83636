"""The catalogue of hostile and broken submissions: what each does, and what grading it must give.

`cases.py` builds the submissions, `batch.py` grades them all in one batch and looks at the machine
afterwards, `write_table.py` turns a real run into docs/catalogue.md, and tests/test_catalogue.py
asserts every expectation.
"""

# cases.py adds the cases of cases_sandbox.py to its list, and cases_sandbox.py builds on cases.py: importing
# cases.py first, whichever module is asked for, lets each find what it needs of the other.
from . import cases  # noqa: E402,F401

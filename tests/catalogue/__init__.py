"""The catalogue of hostile and broken submissions: what each does, and what grading it must give.

`cases.py` builds the submissions, `batch.py` grades them all in one batch and looks at the machine
afterwards, `write_table.py` turns a real run into docs/catalogue.md, and tests/test_catalogue.py
asserts every expectation.
"""

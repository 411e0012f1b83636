"""Trusted reference solutions, one module per assignment; the hidden checks compare students' work with them."""

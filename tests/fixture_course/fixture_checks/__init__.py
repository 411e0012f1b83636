"""Checks of the fixture assignment 00_basics (a tiny stand-in course for the engine's tests)."""

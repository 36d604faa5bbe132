"""Unit tests of the dispatcher building blocks."""

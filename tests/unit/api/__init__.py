"""Unit tests of the control API."""

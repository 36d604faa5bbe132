"""Integration tests of the control API against the real broker."""

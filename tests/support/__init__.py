"""Reusable test helpers: real servers and builders for integration tests."""

"""Helpers for the test fixtures: real servers started and stopped by pytest."""

"""Shipped models, one folder per ``name-version`` with its ``manifest.json``."""

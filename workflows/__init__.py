"""Temporal workflows and their payload contracts; no I/O here."""

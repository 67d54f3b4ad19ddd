"""Integration tests against a real PostgreSQL server and wire-level fakes."""

"""Tests: unit (domain, no I/O), workflows (time-skipping), integration (real PostgreSQL), e2e."""

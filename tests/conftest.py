"""Fixtures shared by every test folder, loaded as plugins so no test module imports them:
the session's PostgreSQL server and databases, and the time-skipping Temporal server."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.temporal"]

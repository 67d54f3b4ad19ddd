"""Fixtures shared by every test folder: the session's PostgreSQL server and databases."""

from tests.pg import (  # noqa: F401  (fixtures are found by name)
    _pg_tables,
    db_pool,
    empty_database_url,
    pg_database_url,
    pg_pool,
    pg_server_url,
)

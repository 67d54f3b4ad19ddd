"""The signed HTTP API (FastAPI)."""

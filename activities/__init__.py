"""The boundary to the outside world: brokers, market data, the PostgreSQL store."""

"""Backtests: bars from a CSV file or the market data, a venue that replays them (a
`Broker` and a `MarketData`), and the report writer."""

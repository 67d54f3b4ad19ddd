"""Pure business model of the trading system: standard library only, Decimal for every amount."""

-- The arrival price of an order: the touch it would have traded at when risk accepted it
-- (the ask for a buy, the bid for a sell). Fills are measured against it
-- (trading_slippage_bps); NULL for orders accepted before this column, or without a quote.

-- migrate:up

ALTER TABLE orders ADD COLUMN arrival_price price_value
    CONSTRAINT orders_arrival_price_positive CHECK (arrival_price > 0);

-- migrate:down

ALTER TABLE orders DROP COLUMN arrival_price;

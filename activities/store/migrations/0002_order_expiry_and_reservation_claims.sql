-- DAY orders carry the session close they expire at; a reservation records the side,
-- symbol and unfilled quantity of its order, so that risk can tell which open sells
-- already claim a held position (two sells must not both "reduce" the same shares).

-- migrate:up

ALTER TABLE orders ADD COLUMN expires_at timestamptz;

ALTER TABLE reservations
    ADD COLUMN symbol text CHECK (symbol ~ '^[A-Z][A-Z0-9.]{0,9}$'),
    ADD COLUMN side text CHECK (side IN ('buy', 'sell')),
    ADD COLUMN quantity share_quantity
        CONSTRAINT reservations_quantity_not_negative CHECK (quantity >= 0);

-- Reservations of orders open during the upgrade take their claims from the order.
UPDATE reservations r
SET symbol = o.symbol, side = o.side, quantity = o.quantity - o.filled_quantity
FROM orders o
WHERE o.id = r.order_id;

ALTER TABLE reservations
    ALTER COLUMN symbol SET NOT NULL,
    ALTER COLUMN side SET NOT NULL,
    ALTER COLUMN quantity SET NOT NULL;

-- migrate:down

ALTER TABLE reservations DROP COLUMN quantity, DROP COLUMN side, DROP COLUMN symbol;
ALTER TABLE orders DROP COLUMN expires_at;

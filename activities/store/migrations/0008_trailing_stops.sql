-- Trailing stops: an order of type 'trailing_stop' trails the price by a distance in dollars
-- (trail_price) or in percent (trail_percent), exactly one of the two. The paper venue keeps
-- the best price seen since the order started working (`mark`: the high-water mark of a
-- sell, the low-water mark of a buy) on the order's row, written in the same transaction
-- as every other change of the order, so a restarted venue resumes the stop from the mark.

-- migrate:up

-- The checks that list the order types (named by PostgreSQL where the schema did not name
-- them) are replaced by ones that know the new type.
DO $$
DECLARE c record;
BEGIN
    FOR c IN
        SELECT conrelid::regclass::text AS tbl, conname FROM pg_constraint
        WHERE conrelid IN ('orders'::regclass, 'venue_orders'::regclass) AND contype = 'c'
          AND pg_get_constraintdef(oid) LIKE '%order_type%'
    LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', c.tbl, c.conname);
    END LOOP;
END $$;

ALTER TABLE orders
    ADD COLUMN trail_price price_value CONSTRAINT orders_trail_price_positive
        CHECK (trail_price > 0),
    ADD COLUMN trail_percent numeric CONSTRAINT orders_trail_percent_range
        CHECK (trail_percent > 0 AND trail_percent <= 50),
    ADD CONSTRAINT orders_order_type_known CHECK (
        order_type IN ('market', 'limit', 'stop', 'stop_limit', 'trailing_stop')),
    ADD CONSTRAINT orders_prices_match_type CHECK (
        (limit_price IS NOT NULL) = (order_type IN ('limit', 'stop_limit'))
        AND (stop_price IS NOT NULL) = (order_type IN ('stop', 'stop_limit'))
        AND ((trail_price IS NOT NULL) <> (trail_percent IS NOT NULL))
            = (order_type = 'trailing_stop')
        AND (order_type = 'trailing_stop' OR (trail_price IS NULL AND trail_percent IS NULL)));

ALTER TABLE venue_orders
    ADD COLUMN trail_price price_value CHECK (trail_price > 0),
    ADD COLUMN trail_percent numeric CHECK (trail_percent > 0 AND trail_percent <= 50),
    ADD COLUMN mark price_value CHECK (mark > 0),
    ADD CONSTRAINT venue_orders_order_type_known CHECK (
        order_type IN ('market', 'limit', 'stop', 'stop_limit', 'trailing_stop')),
    ADD CONSTRAINT venue_orders_prices_match_type CHECK (
        (limit_price IS NOT NULL) = (order_type IN ('limit', 'stop_limit'))
        AND (stop_price IS NOT NULL) = (order_type IN ('stop', 'stop_limit'))
        AND ((trail_price IS NOT NULL) <> (trail_percent IS NOT NULL))
            = (order_type = 'trailing_stop')
        AND (order_type = 'trailing_stop' OR (trail_price IS NULL AND trail_percent IS NULL))),
    ADD CONSTRAINT venue_orders_triggered_stops CHECK (
        NOT triggered OR order_type IN ('stop', 'stop_limit', 'trailing_stop')),
    ADD CONSTRAINT venue_orders_mark_trailing CHECK (mark IS NULL OR order_type = 'trailing_stop');

-- migrate:down

ALTER TABLE venue_orders
    DROP CONSTRAINT venue_orders_mark_trailing,
    DROP CONSTRAINT venue_orders_triggered_stops,
    DROP CONSTRAINT venue_orders_prices_match_type,
    DROP CONSTRAINT venue_orders_order_type_known,
    DROP COLUMN mark,
    DROP COLUMN trail_percent,
    DROP COLUMN trail_price,
    ADD CHECK (order_type IN ('market', 'limit', 'stop', 'stop_limit')),
    ADD CHECK ((limit_price IS NOT NULL) = (order_type IN ('limit', 'stop_limit'))
               AND (stop_price IS NOT NULL) = (order_type IN ('stop', 'stop_limit'))),
    ADD CHECK (NOT triggered OR order_type IN ('stop', 'stop_limit'));

ALTER TABLE orders
    DROP CONSTRAINT orders_prices_match_type,
    DROP CONSTRAINT orders_order_type_known,
    DROP COLUMN trail_percent,
    DROP COLUMN trail_price,
    ADD CONSTRAINT orders_order_type_check
        CHECK (order_type IN ('market', 'limit', 'stop', 'stop_limit')),
    ADD CONSTRAINT orders_prices_match_type CHECK (
        (limit_price IS NOT NULL) = (order_type IN ('limit', 'stop_limit'))
        AND (stop_price IS NOT NULL) = (order_type IN ('stop', 'stop_limit')));

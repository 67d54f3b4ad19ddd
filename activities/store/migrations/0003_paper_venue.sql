-- The paper venue's matching state. An order remembers the quote (liquidity bucket) it last
-- traded against, so that one quote's displayed size is never consumed twice, and why it
-- closed (canceled, expired, rejected). An execution carries its place in its order's fill
-- sequence (its id is "{broker_order_id}-{sequence}") and the order's cumulative quantity
-- after it, so the venue can report fills in order without recomputing running sums.

-- migrate:up

ALTER TABLE venue_orders
    ADD COLUMN last_quote_at timestamptz,
    ADD COLUMN reason text;

ALTER TABLE venue_executions
    ADD COLUMN sequence integer CONSTRAINT venue_executions_sequence_positive
        CHECK (sequence > 0),
    ADD COLUMN cumulative_quantity share_quantity
        CONSTRAINT venue_executions_cumulative_covers_quantity
        CHECK (cumulative_quantity >= quantity);

-- Executions written before this migration get their sequence and running sum from their
-- order of execution.
UPDATE venue_executions e
SET sequence = n.sequence, cumulative_quantity = n.cumulative_quantity
FROM (
    SELECT execution_id,
           row_number() OVER w AS sequence,
           sum(quantity) OVER w AS cumulative_quantity
    FROM venue_executions
    WINDOW w AS (PARTITION BY client_order_id ORDER BY executed_at, execution_id)
) n
WHERE n.execution_id = e.execution_id;

ALTER TABLE venue_executions
    ALTER COLUMN sequence SET NOT NULL,
    ALTER COLUMN cumulative_quantity SET NOT NULL,
    ADD CONSTRAINT venue_executions_sequence_unique UNIQUE (client_order_id, sequence);

-- migrate:down

ALTER TABLE venue_executions
    DROP CONSTRAINT venue_executions_sequence_unique,
    DROP COLUMN cumulative_quantity,
    DROP COLUMN sequence;

ALTER TABLE venue_orders
    DROP COLUMN reason,
    DROP COLUMN last_quote_at;

-- Broker faults never lose money.
-- orders.broker_unreachable_since: set while an order's workflow cannot reach the broker (it
-- waits and retries; it never closes the order for an outage), cleared when the broker
-- answers again. Operators find these orders with `trading orders stuck`.
-- late_broker_events: a broker event whose order workflow had already closed. A fill is
-- applied to the ledger from here (once, by execution id) and every such event is kept,
-- flagged for operators, never dropped.

-- migrate:up

ALTER TABLE orders ADD COLUMN broker_unreachable_since timestamptz;

CREATE INDEX idx_orders_broker_unreachable
    ON orders (broker_unreachable_since) WHERE broker_unreachable_since IS NOT NULL;

CREATE TABLE late_broker_events (
    id              bigserial PRIMARY KEY,
    -- execution id for a fill, '{event}:{client_order_id}' for any other event
    dedupe_key      text NOT NULL UNIQUE,
    client_order_id text NOT NULL,
    order_id        uuid REFERENCES orders (id),
    event           text NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    applied         boolean NOT NULL DEFAULT false,
    note            text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz
);

CREATE INDEX idx_late_broker_events_open ON late_broker_events (received_at)
    WHERE acknowledged_at IS NULL;

-- migrate:down

DROP TABLE late_broker_events;
DROP INDEX idx_orders_broker_unreachable;
ALTER TABLE orders DROP COLUMN broker_unreachable_since;

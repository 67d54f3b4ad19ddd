-- Order events for the API's live stream (GET /api/v1/events): every change a client cares
-- about (new, partial_fill, fill, canceled, expired, rejected) is written by a trigger in
-- the transaction that changes the order, with the order's row as it was then. Ids are
-- committed in order per portfolio (the trigger holds a transaction-level advisory lock
-- per portfolio from the id's allocation to the commit), so a reader that resumes after
-- the last id it saw (Last-Event-ID) never skips an event committed late, nor repeats one.

-- migrate:up

CREATE TABLE order_events (
    id           bigserial PRIMARY KEY,
    portfolio_id uuid NOT NULL REFERENCES portfolios (id),
    order_id     uuid NOT NULL REFERENCES orders (id),
    event        text NOT NULL CONSTRAINT order_events_kind_known CHECK (event IN (
                     'new', 'partial_fill', 'fill', 'canceled', 'expired', 'rejected',
                     'replaced')),
    order_row    jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_order_events_portfolio ON order_events (portfolio_id, id);

CREATE FUNCTION record_order_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        kind := CASE WHEN NEW.status = 'rejected' THEN 'rejected' ELSE 'new' END;
    ELSIF NEW.filled_quantity > OLD.filled_quantity THEN
        kind := CASE WHEN NEW.status = 'filled' THEN 'fill' ELSE 'partial_fill' END;
    ELSIF NEW.status IS DISTINCT FROM OLD.status
          AND NEW.status IN ('canceled', 'expired', 'rejected') THEN
        kind := NEW.status;
    ELSE
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('order_events:' || NEW.portfolio_id, 0));
    INSERT INTO order_events (portfolio_id, order_id, event, order_row)
    VALUES (NEW.portfolio_id, NEW.id, kind, to_jsonb(NEW));
    PERFORM pg_notify('order_events', NEW.portfolio_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER orders_record_events AFTER INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION record_order_event();

-- migrate:down

DROP TRIGGER orders_record_events ON orders;
DROP FUNCTION record_order_event();
DROP TABLE order_events;

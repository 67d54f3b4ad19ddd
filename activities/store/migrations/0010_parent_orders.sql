-- Parent orders: an execution algorithm (TWAP, VWAP) splits a parent order into child
-- orders, each an ordinary order with its own workflow. The parent is a row of its own
-- (`order_class` names the algorithm): it holds the reservation of the quantity not yet
-- sent and shows the children's fills summed; a child names its parent.

-- migrate:up

ALTER TABLE orders
    ADD COLUMN order_class text NOT NULL DEFAULT 'simple'
        CONSTRAINT orders_order_class_known CHECK (order_class IN ('simple', 'twap', 'vwap')),
    ADD COLUMN parent_order_id uuid CONSTRAINT orders_parent_order_fk REFERENCES orders (id),
    ADD CONSTRAINT orders_parent_is_not_itself CHECK (parent_order_id <> id);

CREATE INDEX idx_orders_parent ON orders (parent_order_id) WHERE parent_order_id IS NOT NULL;

-- migrate:down

DROP INDEX idx_orders_parent;

ALTER TABLE orders
    DROP CONSTRAINT orders_parent_is_not_itself,
    DROP COLUMN parent_order_id,
    DROP COLUMN order_class;

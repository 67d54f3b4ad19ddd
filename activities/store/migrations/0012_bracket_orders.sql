-- Brackets, OCO and OTO (workflows/bracket.py): the parent is an order row whose
-- `order_class` names the structure; its entry and exit legs are ordinary orders naming it.
-- The paper venue groups the exit legs that cancel each other (`oco_group`): a matching
-- pass locks the whole group before it fills one of them, and cancels the others in the
-- same transaction, so two legs marketable in one pass never both fill.

-- migrate:up

ALTER TABLE orders
    DROP CONSTRAINT orders_order_class_known,
    ADD CONSTRAINT orders_order_class_known CHECK (
        order_class IN ('simple', 'twap', 'vwap', 'bracket', 'oco', 'oto'));

ALTER TABLE venue_orders
    ADD COLUMN oco_group text CONSTRAINT venue_orders_oco_group_length
        CHECK (char_length(oco_group) BETWEEN 1 AND 128);

CREATE INDEX idx_venue_orders_oco_group ON venue_orders (oco_group)
    WHERE oco_group IS NOT NULL;

-- migrate:down

DROP INDEX idx_venue_orders_oco_group;

ALTER TABLE venue_orders DROP COLUMN oco_group;

ALTER TABLE orders
    DROP CONSTRAINT orders_order_class_known,
    ADD CONSTRAINT orders_order_class_known CHECK (order_class IN ('simple', 'twap', 'vwap'));

-- The trading store: portfolios, orders, executions, positions, reservations, snapshots,
-- reconciliation, API keys, and the paper venue's own tables.
--
-- Amounts use the domains below instead of NUMERIC(p,s): PostgreSQL silently rounds a
-- value with more decimals than a NUMERIC(p,s) column's scale, and stores NaN in one.
-- The domains are unconstrained NUMERIC with a CHECK, so a row holds exactly the Decimal
-- that was written, or the write fails. Their bounds are those of the NUMERIC(p,s) named.

-- migrate:up

-- Settled money (cash, P&L, commissions, limits): NUMERIC(20,8).
CREATE DOMAIN money_amount AS numeric
    CONSTRAINT money_amount_exact CHECK (VALUE = round(VALUE, 8) AND abs(VALUE) < 1e12);
-- Prices per share: NUMERIC(20,8), sub-penny included.
CREATE DOMAIN price_value AS numeric
    CONSTRAINT price_value_exact CHECK (VALUE = round(VALUE, 8) AND abs(VALUE) < 1e12);
-- Share quantities, fractional shares included: NUMERIC(24,9).
CREATE DOMAIN share_quantity AS numeric
    CONSTRAINT share_quantity_exact CHECK (VALUE = round(VALUE, 9) AND abs(VALUE) < 1e15);
-- Exact quantity x price products and their sums (notional before settlement rounding):
-- NUMERIC(38,17), the scale of share_quantity plus price_value.
CREATE DOMAIN exact_amount AS numeric
    CONSTRAINT exact_amount_exact CHECK (VALUE = round(VALUE, 17) AND abs(VALUE) < 1e21);

CREATE TABLE portfolios (
    id                  uuid PRIMARY KEY,
    name                text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    currency            char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    initial_capital     money_amount NOT NULL CHECK (initial_capital > 0),
    cash_balance        money_amount NOT NULL,  -- may go negative on margin
    trading_state       text NOT NULL DEFAULT 'active'
                        CHECK (trading_state IN ('active', 'reducing', 'halted')),
    max_position_size   money_amount NOT NULL CHECK (max_position_size > 0),
    max_portfolio_risk  numeric(20, 8) NOT NULL
                        CHECK (max_portfolio_risk > 0 AND max_portfolio_risk <= 1),
    max_positions       integer NOT NULL CHECK (max_positions > 0),
    max_leverage        numeric(20, 8) NOT NULL CHECK (max_leverage > 0 AND max_leverage < 1000),
    max_order_notional  money_amount NOT NULL CHECK (max_order_notional > 0),
    max_concentration   numeric(20, 8) NOT NULL
                        CHECK (max_concentration > 0 AND max_concentration <= 1),
    daily_loss_limit    money_amount NOT NULL CHECK (daily_loss_limit > 0),
    market_order_buffer numeric(20, 8) NOT NULL DEFAULT 0.02
                        CHECK (market_order_buffer >= 0 AND market_order_buffer < 1),
    day_start_equity    money_amount NOT NULL,
    realized_pnl        money_amount NOT NULL DEFAULT 0,
    total_commissions   money_amount NOT NULL DEFAULT 0 CHECK (total_commissions >= 0),
    trades_won          integer NOT NULL DEFAULT 0 CHECK (trades_won >= 0),
    trades_lost         integer NOT NULL DEFAULT 0 CHECK (trades_lost >= 0),
    gross_profit        money_amount NOT NULL DEFAULT 0 CHECK (gross_profit >= 0),
    gross_loss          money_amount NOT NULL DEFAULT 0 CHECK (gross_loss >= 0),  -- positive
    version             bigint NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id                 uuid PRIMARY KEY,
    portfolio_id       uuid NOT NULL REFERENCES portfolios (id),
    client_order_id    text NOT NULL CHECK (char_length(client_order_id) BETWEEN 1 AND 128),
    symbol             text NOT NULL CHECK (symbol ~ '^[A-Z][A-Z0-9.]{0,9}$'),
    side               text NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type         text NOT NULL
                       CHECK (order_type IN ('market', 'limit', 'stop', 'stop_limit')),
    time_in_force      text NOT NULL CHECK (time_in_force IN ('day', 'gtc', 'ioc', 'fok')),
    quantity           share_quantity NOT NULL
                       CONSTRAINT orders_quantity_positive CHECK (quantity > 0),
    limit_price        price_value CONSTRAINT orders_limit_price_positive CHECK (limit_price > 0),
    stop_price         price_value CONSTRAINT orders_stop_price_positive CHECK (stop_price > 0),
    status             text NOT NULL DEFAULT 'pending' CONSTRAINT orders_status_known CHECK (
                           status IN ('pending', 'accepted', 'submitted', 'partially_filled',
                                      'filled', 'pending_cancel', 'canceled', 'expired',
                                      'rejected')),
    filled_quantity    share_quantity NOT NULL DEFAULT 0,
    -- Exact sum of quantity x price over the fills; the average is derived from it.
    filled_notional    exact_amount NOT NULL DEFAULT 0
                       CONSTRAINT orders_filled_notional_not_negative CHECK (filled_notional >= 0),
    average_fill_price price_value CHECK (average_fill_price > 0),
    commission         money_amount NOT NULL DEFAULT 0
                       CONSTRAINT orders_commission_not_negative CHECK (commission >= 0),
    broker_order_id    text CHECK (char_length(broker_order_id) BETWEEN 1 AND 128),
    reject_code        text,
    reject_reason      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    submitted_at       timestamptz,
    filled_at          timestamptz,
    closed_at          timestamptz,
    version            bigint NOT NULL DEFAULT 1 CHECK (version > 0),

    CONSTRAINT orders_client_order_id_unique UNIQUE (portfolio_id, client_order_id),
    -- Targets of the composite foreign keys below: a fill or a reservation belongs to the
    -- order's portfolio, and a fill has the order's symbol and side.
    CONSTRAINT orders_id_portfolio_unique UNIQUE (id, portfolio_id),
    CONSTRAINT orders_id_portfolio_symbol_side_unique UNIQUE (id, portfolio_id, symbol, side),
    CONSTRAINT orders_filled_within_quantity
        CHECK (filled_quantity >= 0 AND filled_quantity <= quantity),
    CONSTRAINT orders_prices_match_type CHECK (
        (limit_price IS NOT NULL) = (order_type IN ('limit', 'stop_limit'))
        AND (stop_price IS NOT NULL) = (order_type IN ('stop', 'stop_limit'))),
    CONSTRAINT orders_filled_means_complete
        CHECK (status <> 'filled' OR filled_quantity = quantity),
    -- Nothing filled <=> no notional and no average price (every fill price is > 0).
    CONSTRAINT orders_fill_totals_consistent CHECK (
        (filled_quantity = 0) = (filled_notional = 0)
        AND (filled_quantity = 0) = (average_fill_price IS NULL)),
    -- Terminal statuses are absorbing; the domain stamps closed_at when it enters one.
    CONSTRAINT orders_closed_at_iff_terminal CHECK (
        (closed_at IS NOT NULL) = (status IN ('filled', 'canceled', 'expired', 'rejected')))
);

CREATE INDEX idx_orders_symbol ON orders (symbol);
CREATE INDEX idx_orders_status ON orders (status);
CREATE INDEX idx_orders_created_at ON orders (created_at DESC);
CREATE INDEX idx_orders_portfolio_created_at ON orders (portfolio_id, created_at DESC);
CREATE INDEX idx_orders_open ON orders (portfolio_id, symbol)
    WHERE status IN ('pending', 'accepted', 'submitted', 'partially_filled', 'pending_cancel');
CREATE UNIQUE INDEX idx_orders_broker_order_id ON orders (broker_order_id)
    WHERE broker_order_id IS NOT NULL;

-- One row per broker execution id: applying the same fill twice is a no-op (ON CONFLICT).
CREATE TABLE executions (
    execution_id text PRIMARY KEY CHECK (char_length(execution_id) BETWEEN 1 AND 128),
    order_id     uuid NOT NULL,
    portfolio_id uuid NOT NULL,
    symbol       text NOT NULL,
    side         text NOT NULL,
    quantity     share_quantity NOT NULL
                 CONSTRAINT executions_quantity_positive CHECK (quantity > 0),
    price        price_value NOT NULL CONSTRAINT executions_price_positive CHECK (price > 0),
    notional     exact_amount NOT NULL CONSTRAINT executions_notional_exact
                 CHECK (notional = quantity * price),
    commission   money_amount NOT NULL DEFAULT 0
                 CONSTRAINT executions_commission_not_negative CHECK (commission >= 0),
    executed_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT executions_order_fk FOREIGN KEY (order_id, portfolio_id, symbol, side)
        REFERENCES orders (id, portfolio_id, symbol, side)
);

CREATE INDEX idx_executions_order_id ON executions (order_id);
CREATE INDEX idx_executions_portfolio_executed_at ON executions (portfolio_id, executed_at DESC);

-- A closed position keeps its row (quantity 0) with its realized P&L and commissions.
CREATE TABLE positions (
    portfolio_id        uuid NOT NULL REFERENCES portfolios (id),
    symbol              text NOT NULL CHECK (symbol ~ '^[A-Z][A-Z0-9.]{0,9}$'),
    quantity            share_quantity NOT NULL DEFAULT 0,  -- signed: negative is short
    cost_basis          money_amount NOT NULL DEFAULT 0,    -- signed like the quantity
    average_entry_price price_value NOT NULL DEFAULT 0 CHECK (average_entry_price >= 0),
    realized_pnl        money_amount NOT NULL DEFAULT 0,
    commission_paid     money_amount NOT NULL DEFAULT 0 CHECK (commission_paid >= 0),
    stop_loss_price     price_value CHECK (stop_loss_price > 0),
    take_profit_price   price_value CHECK (take_profit_price > 0),
    opened_at           timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    version             bigint NOT NULL DEFAULT 1 CHECK (version > 0),
    PRIMARY KEY (portfolio_id, symbol),
    CONSTRAINT positions_flat_has_no_basis
        CHECK (quantity <> 0 OR (cost_basis = 0 AND average_entry_price = 0)),
    CONSTRAINT positions_basis_has_quantity_sign CHECK (sign(quantity) * sign(cost_basis) >= 0)
);

CREATE INDEX idx_positions_symbol ON positions (symbol);
CREATE INDEX idx_positions_opened_at ON positions (opened_at DESC);

-- Buying power held for the unfilled part of one open order.
CREATE TABLE reservations (
    order_id     uuid PRIMARY KEY,
    portfolio_id uuid NOT NULL REFERENCES portfolios (id),
    amount       money_amount NOT NULL CONSTRAINT reservations_amount_not_negative
                 CHECK (amount >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reservations_order_fk FOREIGN KEY (order_id, portfolio_id)
        REFERENCES orders (id, portfolio_id)
);

CREATE INDEX idx_reservations_portfolio_id ON reservations (portfolio_id);

-- Marked values are exact_amount: quantity x mark carries more decimals than a cent.
CREATE TABLE portfolio_snapshots (
    id              bigserial PRIMARY KEY,
    portfolio_id    uuid NOT NULL REFERENCES portfolios (id),
    taken_at        timestamptz NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('intraday', 'eod', 'manual')),
    cash            money_amount NOT NULL,
    positions_value exact_amount NOT NULL,
    equity          exact_amount NOT NULL,
    realized_pnl    money_amount NOT NULL,
    unrealized_pnl  exact_amount NOT NULL,
    return_pct      numeric(20, 8) NOT NULL,
    drawdown        numeric(20, 8) NOT NULL CHECK (drawdown >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT portfolio_snapshots_once UNIQUE (portfolio_id, taken_at, kind)
);

CREATE TABLE reconciliation_reports (
    id          uuid PRIMARY KEY,
    run_at      timestamptz NOT NULL,
    broker      text NOT NULL CHECK (broker ~ '^[a-z][a-z0-9_]*$'),
    status      text NOT NULL CHECK (status IN ('running', 'clean', 'discrepancies', 'failed')),
    summary     jsonb NOT NULL DEFAULT '{}'::jsonb,
    finished_at timestamptz,
    CHECK ((status = 'running') = (finished_at IS NULL))
);

CREATE INDEX idx_reconciliation_reports_run_at ON reconciliation_reports (run_at DESC);

CREATE TABLE reconciliation_discrepancies (
    id           bigserial PRIMARY KEY,
    report_id    uuid NOT NULL REFERENCES reconciliation_reports (id) ON DELETE CASCADE,
    portfolio_id uuid REFERENCES portfolios (id),
    kind         text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
    symbol       text CHECK (symbol ~ '^[A-Z][A-Z0-9.]{0,9}$'),
    order_id     uuid,
    expected     jsonb,
    actual       jsonb,
    repaired     boolean NOT NULL DEFAULT false,
    note         text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_reconciliation_discrepancies_report_id
    ON reconciliation_discrepancies (report_id);

-- No plaintext secret at rest. Request signing is HMAC(api_secret, ...), which needs the
-- key itself to verify: secret_hash holds whatever the API layer can verify from without
-- storing the secret (e.g. a key derived from a server master key, or an encrypted copy).
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[A-Za-z0-9_-]{8,64}$'),
    portfolio_id uuid NOT NULL REFERENCES portfolios (id),
    secret_hash  text NOT NULL CHECK (char_length(secret_hash) >= 32),
    label        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);

CREATE INDEX idx_api_keys_portfolio_id ON api_keys (portfolio_id);

-- The paper venue: a simulated broker with its own order book, fills and event outbox.
CREATE TABLE venue_orders (
    client_order_id text PRIMARY KEY CHECK (char_length(client_order_id) BETWEEN 1 AND 128),
    broker_order_id text NOT NULL UNIQUE,
    symbol          text NOT NULL CHECK (symbol ~ '^[A-Z][A-Z0-9.]{0,9}$'),
    side            text NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type      text NOT NULL CHECK (order_type IN ('market', 'limit', 'stop', 'stop_limit')),
    time_in_force   text NOT NULL CHECK (time_in_force IN ('day', 'gtc', 'ioc', 'fok')),
    quantity        share_quantity NOT NULL CHECK (quantity > 0),
    limit_price     price_value CHECK (limit_price > 0),
    stop_price      price_value CHECK (stop_price > 0),
    status          text NOT NULL DEFAULT 'new' CHECK (
                        status IN ('new', 'partially_filled', 'filled', 'canceled', 'expired',
                                   'rejected')),
    filled_quantity share_quantity NOT NULL DEFAULT 0,
    filled_notional exact_amount NOT NULL DEFAULT 0 CHECK (filled_notional >= 0),
    triggered       boolean NOT NULL DEFAULT false,  -- a stop order's stop has been hit
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    CHECK (filled_quantity >= 0 AND filled_quantity <= quantity),
    CHECK ((limit_price IS NOT NULL) = (order_type IN ('limit', 'stop_limit'))
           AND (stop_price IS NOT NULL) = (order_type IN ('stop', 'stop_limit'))),
    CHECK (status <> 'filled' OR filled_quantity = quantity),
    CHECK ((filled_quantity = 0) = (filled_notional = 0)),
    CHECK (NOT triggered OR order_type IN ('stop', 'stop_limit'))
);

CREATE INDEX idx_venue_orders_working ON venue_orders (symbol)
    WHERE status IN ('new', 'partially_filled');

CREATE TABLE venue_executions (
    execution_id    text PRIMARY KEY CHECK (char_length(execution_id) BETWEEN 1 AND 128),
    client_order_id text NOT NULL REFERENCES venue_orders (client_order_id),
    quantity        share_quantity NOT NULL CHECK (quantity > 0),
    price           price_value NOT NULL CHECK (price > 0),
    commission      money_amount NOT NULL DEFAULT 0 CHECK (commission >= 0),
    executed_at     timestamptz NOT NULL
);

CREATE INDEX idx_venue_executions_client_order_id ON venue_executions (client_order_id);

-- Transactional outbox: a venue state change and its event commit together; a relay
-- turns undelivered rows into workflow signals and stamps delivered_at.
CREATE TABLE venue_outbox (
    id              bigserial PRIMARY KEY,
    client_order_id text NOT NULL REFERENCES venue_orders (client_order_id),
    event           text NOT NULL CHECK (
                        event IN ('new', 'partial_fill', 'fill', 'canceled', 'expired',
                                  'rejected')),
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);

CREATE INDEX idx_venue_outbox_undelivered ON venue_outbox (id) WHERE delivered_at IS NULL;
CREATE INDEX idx_venue_outbox_client_order_id ON venue_outbox (client_order_id);

-- migrate:down

DROP TABLE venue_outbox;
DROP TABLE venue_executions;
DROP TABLE venue_orders;
DROP TABLE api_keys;
DROP TABLE reconciliation_discrepancies;
DROP TABLE reconciliation_reports;
DROP TABLE portfolio_snapshots;
DROP TABLE reservations;
DROP TABLE positions;
DROP TABLE executions;
DROP TABLE orders;
DROP TABLE portfolios;
DROP DOMAIN exact_amount;
DROP DOMAIN share_quantity;
DROP DOMAIN price_value;
DROP DOMAIN money_amount;

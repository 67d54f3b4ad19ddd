-- Strategy runs: one row per run of a StrategyRunWorkflow (a scheduled live run, or a
-- backtest), with its report; and which orders each run placed, with the strategy and the
-- reason, so an order placed by a strategy can be traced back to it.

-- migrate:up

CREATE TABLE strategy_runs (
    run_id       text PRIMARY KEY CHECK (char_length(run_id) BETWEEN 1 AND 300),
    strategy     text NOT NULL,
    params       jsonb NOT NULL DEFAULT '{}'::jsonb,
    symbols      text[] NOT NULL,
    portfolio_id uuid NOT NULL REFERENCES portfolios (id),
    status       text NOT NULL
                 CHECK (status IN ('completed', 'halted', 'skipped', 'no_data')),
    note         text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    report       jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX idx_strategy_runs_strategy ON strategy_runs (strategy, started_at DESC);

CREATE TABLE strategy_orders (
    order_id     uuid PRIMARY KEY REFERENCES orders (id),
    run_id       text NOT NULL REFERENCES strategy_runs (run_id),
    strategy     text NOT NULL,
    reason       text NOT NULL
);

CREATE INDEX idx_strategy_orders_run ON strategy_orders (run_id);

-- migrate:down

DROP TABLE strategy_orders;
DROP TABLE strategy_runs;

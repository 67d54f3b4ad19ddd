-- The API's rate limits, shared by every API process: one token bucket per portfolio and
-- route class (every key of a portfolio draws from the same bucket). `api_take_token`
-- refills the bucket for the time since its last use and takes one token in one statement
-- under the row's lock, so concurrent requests on any number of API processes never take
-- more than the bucket holds. UNLOGGED: buckets need no crash safety (after a crash they
-- start full) and skip the WAL.

-- migrate:up

CREATE UNLOGGED TABLE api_rate_buckets (
    bucket      text NOT NULL CHECK (length(bucket) <= 100),
    route_class text NOT NULL CHECK (length(route_class) <= 64),
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (bucket, route_class)
);

-- 0 when a token was taken, else the seconds until the next token.
CREATE FUNCTION api_take_token(
    p_bucket text, p_route_class text, p_capacity double precision, p_rate double precision
) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    now_ts timestamptz := clock_timestamp();
    have   double precision;
BEGIN
    INSERT INTO api_rate_buckets AS b (bucket, route_class, tokens, updated_at)
    VALUES (p_bucket, p_route_class, p_capacity, now_ts)
    ON CONFLICT (bucket, route_class) DO UPDATE
        SET tokens = LEAST(
                p_capacity,
                b.tokens + GREATEST(0, EXTRACT(EPOCH FROM now_ts - b.updated_at)) * p_rate),
            updated_at = GREATEST(b.updated_at, now_ts)
    RETURNING tokens INTO have;
    IF have >= 1 THEN
        UPDATE api_rate_buckets SET tokens = have - 1
        WHERE bucket = p_bucket AND route_class = p_route_class;
        RETURN 0;
    END IF;
    RETURN (1 - have) / p_rate;
END
$$;

-- migrate:down

DROP FUNCTION api_take_token(text, text, double precision, double precision);
DROP TABLE api_rate_buckets;

-- The signed API's replay guard: the digest of every accepted state-changing request's
-- signature, kept until its timestamp leaves the allowed clock skew. The primary key makes
-- a replay through any API process fail on INSERT ... ON CONFLICT, so a captured signed
-- POST cannot place a second order, however many API processes share this database.

-- migrate:up

CREATE TABLE api_request_signatures (
    digest     bytea PRIMARY KEY CHECK (octet_length(digest) = 32),
    key_id     text NOT NULL CHECK (key_id ~ '^[A-Za-z0-9_-]{8,64}$'),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_api_request_signatures_expires_at ON api_request_signatures (expires_at);

-- migrate:down

DROP TABLE api_request_signatures;

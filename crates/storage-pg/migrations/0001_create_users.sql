-- Users: the system of record. Ids come from an identity column and are never reused; list pages
-- are keyset ranges over the primary key.
CREATE TABLE users (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    email      TEXT        NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Emails are unique regardless of case; the check is the database's, so concurrent creates by
-- several replicas cannot both win.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

-- The signup write model: users (email unique once normalised) and the outbox of
-- their events, written in the same transaction as the user row.

CREATE TABLE users (
    id         uuid        PRIMARY KEY,
    email      text        CHECK (email = lower(email)),  -- NULL once erased
    name       text,                                      -- NULL once erased
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz                                -- set: a tombstone
);
-- NULLs are distinct: erased users (tombstones) never collide with a new signup.
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE outbox (
    id           bigserial   PRIMARY KEY,               -- claim order
    event_id     uuid        NOT NULL UNIQUE,           -- the AMQP message_id
    event_type   text        NOT NULL,                  -- routing key and AMQP type
    aggregate_id uuid        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz                            -- set after the broker's confirm
);
-- What the relay scans: only rows still to publish.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

-- Wake the relays at commit (NOTIFY is delivered only if the transaction commits).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

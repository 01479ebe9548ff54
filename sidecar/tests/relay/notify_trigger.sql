-- The opt-in wake-up trigger of docs/outbox.md (kept identical to it).
CREATE OR REPLACE FUNCTION ferry_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferry_outbox', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;
CREATE TRIGGER ferry_outbox_notify
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION ferry_outbox_notify();

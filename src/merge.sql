-- merge.sql: the merge log, unmerge and erasure.

CREATE TABLE cdp.merges (
    merge_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    winner_id        bigint NOT NULL,
    loser_id         bigint NOT NULL,
    merged_at        timestamptz NOT NULL DEFAULT cdp.now(),
    cause            text NOT NULL,
    event_id         text,
    identifiers      jsonb NOT NULL,
    loser_identities jsonb NOT NULL,
    loser_members    bigint[] NOT NULL,
    loser_traits     jsonb NOT NULL DEFAULT '{}',
    loser_trait_meta jsonb NOT NULL DEFAULT '{}',
    loser_created_at timestamptz,
    undone_at        timestamptz
);
CREATE INDEX merges_winner_id ON cdp.merges (winner_id);
CREATE INDEX merges_loser_id ON cdp.merges (loser_id);
COMMENT ON TABLE cdp.merges IS
    'Every merge: winner, loser, the message that caused it (cause, event_id, identifiers) and the loser as it was, for cdp.unmerge';

CREATE FUNCTION cdp.unmerge(merge_id bigint) RETURNS bigint
    LANGUAGE c VOLATILE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_unmerge';
COMMENT ON FUNCTION cdp.unmerge(bigint) IS
    'Splits a merge: restores the loser profile with its identities and events as they were at merge time; returns its id';

CREATE FUNCTION cdp.forget(identifiers jsonb) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_forget';
COMMENT ON FUNCTION cdp.forget(jsonb) IS
    'Erases the people the identifiers name: profile, identities, events, message ids, merges, matching inbox rows and rejects';

SELECT pg_catalog.pg_extension_config_dump('cdp.merges', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.merges_merge_id_seq', '');

-- merge.sql: the merge log.

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

SELECT pg_catalog.pg_extension_config_dump('cdp.merges', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.merges_merge_id_seq', '');

GRANT SELECT ON cdp.merges TO cdp_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON cdp.merges TO cdp_admin;

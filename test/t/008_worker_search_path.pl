# The worker runs as the bootstrap superuser, so nothing it runs may be
# resolved through a schema another role can write to. An attacker who may
# create functions in public (as a PostgreSQL 15 database owner may) plants
# closer matches for the functions the drain calls; the drain must not call
# them, and the attacker must not become superuser.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;

my $node = cdp_node('worker_search_path', "cdp.naptime = 100\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
CREATE ROLE mallory LOGIN IN ROLE cdp_ingest;
GRANT CREATE ON SCHEMA public TO mallory;
-- the default search_path of the database puts public on it
ALTER DATABASE postgres SET search_path = "$user", public;
});

# Each plant records that it ran, and with whose rights, then tries to
# make its author a superuser; it returns what the real function would.
my $plants = '';
for my $sig (['unnest', 'text[]', 'SETOF text'], ['unnest', 'bigint[]', 'SETOF bigint'],
	['unnest', 'timestamptz[]', 'SETOF timestamptz'], ['unnest', 'jsonb[]', 'SETOF jsonb'],
	['unnest', 'integer[]', 'SETOF integer'])
{
	my ($name, $arg, $ret) = @$sig;
	$plants .= qq{
CREATE FUNCTION public.$name(a $arg) RETURNS $ret LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO public.planted VALUES ('$name($arg)', current_user);
    BEGIN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    RETURN QUERY SELECT pg_catalog.unnest(a);
END
\$\$;
};
}
$node->safe_psql('postgres', qq{
SET ROLE mallory;
CREATE TABLE public.planted (fn text, ran_as name);
GRANT INSERT ON public.planted TO PUBLIC;
$plants
});

# mallory queues messages that exercise every drain statement: new
# profiles, identities, merges, message ids, identifier issues, rejects.
$node->safe_psql('postgres', q{
SET ROLE mallory;
INSERT INTO cdp.inbox (message)
SELECT format('{"type": "track", "userId": "u-%s", "anonymousId": "a-%s", "event": "Viewed", "messageId": "m-%s", "context": {"traits": {"phone": "not a phone"}}}',
              g, g % 7, g)
FROM generate_series(1, 200) g;
INSERT INTO cdp.inbox (message) VALUES ('not json'), ('{"type": "identify", "userId": "u-1", "traits": {"email": "x@example.com"}}');
});
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox'), 'the worker drained the inbox');
cmp_ok($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.events'), '>=', 200, 'the events landed');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.planted'), '0',
	'no planted function ran in the worker');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"), 'f',
	'the attacker did not become superuser');

# The plants are live: a session whose search_path has public calls them.
$node->safe_psql('postgres', 'SET ROLE mallory; SELECT count(*) FROM unnest(ARRAY[\'a\']::text[])');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.planted'), '1',
	'the plants are reachable where public is on the search_path (the test can fail)');

# A reload must not unpin the worker's search_path.
$node->append_conf('postgresql.conf', "search_path = 'public, pg_catalog'\n");
$node->reload;
$node->safe_psql('postgres', q{
TRUNCATE public.planted;
INSERT INTO cdp.inbox (message) VALUES ('{"type": "track", "userId": "u-900", "event": "After Reload", "messageId": "m-900"}');
});
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox'), 'drained after the reload');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.planted'), '0',
	'after a reload the worker still calls no planted function');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"), 'f',
	'still not superuser');

$node->stop;
done_testing();

# pg_cdp: PGXS build plus the project's own targets (test, demo, bench).
#
#   make            build the extension (-Wall -Werror)
#   make install    install it into the PostgreSQL found by PG_CONFIG
#   make test       install missing packages, build, install, run every suite
#   make demo       install, build, start a throwaway server, load demo data
#   make bench      run the benchmarks, each beside its baseline

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config

EXTENSION  = pg_cdp
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" pg_cdp.control)

MODULE_big = pg_cdp
OBJS       = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# The install script is assembled from the SQL that sits beside each C file,
# in dependency order.
SQL_PARTS  = src/pg_cdp.sql src/identity.sql src/stitch.sql src/profile.sql src/registry.sql \
             src/ingest.sql src/merge.sql src/erase.sql src/renormalize.sql src/sources.sql \
             src/drain.sql src/worker.sql src/traits.sql src/segment.sql src/outbox.sql \
             src/policy.sql src/journey.sql src/campaign.sql \
             src/journey_stats.sql
DATA_built = $(EXTENSION)--$(EXTVERSION).sql
# Released install scripts stay installable, and each release ships the
# upgrade from the one before (tested against a fresh install).
DATA       = $(wildcard upgrade/$(EXTENSION)--*.sql)

# ICU folds case and normalizes Unicode in identifier values (normalize.c);
# PostgreSQL itself is built with it, so the library is already loaded.
SHLIB_LINK  = -licuuc

PG_CPPFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
              -Wno-missing-field-initializers -Isrc

# pg_regress: one suite per concept, each in its own preloaded server.
REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-config=test/regress.conf --temp-instance=tmp_regress \
               --encoding=UTF8 --no-locale

# Isolation specs live in test/specs with their output in test/expected.
ISOLATION      = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --outputdir=test/output_iso \
                 --temp-config=test/isolation.conf --temp-instance=tmp_isolation \
                 --encoding=UTF8 --no-locale

TAP_TESTS   = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_regress tmp_isolation test/output_iso results regression.* \
              tmp_check log

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# After the include: Makefile.global resets it. TAP tests share test/perl.
PROVE_FLAGS = -I test/perl

$(DATA_built): $(SQL_PARTS) pg_cdp.control
	( echo '-- generated from src/*.sql by the Makefile: edit those files'; \
	  printf '%s\n' '\echo Use "CREATE EXTENSION pg_cdp" to load this file. \quit'; \
	  for f in $(SQL_PARTS); do echo; echo "-- $$f"; cat $$f; done ) > $@

# The HTTP collector is a program of its own, with its own Makefile and
# libraries (libmicrohttpd, jansson, zlib): make WITH_PROGRAMS=no builds the
# extension alone, make -C src/collector the collector alone. Programs go
# where PostgreSQL's are, with a link on the PATH (LINKDIR), as Debian's
# packages link their programs into /usr/bin.
WITH_PROGRAMS ?= yes
LINKDIR       ?= /usr/local/bin
PG_BINDIR     := $(shell $(PG_CONFIG) --bindir)

ifeq ($(WITH_PROGRAMS),yes)
all: collector
install: install-collector
endif
clean: clean-collector

.PHONY: collector install-collector clean-collector
collector:
	$(MAKE) -C src/collector PG_CONFIG=$(PG_CONFIG)

install-collector: collector
	$(MAKE) -C src/collector PG_CONFIG=$(PG_CONFIG) install
	install -d $(DESTDIR)$(LINKDIR)
	ln -sf $(PG_BINDIR)/pg_cdp_collector $(DESTDIR)$(LINKDIR)/pg_cdp_collector

clean-collector:
	$(MAKE) -C src/collector clean

# So is the bulk loader, which compiles the collector's JSON validator.
ifeq ($(WITH_PROGRAMS),yes)
all: loader
install: install-loader
endif
clean: clean-loader

.PHONY: loader install-loader clean-loader
loader:
	$(MAKE) -C src/loader PG_CONFIG=$(PG_CONFIG)

install-loader: loader
	$(MAKE) -C src/loader PG_CONFIG=$(PG_CONFIG) install
	install -d $(DESTDIR)$(LINKDIR)
	ln -sf $(PG_BINDIR)/pg_cdp_load $(DESTDIR)$(LINKDIR)/pg_cdp_load

clean-loader:
	$(MAKE) -C src/loader clean

# So is the connector that drains the outbox (libpq, libcurl).
ifeq ($(WITH_PROGRAMS),yes)
all: connector
install: install-connector
endif
clean: clean-connector

.PHONY: connector install-connector clean-connector
connector:
	$(MAKE) -C src/connector PG_CONFIG=$(PG_CONFIG)

install-connector: connector
	$(MAKE) -C src/connector PG_CONFIG=$(PG_CONFIG) install
	install -d $(DESTDIR)$(LINKDIR)
	ln -sf $(PG_BINDIR)/pg_cdp_connector $(DESTDIR)$(LINKDIR)/pg_cdp_connector

clean-connector:
	$(MAKE) -C src/connector clean

.PHONY: test demo bench deps
deps:
	scripts/deps.sh

test:
	scripts/test.sh

demo:
	scripts/demo.sh

bench:
	scripts/bench.sh

# One target per harness, so make test runs all three and reports each.
.PHONY: installcheck-regress installcheck-isolation installcheck-tap
installcheck-regress:
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)

installcheck-isolation:
	$(pg_isolation_regress_installcheck) $(ISOLATION_OPTS) $(ISOLATION)

installcheck-tap:
	$(prove_installcheck)

# PGXS does not track headers: every object depends on them all.
$(OBJS): $(wildcard src/*.h)

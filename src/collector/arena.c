/*-------------------------------------------------------------------------
 *
 * arena.c
 *	  A per-thread bump allocator for jansson while a request is handled.
 *
 * Parsing a batch and dumping its messages makes jansson allocate and free
 * a small block per JSON value: malloc and free took a quarter of the
 * collector's time under load.  While a request is handled, jansson's
 * allocations come from a per-thread arena instead, freeing is a no-op, and
 * the arena is rewound when the request ends; its first chunk stays, so the
 * pages stay mapped from one request to the next.  Outside a request (and
 * for blocks it did not hand out) it defers to malloc and free.
 *
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "collector.h"

#define CHUNK_SIZE (1024 * 1024)

typedef struct Chunk
{
	struct Chunk *next;
	size_t		size;
	size_t		used;
	char		data[];
} Chunk;

static __thread Chunk *chunks;
static __thread bool active;

static void *
arena_alloc(size_t n)
{
	Chunk	   *c = chunks;

	if (!active)
		return malloc(n);
	n = (n + 15) & ~(size_t) 15;
	if (c == NULL || c->used + n > c->size)
	{
		size_t		size = n > CHUNK_SIZE ? n : CHUNK_SIZE;

		c = malloc(sizeof(Chunk) + size);
		if (c == NULL)
			return NULL;
		c->size = size;
		c->used = 0;
		c->next = chunks;
		chunks = c;
	}
	c->used += n;
	return c->data + c->used - n;
}

static void
arena_free_fn(void *p)
{
	if (p == NULL)
		return;
	for (Chunk *c = chunks; c; c = c->next)
		if ((char *) p >= c->data && (char *) p < c->data + c->size)
			return;				/* rewound with the arena */
	free(p);
}

void
arena_init(void)
{
	json_set_alloc_funcs(arena_alloc, arena_free_fn);
}

/* Frees memory jansson handed out (json_dumps results): arena or malloc. */
void
arena_free(void *p)
{
	arena_free_fn(p);
}

void
arena_begin(void)
{
	active = true;
}

/* Rewind: keep the first (oldest) chunk, release the others. */
void
arena_end(void)
{
	Chunk	   *keep = NULL;

	active = false;
	while (chunks)
	{
		Chunk	   *next = chunks->next;

		if (next == NULL && chunks->size == CHUNK_SIZE)
			keep = chunks;
		else
			free(chunks);
		chunks = next;
	}
	chunks = keep;
	if (chunks)
		chunks->used = 0;
}

/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The per-database background worker and cdp.tick() (worker.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_WORKER_H
#define CDP_WORKER_H

#include "postgres.h"

#include "datatype/timestamp.h"

/*
 * A task does one bounded unit of work and returns how much it did; a
 * task that found more to do sets *more, and the worker starts another
 * round at once.  Subsystems register their tasks from their init
 * functions (cdp_register_task); cdp.tick() runs every task's run once,
 * in the caller's transaction.
 *
 * The worker runs run in a transaction of its own, unless the task has
 * a drive: that one starts and commits its own transactions
 * (cdp_task_begin, cdp_task_commit), for work that spans several (the
 * inbox drain resolves in one and writes in the next).  release, if any,
 * runs after every drive, whether it failed or not, and when the process
 * exits.
 *
 * next_due, if any, tells the worker when the task next has work that only
 * time makes due (a journey's wait): the worker calls it after a run that
 * found no more to do, in the run's transaction, and sleeps no longer than
 * until then.  It returns DT_NOEND when the task knows of no such work.
 * Work made due by other backends wakes the worker through its latch
 * (cdp_wake_worker_at_commit).
 */
typedef struct CdpTask
{
	const char *name;
	int64		(*run) (bool *more);
	int64		(*drive) (int slot, bool *more);
	void		(*release) (int slot);
	TimestampTz (*next_due) (void);
	bool		helpers;		/* the worker's helpers run it too */
} CdpTask;

extern void cdp_worker_init(void);
extern void cdp_register_task(const CdpTask *task);
extern bool cdp_task_begin(bool async_commit);
extern void cdp_task_commit(void);

#endif							/* CDP_WORKER_H */

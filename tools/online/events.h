/* SPDX-License-Identifier: MIT */
/*
 * imgserve's events: what happens to a served image, as one JSON object a
 * line, streamed to the subscribers of the control socket ("events",
 * control.h), appended to the run directory's log (RUNDIR/log) and
 * written to standard error (the journal under systemd; once when
 * standard error is that log, as with -d).
 *
 * An event: {"schema":1,"seq":N,"time":"YYYY-MM-DDTHH:MM:SS.mmmZ",
 * "image":PATH,"event":TYPE, FIELDS...} (tools/schema/imgctl.json,
 * $defs/event; imgctl(1) lists the types and their fields).  seq counts
 * the daemon's events from 1: a subscriber sees them in that order.
 *
 * Nobody waits for a subscriber: event_emit only queues (EVENTS_QUEUE
 * lines per subscriber) and one thread writes the queues out on
 * non-blocking sockets.  When a subscriber's queue is full, its events
 * are dropped and counted, and the next one that fits is preceded by
 * {"event":"lost","count":N}.
 */
#ifndef TOOLS_ONLINE_EVENTS_H
#define TOOLS_ONLINE_EVENTS_H

#include <stdint.h>

struct json_out;

#define EVENTS_QUEUE       256    /* lines queued per subscriber */
#define EVENTS_MAX_SUBS    64     /* subscribers at once */
#define EVENTS_SNDBUF      32768  /* a subscriber's socket send buffer */
#define EVENTS_BURST_MS    1000   /* io_error: one event a burst (below) */
#define EVENTS_FLUSH_MS    2000   /* events_stop: time left to subscribers */

/* event types (the "event" key) */
#define EV_LOW_SPACE    "low_space"     /* host space below the low-water mark */
#define EV_SPACE_OK     "space_ok"      /* back above it */
#define EV_IO_ERROR     "io_error"      /* the host failed a request */
#define EV_FS_ERROR     "fs_error"      /* the filesystem inside reported an error */
#define EV_COMPACTED    "compacted"
#define EV_SNAPSHOT     "snapshot"
#define EV_MERGED       "merged"
#define EV_RESIZED      "resized"
#define EV_PAUSED       "paused"        /* requests held (the host is full) */
#define EV_RESUMED      "resumed"
#define EV_STOPPING     "stopping"      /* the daemon stops: the last event */
#define EV_LOST         "lost"          /* a subscriber's queue overflowed */

/* The fields of event_emit: pairs made by these macros, ended by EV_END:
 *   event_emit(EV_PAUSED, EV_STR("reason", "nospace"), EV_U64("held", n), EV_END);
 * EV_STR's value may be NULL (null). */
enum { EVF_END, EVF_STR, EVF_U64, EVF_BOOL };
#define EV_STR(k, v)   EVF_STR, (const char *)(k), (const char *)(v)
#define EV_U64(k, v)   EVF_U64, (const char *)(k), (uint64_t)(v)
#define EV_BOOL(k, v)  EVF_BOOL, (const char *)(k), (int)!!(v)
#define EV_END         EVF_END

/* Starts the events of image (its canonical path), logged to log_path
 * (RUNDIR/log; NULL: none) and standard error, and the thread that writes
 * to subscribers.  0 or -errno (message printed). */
int events_start(const char *image, const char *log_path);

/* Emits one event (any thread; never waits for a subscriber).  Does
 * nothing before events_start and after events_stop. */
void event_emit(const char *type, ...);

/* A request failed with errno err (> 0) (io_errors and nospace_errors:
 * the totals, this one counted): an io_error event when it is the first
 * of a burst, i.e. no error for EVENTS_BURST_MS before it. */
void event_io_error(int err, uint64_t io_errors, uint64_t nospace_errors);

/* Adds the subscriber connected on fd (the "ok" reply already sent),
 * which is closed when it goes away or at events_stop.  0 or -errno
 * (fd closed: too many subscribers, out of memory, not started). */
int events_subscribe(int fd);

/* Gives the subscribers up to EVENTS_FLUSH_MS to take what is queued,
 * then closes them and stops the thread. */
void events_stop(void);

/* The events' status keys: subscribers, events, events_lost. */
void events_status_fields(struct json_out *j);

#endif

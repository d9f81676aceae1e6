/* SPDX-License-Identifier: MIT */
/*
 * QoS of one export: IOPS and bandwidth limits, read and write apart and
 * both together (total), enforced by token buckets in imgserve's request
 * path before the I/O.  Used by imgserve (the buckets), and by imgattach,
 * imgmount and imgctl (the options and the settings word).
 *
 * Buckets: one per limit that is set (iops and bps for read, write and
 * total; 0 = no limit).  A bucket fills at its rate up to its depth, the
 * rate times the burst (default QOS_BURST_MS_DEFAULT, 1 s), and starts
 * full.  A request of direction d (QOS_READ or QOS_WRITE) takes one token
 * of the iops buckets of d and of total and its length in bytes of the bps
 * buckets of d and of total.  It is admitted when none of its buckets is
 * in debt (tokens >= 0), then charged in full: a request bigger than a
 * bucket's depth is admitted and leaves the bucket in debt, which the
 * next requests wait out, so the long-run rate is the limit whatever the
 * request size.  Requests never fail for lack of tokens: they wait, in
 * arrival order per direction (a ticket queue), so a write limit never
 * holds reads back (unless a total limit is set).  A change of the limits
 * (qos_update) wakes the waiting requests, which are admitted under the
 * new limits; a debt is forgiven then, so a raised limit takes effect at
 * once.
 *
 * Settings word (the control protocol's "qos SETTINGS", imgserve --qos):
 * comma-separated KEY=VALUE, keys QOS_KEY_* (iops-read, iops-write, iops,
 * bps-read, bps-write, bps, burst); iops a count, bps a size (K, M, G
 * suffixes: parse_size), burst in seconds (a fraction is fine).  Keys not
 * named keep their value.
 */
#ifndef TOOLS_ONLINE_QOS_H
#define TOOLS_ONLINE_QOS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum { QOS_READ, QOS_WRITE, QOS_TOTAL, QOS_NDIR };

#define QOS_BURST_MS_DEFAULT 1000
#define QOS_BURST_MS_MAX     3600000     /* one hour */

#define QOS_KEY_IOPS_READ   "iops-read"
#define QOS_KEY_IOPS_WRITE  "iops-write"
#define QOS_KEY_IOPS        "iops"
#define QOS_KEY_BPS_READ    "bps-read"
#define QOS_KEY_BPS_WRITE   "bps-write"
#define QOS_KEY_BPS         "bps"
#define QOS_KEY_BURST       "burst"

struct qos_limits {
	uint64_t iops[QOS_NDIR];    /* requests a second; 0: no limit */
	uint64_t bps[QOS_NDIR];     /* bytes a second; 0: no limit */
	uint64_t burst_ms;          /* bucket depth: this many ms of the rate */
};

struct qos_bucket {
	double rate;                /* tokens a second; 0: no limit */
	double depth;
	double tokens;              /* < 0: in debt */
};

struct qos {
	pthread_mutex_t lock;
	pthread_cond_t cond;        /* CLOCK_MONOTONIC */
	struct qos_limits lim;
	struct qos_bucket iops[QOS_NDIR], bps[QOS_NDIR];
	uint64_t last_ns;           /* the buckets' last refill */
	uint64_t ticket[2], serving[2];     /* per direction: arrival order */
	atomic_int limited[2];      /* a limit applies to the direction */
	atomic_uint_fast64_t waited, wait_ns;   /* requests that waited, how long */
};

/* ---- the buckets (no lock, no clock: the caller passes now, in ns) ----- */

/* The limits l (NULL: none) in force from now: depths recomputed, tokens
 * capped to them, debts forgiven; a bucket that had no limit starts full. */
void qos_set(struct qos *q, const struct qos_limits *l, uint64_t now);
/* A request of direction dir (QOS_READ, QOS_WRITE) of bytes bytes at now:
 * 0 when admitted (its tokens taken), else how many ns to wait before
 * asking again (nothing taken). */
uint64_t qos_admit(struct qos *q, int dir, uint64_t bytes, uint64_t now);

/* ---- imgserve's side ----------------------------------------------------- */

/* 0 or -errno (the mutex, the condition). */
int qos_init(struct qos *q, const struct qos_limits *l);
void qos_destroy(struct qos *q);
/* Waits (CLOCK_MONOTONIC) until the request is admitted; returns at once
 * when no limit applies to dir. */
void qos_charge(struct qos *q, int dir, uint64_t bytes);
/* New limits, in force at once: the waiting requests are woken. */
void qos_update(struct qos *q, const struct qos_limits *l);
void qos_get(struct qos *q, struct qos_limits *l);

/* The status keys of q (CTL_KEY_QOS_*, control.h) into j. */
struct json_out;
void qos_status_json(struct qos *q, struct json_out *j);
/* imgserve's "qos [SETTINGS]": applies settings (NULL: none) and returns
 * the reply line, the limits in force (malloc'd; NULL when out of memory). */
char *qos_command(struct qos *q, const char *settings);

/* ---- settings ---------------------------------------------------------- */

/* No limit, the default burst. */
void qos_limits_default(struct qos_limits *l);
/* Applies the settings word s to l.  0, or -EINVAL with the cause in err
 * (l may be half changed: parse into a copy). */
int qos_parse(const char *s, struct qos_limits *l, char *err, size_t errlen);
/* The settings word of l (every key), into buf.  0 or -ENAMETOOLONG. */
int qos_format(const struct qos_limits *l, char *buf, size_t len);
/* 1 if any limit is set. */
int qos_any(const struct qos_limits *l);

/* The command-line options of the limits, for imgserve, imgattach,
 * imgmount and imgctl: QOS_OPTIONS in the long options; qos_option takes
 * the option c (its argument in optarg): 1 taken, 0 not a QoS option,
 * -1 invalid (message printed through usage_error: return EXIT_USAGE). */
#define OPT_QOS_BASE 0x5100
#define QOS_OPTIONS \
	{ "iops-read",  required_argument, NULL, OPT_QOS_BASE + 0 }, \
	{ "iops-write", required_argument, NULL, OPT_QOS_BASE + 1 }, \
	{ "iops",       required_argument, NULL, OPT_QOS_BASE + 2 }, \
	{ "bps-read",   required_argument, NULL, OPT_QOS_BASE + 3 }, \
	{ "bps-write",  required_argument, NULL, OPT_QOS_BASE + 4 }, \
	{ "bps",        required_argument, NULL, OPT_QOS_BASE + 5 }, \
	{ "burst",      required_argument, NULL, OPT_QOS_BASE + 6 }, \
	{ "qos",        required_argument, NULL, OPT_QOS_BASE + 7 }
#define QOS_HELP \
	"      --iops-read N  --iops-write N  --iops N  QoS: requests a second\n" \
	"      --bps-read B  --bps-write B  --bps B  QoS: bytes a second (K, M, G)\n" \
	"      --burst SECONDS  --qos SETTINGS  QoS: burst (default 1); KEY=VALUE,...\n"
/* With optarg; *set is made 1 when an option was taken. */
int qos_option(int c, const char *arg, struct qos_limits *l, int *set);
/* The option c with its argument arg as a checked settings word
 * ("bps-write=2M") in buf, for a client that sends only what was named
 * (imgctl qos).  1, 0 (not a QoS option), -1 (invalid, printed). */
int qos_option_word(int c, const char *arg, char *buf, size_t len);

#endif

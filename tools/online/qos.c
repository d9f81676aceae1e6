/* SPDX-License-Identifier: MIT */
/* QoS of one export: token buckets and their settings; see qos.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common.h"
#include "control.h"
#include "qos.h"

#define NS 1000000000.0

static struct qos_bucket *bucket(struct qos *q, int bps, int d)
{
	return bps ? &q->bps[d] : &q->iops[d];
}

static void bucket_set(struct qos_bucket *b, uint64_t rate, uint64_t burst_ms)
{
	int was_limited = b->rate > 0;

	b->rate = (double)rate;
	b->depth = b->rate * (double)burst_ms / 1000.0;
	if (!rate)
		b->tokens = 0;
	else if (!was_limited || b->tokens > b->depth)
		b->tokens = b->depth;
	else if (b->tokens < 0)
		b->tokens = 0;       /* a debt is forgiven: the change is at once */
}

static void refill(struct qos *q, uint64_t now)
{
	double dt;

	if (now <= q->last_ns)
		return;
	dt = (double)(now - q->last_ns) / NS;
	q->last_ns = now;
	for (int k = 0; k < 2; k++)
		for (int d = 0; d < QOS_NDIR; d++) {
			struct qos_bucket *b = bucket(q, k, d);
			if (b->rate > 0) {
				b->tokens += b->rate * dt;
				if (b->tokens > b->depth)
					b->tokens = b->depth;
			}
		}
}

void qos_set(struct qos *q, const struct qos_limits *l, uint64_t now)
{
	struct qos_limits none;

	if (!l) {
		qos_limits_default(&none);
		l = &none;
	}
	refill(q, now);
	q->last_ns = now;
	q->lim = *l;
	for (int d = 0; d < QOS_NDIR; d++) {
		bucket_set(&q->iops[d], l->iops[d], l->burst_ms);
		bucket_set(&q->bps[d], l->bps[d], l->burst_ms);
	}
	for (int d = 0; d < 2; d++)
		atomic_store(&q->limited[d], l->iops[d] || l->bps[d] || l->iops[QOS_TOTAL] ||
			     l->bps[QOS_TOTAL]);
}

uint64_t qos_admit(struct qos *q, int dir, uint64_t bytes, uint64_t now)
{
	const int dirs[2] = { dir, QOS_TOTAL };
	double wait = 0;

	refill(q, now);
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < 2; i++) {
			struct qos_bucket *b = bucket(q, k, dirs[i]);
			if (b->rate > 0 && b->tokens < 0 && -b->tokens / b->rate > wait)
				wait = -b->tokens / b->rate;
		}
	if (wait > 0) {
		/* asked again after at most a minute (a huge debt at a low rate
		 * must not overflow the conversion) */
		if (wait > 60.0)
			wait = 60.0;
		return (uint64_t)(wait * NS) + 1;
	}
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < 2; i++) {
			struct qos_bucket *b = bucket(q, k, dirs[i]);
			if (b->rate > 0)
				b->tokens -= k ? (double)bytes : 1.0;
		}
	return 0;
}

/* ---- imgserve's side ----------------------------------------------------- */

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int qos_init(struct qos *q, const struct qos_limits *l)
{
	pthread_condattr_t ca;
	int r;

	memset(q, 0, sizeof(*q));
	if ((r = pthread_mutex_init(&q->lock, NULL)))
		return -r;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	r = pthread_cond_init(&q->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (r) {
		pthread_mutex_destroy(&q->lock);
		return -r;
	}
	qos_set(q, l, mono_ns());
	return 0;
}

void qos_destroy(struct qos *q)
{
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
}

void qos_charge(struct qos *q, int dir, uint64_t bytes)
{
	uint64_t t, wait, start = 0;

	if (!atomic_load(&q->limited[dir]))
		return;
	pthread_mutex_lock(&q->lock);
	t = q->ticket[dir]++;
	while (t != q->serving[dir]) {
		if (!start)
			start = mono_ns();
		pthread_cond_wait(&q->cond, &q->lock);
	}
	while ((wait = qos_admit(q, dir, bytes, mono_ns())) != 0) {
		uint64_t until = mono_ns() + wait;
		struct timespec ts = { .tv_sec = (time_t)(until / 1000000000u),
				       .tv_nsec = (long)(until % 1000000000u) };
		if (!start)
			start = mono_ns();
		pthread_cond_timedwait(&q->cond, &q->lock, &ts);
	}
	q->serving[dir]++;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	if (start) {
		atomic_fetch_add(&q->waited, 1);
		atomic_fetch_add(&q->wait_ns, mono_ns() - start);
	}
}

void qos_update(struct qos *q, const struct qos_limits *l)
{
	pthread_mutex_lock(&q->lock);
	qos_set(q, l, mono_ns());
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

void qos_get(struct qos *q, struct qos_limits *l)
{
	pthread_mutex_lock(&q->lock);
	*l = q->lim;
	pthread_mutex_unlock(&q->lock);
}

/* ---- settings ---------------------------------------------------------- */

void qos_limits_default(struct qos_limits *l)
{
	memset(l, 0, sizeof(*l));
	l->burst_ms = QOS_BURST_MS_DEFAULT;
}

int qos_any(const struct qos_limits *l)
{
	for (int d = 0; d < QOS_NDIR; d++)
		if (l->iops[d] || l->bps[d])
			return 1;
	return 0;
}

static const struct {
	const char *key;
	int bps, dir;
} keys[] = {
	{ QOS_KEY_IOPS_READ,  0, QOS_READ },
	{ QOS_KEY_IOPS_WRITE, 0, QOS_WRITE },
	{ QOS_KEY_IOPS,       0, QOS_TOTAL },
	{ QOS_KEY_BPS_READ,   1, QOS_READ },
	{ QOS_KEY_BPS_WRITE,  1, QOS_WRITE },
	{ QOS_KEY_BPS,        1, QOS_TOTAL },
	{ QOS_KEY_BURST,      0, -1 },
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

/* One KEY=VALUE of length n. */
static int parse_one(const char *s, size_t n, struct qos_limits *l, char *err, size_t errlen)
{
	char word[128], *eq;
	uint64_t v;
	int64_t ms;

	if (n >= sizeof(word) || !(eq = memchr(s, '=', n)))
		goto bad;
	memcpy(word, s, n);
	word[n] = 0;
	eq = word + (eq - s);
	*eq++ = 0;
	for (size_t i = 0; i < NKEYS; i++) {
		if (strcmp(word, keys[i].key))
			continue;
		if (keys[i].dir < 0) {
			if (parse_wait(eq, &ms) || ms < 0 || ms > QOS_BURST_MS_MAX) {
				snprintf(err, errlen, "invalid %s '%s' (seconds, at most %d)",
					 word, eq, QOS_BURST_MS_MAX / 1000);
				return -EINVAL;
			}
			l->burst_ms = (uint64_t)ms;
			return 0;
		}
		if (parse_size(eq, &v) || (!keys[i].bps && v > 100000000u) ||
		    v > (1ull << 50)) {
			snprintf(err, errlen, "invalid %s '%s' (%s)", word, eq,
				 keys[i].bps ? "bytes a second, K, M, G suffixes" : "requests a second");
			return -EINVAL;
		}
		if (keys[i].bps)
			l->bps[keys[i].dir] = v;
		else
			l->iops[keys[i].dir] = v;
		return 0;
	}
bad:
	snprintf(err, errlen, "invalid QoS setting '%.*s' (KEY=VALUE, KEY one of iops-read, "
		 "iops-write, iops, bps-read, bps-write, bps, burst)", (int)(n > 64 ? 64 : n), s);
	return -EINVAL;
}

int qos_parse(const char *s, struct qos_limits *l, char *err, size_t errlen)
{
	const char *p = s;
	int r;

	if (!*s) {
		snprintf(err, errlen, "empty QoS settings");
		return -EINVAL;
	}
	for (;;) {
		const char *c = strchr(p, ',');
		size_t n = c ? (size_t)(c - p) : strlen(p);
		if ((r = parse_one(p, n, l, err, errlen)) < 0)
			return r;
		if (!c)
			return 0;
		p = c + 1;
	}
}

int qos_format(const struct qos_limits *l, char *buf, size_t len)
{
	size_t off = 0;

	for (size_t i = 0; i < NKEYS; i++) {
		uint64_t v = keys[i].dir < 0 ? 0 : keys[i].bps ? l->bps[keys[i].dir] :
			     l->iops[keys[i].dir];
		int n = keys[i].dir < 0 ?
			snprintf(buf + off, len - off, "%s%s=%llu.%03llu", off ? "," : "", keys[i].key,
				 (unsigned long long)(l->burst_ms / 1000),
				 (unsigned long long)(l->burst_ms % 1000)) :
			snprintf(buf + off, len - off, "%s%s=%llu", off ? "," : "", keys[i].key,
				 (unsigned long long)v);
		if (n < 0 || (size_t)n >= len - off)
			return -ENAMETOOLONG;
		off += (size_t)n;
	}
	return 0;
}

int qos_option_word(int c, const char *arg, char *buf, size_t len)
{
	char err[256];
	struct qos_limits t;
	int n;

	if (c < OPT_QOS_BASE || c > OPT_QOS_BASE + 7)
		return 0;
	if (c != OPT_QOS_BASE + 7 && strchr(arg, ',')) {
		usage_error("invalid --%s '%s'", keys[c - OPT_QOS_BASE].key, arg);
		return -1;
	}
	n = c == OPT_QOS_BASE + 7 ? snprintf(buf, len, "%s", arg) :
	    snprintf(buf, len, "%s=%s", keys[c - OPT_QOS_BASE].key, arg);
	if (n < 0 || (size_t)n >= len) {
		usage_error("QoS settings too long: '%.64s'", arg);
		return -1;
	}
	qos_limits_default(&t);
	if (qos_parse(buf, &t, err, sizeof(err)) < 0) {
		usage_error("%s", err);
		return -1;
	}
	return 1;
}

int qos_option(int c, const char *arg, struct qos_limits *l, int *set)
{
	char word[256], err[256];
	int r = qos_option_word(c, arg, word, sizeof(word));

	if (r <= 0)
		return r;
	if (qos_parse(word, l, err, sizeof(err)) < 0) {
		usage_error("%s", err);
		return -1;
	}
	*set = 1;
	return 1;
}

/* ---- the control protocol (control.h) ------------------------------------ */

void qos_status_json(struct qos *q, struct json_out *j)
{
	struct qos_limits l;

	qos_get(q, &l);
	json_u64(j, CTL_KEY_QOS_IOPS_READ, l.iops[QOS_READ]);
	json_u64(j, CTL_KEY_QOS_IOPS_WRITE, l.iops[QOS_WRITE]);
	json_u64(j, CTL_KEY_QOS_IOPS, l.iops[QOS_TOTAL]);
	json_u64(j, CTL_KEY_QOS_BPS_READ, l.bps[QOS_READ]);
	json_u64(j, CTL_KEY_QOS_BPS_WRITE, l.bps[QOS_WRITE]);
	json_u64(j, CTL_KEY_QOS_BPS, l.bps[QOS_TOTAL]);
	json_u64(j, CTL_KEY_QOS_BURST_MS, l.burst_ms);
	json_u64(j, CTL_KEY_QOS_WAITED, atomic_load(&q->waited));
	json_u64(j, CTL_KEY_QOS_WAIT_MS, atomic_load(&q->wait_ns) / 1000000u);
}

char *qos_command(struct qos *q, const char *settings)
{
	struct qos_limits l;
	struct online_ok ok;
	char err[256];

	if (settings) {
		qos_get(q, &l);
		if (qos_parse(settings, &l, err, sizeof(err)) < 0)
			return online_error_reply(EINVAL, "%s (nothing was changed)", err);
		qos_update(q, &l);
	}
	if (online_ok_begin(&ok) < 0)
		return NULL;
	qos_status_json(q, &ok.j);
	return online_ok_end(&ok);
}

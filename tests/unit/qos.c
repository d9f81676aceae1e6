/* SPDX-License-Identifier: MIT */
/* The QoS token buckets of imgserve (tools/online/qos.c): rates held over
 * time with an injected clock (qos_admit takes "now"), bursts, big
 * requests charged by bytes, read and write apart, total, runtime changes,
 * the settings word; and the blocking side on the real clock (a change
 * wakes a waiting request). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../tools/common.h"
#include "../../tools/online/qos.h"
#include "../helpers/tassert.h"

#define SEC 1000000000ull

static struct qos_limits lim(const char *settings)
{
	struct qos_limits l;
	char err[256];

	qos_limits_default(&l);
	if (settings && qos_parse(settings, &l, err, sizeof(err)) < 0)
		T_FAIL("qos_parse(%s): %s", settings, err);
	return l;
}

/* Requests of bytes each, dir, issued back to back (each as soon as it is
 * admitted) from start for span ns of the fake clock: how many were
 * admitted.  *end: the clock at the end. */
static uint64_t run_for(struct qos *q, int dir, uint64_t bytes, uint64_t *now, uint64_t span)
{
	uint64_t n = 0, end = *now + span;

	while (*now < end) {
		uint64_t w = qos_admit(q, dir, bytes, *now);
		if (w)
			*now += w;
		else
			n++;
	}
	return n;
}

static void unlimited(void)
{
	struct qos q = { 0 };
	struct qos_limits l = lim(NULL);

	qos_set(&q, &l, 0);
	for (int i = 0; i < 100000; i++)
		T_EQ(qos_admit(&q, QOS_WRITE, 1 << 20, 5), 0);
	T_CHECK(!atomic_load(&q.limited[QOS_READ]) && !atomic_load(&q.limited[QOS_WRITE]));
	T_CHECK(!qos_any(&l));
}

static void iops_rate(void)
{
	struct qos q = { 0 };
	struct qos_limits l = lim("iops-write=100,burst=0");
	uint64_t now = 0, n;

	qos_set(&q, &l, now);
	n = run_for(&q, QOS_WRITE, 4096, &now, 10 * SEC);
	/* 100 a second for 10 s (+1: the first one finds the bucket at 0) */
	T_CHECK(n >= 999 && n <= 1002);
	if (n < 999 || n > 1002)
		T_ERROR("%llu admitted in 10 s at 100/s", (unsigned long long)n);
}

static void bps_big_requests(void)
{
	struct qos q = { 0 };
	struct qos_limits l = lim("bps-write=1M,burst=0");
	uint64_t now = 0, n, w;

	qos_set(&q, &l, now);
	/* 4 MiB requests against a bucket of no depth: admitted one by one,
	 * each leaving a 4 s debt */
	T_EQ(qos_admit(&q, QOS_WRITE, 4 << 20, now), 0);
	w = qos_admit(&q, QOS_WRITE, 4 << 20, now);
	T_CHECK(w > 4 * SEC - SEC / 100 && w < 4 * SEC + SEC / 100);
	n = run_for(&q, QOS_WRITE, 4 << 20, &now, 40 * SEC);
	/* 40 MiB in 40 s after the first request */
	T_CHECK(n >= 9 && n <= 11);
	if (n < 9 || n > 11)
		T_ERROR("%llu requests of 4 MiB in 40 s at 1 MiB/s", (unsigned long long)n);
}

static void burst(void)
{
	struct qos q = { 0 };
	struct qos_limits l = lim("iops-read=100,burst=2");
	uint64_t now = 0, n = 0, w;

	qos_set(&q, &l, now);      /* starts full: 2 s of the rate */
	while (qos_admit(&q, QOS_READ, 512, now) == 0)
		n++;
	T_EQ(n, 201);
	w = qos_admit(&q, QOS_READ, 512, now);
	T_CHECK(w > 0 && w <= SEC / 100 + 1);
	/* idle for an hour: the bucket holds 2 s again, no more */
	now += 3600 * SEC;
	n = 0;
	while (qos_admit(&q, QOS_READ, 512, now) == 0)
		n++;
	T_EQ(n, 201);
}

static void read_write_apart(void)
{
	struct qos q = { 0 };
	struct qos_limits l = lim("bps-write=1M,burst=0");
	uint64_t now = 0;

	qos_set(&q, &l, now);
	T_EQ(qos_admit(&q, QOS_WRITE, 8 << 20, now), 0);
	T_CHECK(qos_admit(&q, QOS_WRITE, 4096, now) > 0);
	/* the write debt holds no read back */
	for (int i = 0; i < 1000; i++)
		T_EQ(qos_admit(&q, QOS_READ, 1 << 20, now), 0);
	T_CHECK(!atomic_load(&q.limited[QOS_READ]) && atomic_load(&q.limited[QOS_WRITE]));
}

static void total(void)
{
	struct qos q = { 0 };
	struct qos_limits l = lim("iops=100,burst=0");
	uint64_t now = 0, n = 0, end = 10 * SEC;
	int dir = QOS_READ;

	qos_set(&q, &l, now);
	while (now < end) {
		uint64_t w = qos_admit(&q, dir, 4096, now);
		if (w) {
			now += w;
		} else {
			n++;
			dir = dir == QOS_READ ? QOS_WRITE : QOS_READ;
		}
	}
	T_CHECK(n >= 999 && n <= 1002);
	T_CHECK(atomic_load(&q.limited[QOS_READ]) && atomic_load(&q.limited[QOS_WRITE]));
}

static void runtime_change(void)
{
	struct qos q = { 0 };
	struct qos_limits l = lim("bps-write=1M,burst=0"), up = lim("bps-write=100M,burst=0");
	struct qos_limits off = lim(NULL), slow = lim("bps-write=1,burst=0");
	uint64_t now = 0, n;

	qos_set(&q, &l, now);
	T_EQ(qos_admit(&q, QOS_WRITE, 16 << 20, now), 0);
	T_CHECK(qos_admit(&q, QOS_WRITE, 4096, now) > 15 * SEC);
	/* a raised limit: the debt is forgiven, the new rate holds */
	now += SEC;
	qos_set(&q, &up, now);
	T_EQ(qos_admit(&q, QOS_WRITE, 4096, now), 0);
	n = run_for(&q, QOS_WRITE, 1 << 20, &now, 10 * SEC);
	T_CHECK(n >= 999 && n <= 1002);
	/* a huge debt at a low rate: asked again within a minute */
	qos_set(&q, &slow, now);
	T_EQ(qos_admit(&q, QOS_WRITE, 1ull << 50, now), 0);
	T_EQ(qos_admit(&q, QOS_WRITE, 1, now), 60 * SEC + 1);
	/* no limit at all */
	qos_set(&q, &off, now);
	T_EQ(qos_admit(&q, QOS_WRITE, 1ull << 40, now), 0);
	T_EQ(qos_admit(&q, QOS_WRITE, 1ull << 40, now), 0);
	T_CHECK(!atomic_load(&q.limited[QOS_WRITE]));
	/* and back: the bucket starts full */
	qos_set(&q, &l, now);
	T_EQ(qos_admit(&q, QOS_WRITE, 4096, now), 0);
}

static void settings(void)
{
	struct qos_limits l = lim(NULL), back = lim(NULL);
	char buf[512], err[256];

	T_EQ(l.burst_ms, QOS_BURST_MS_DEFAULT);
	T_OK(qos_parse("iops-read=10,iops-write=20,iops=30,bps-read=1K,bps-write=2M,bps=3G,"
		       "burst=0.25", &l, err, sizeof(err)));
	T_EQ(l.iops[QOS_READ], 10);
	T_EQ(l.iops[QOS_WRITE], 20);
	T_EQ(l.iops[QOS_TOTAL], 30);
	T_EQ(l.bps[QOS_READ], 1024);
	T_EQ(l.bps[QOS_WRITE], 2 << 20);
	T_EQ(l.bps[QOS_TOTAL], 3ull << 30);
	T_EQ(l.burst_ms, 250);
	T_OK(qos_format(&l, buf, sizeof(buf)));
	T_OK(qos_parse(buf, &back, err, sizeof(err)));
	T_CHECK(!memcmp(&l, &back, sizeof(l)));
	/* keys not named keep their value */
	T_OK(qos_parse("bps-write=0", &l, err, sizeof(err)));
	T_EQ(l.bps[QOS_WRITE], 0);
	T_EQ(l.iops[QOS_READ], 10);
	/* refusals */
	T_EQ(qos_parse("", &l, err, sizeof(err)), -EINVAL);
	T_EQ(qos_parse("iops", &l, err, sizeof(err)), -EINVAL);
	T_EQ(qos_parse("iops=x", &l, err, sizeof(err)), -EINVAL);
	T_EQ(qos_parse("iops=-1", &l, err, sizeof(err)), -EINVAL);
	T_EQ(qos_parse("speed=1", &l, err, sizeof(err)), -EINVAL);
	T_CHECK(strstr(err, "speed") != NULL);
	T_EQ(qos_parse("burst=99999", &l, err, sizeof(err)), -EINVAL);
	T_EQ(qos_parse("bps=1M,,", &l, err, sizeof(err)), -EINVAL);
	T_EQ(qos_format(&l, buf, 10), -ENAMETOOLONG);
}

/* ---- the blocking side, real clock --------------------------------------- */

static uint64_t mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

static void charge_waits(void)
{
	struct qos q;
	struct qos_limits l = lim("bps-write=10M,burst=0");
	uint64_t t0;

	T_OK(qos_init(&q, &l));
	t0 = mono();
	for (int i = 0; i < 4; i++)
		qos_charge(&q, QOS_WRITE, 1 << 20);
	/* 1 MiB free, then 3 x 100 ms */
	T_CHECK(mono() - t0 >= 280000000ull);
	T_CHECK(mono() - t0 < 2 * SEC);
	T_CHECK(atomic_load(&q.waited) >= 3);
	t0 = mono();
	qos_charge(&q, QOS_READ, 1 << 30);    /* no read limit: at once */
	T_CHECK(mono() - t0 < SEC / 10);
	qos_destroy(&q);
}

static void *lift(void *arg)
{
	struct qos_limits off = lim(NULL);

	usleep(200 * 1000);
	qos_update(arg, &off);
	return NULL;
}

static void change_wakes_waiter(void)
{
	struct qos q;
	struct qos_limits l = lim("bps-write=1M,burst=0");
	pthread_t t;
	uint64_t t0;

	T_OK(qos_init(&q, &l));
	qos_charge(&q, QOS_WRITE, 30 << 20);      /* 30 s of debt */
	T_OK(pthread_create(&t, NULL, lift, &q));
	t0 = mono();
	qos_charge(&q, QOS_WRITE, 4096);          /* until the limit goes */
	T_CHECK(mono() - t0 >= 150000000ull);
	T_CHECK(mono() - t0 < 5 * SEC);
	pthread_join(t, NULL);
	qos_destroy(&q);
}

static const struct t_case cases[] = {
	T_CASE(unlimited), T_CASE(iops_rate), T_CASE(bps_big_requests), T_CASE(burst),
	T_CASE(read_write_apart), T_CASE(total), T_CASE(runtime_change), T_CASE(settings),
	T_CASE(charge_waits), T_CASE(change_wakes_waiter),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}

/* SPDX-License-Identifier: MIT */
/* imgserve's events; see events.h. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common.h"
#include "events.h"

struct sub {
	int fd;
	char *q[EVENTS_QUEUE];     /* ring of lines, each ending in '\n' */
	unsigned head, n;
	size_t off;                /* bytes of q[head] already written */
	uint64_t lost;             /* dropped since the last "lost" line */
};

static struct {
	pthread_mutex_t lock;
	int started, stopping;
	char *image;
	int log_fd;                /* RUNDIR/log, or -1 (standard error is it) */
	int wake[2];               /* wakes the writer thread */
	pthread_t thread;
	struct sub *subs[EVENTS_MAX_SUBS];
	unsigned nsubs;
	uint64_t seq, lost_total;
	int64_t last_io_err_ms;    /* event_io_error's bursts */
} E = { .lock = PTHREAD_MUTEX_INITIALIZER, .log_fd = -1, .wake = { -1, -1 },
	.last_io_err_ms = -1 };

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake_writer(void)
{
	char c = 1;

	if (E.wake[1] >= 0 && write(E.wake[1], &c, 1) < 0) {
		/* the pipe is full: the thread is awake already */
	}
}

/* "{"schema":1,"seq":N,"time":...,"image":...,"event":type" (no closing
 * brace) into f. */
static void line_head(FILE *f, uint64_t seq, const char *type)
{
	struct timespec ts;
	struct tm tm;
	char t[64];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(f, "{\"schema\":%d,\"seq\":%llu,\"time\":\"%s.%03ldZ\",\"image\":", JSON_SCHEMA_VERSION,
		(unsigned long long)seq, t, ts.tv_nsec / 1000000);
	json_escape(f, E.image);
	fputs(",\"event\":", f);
	json_escape(f, type);
}

/* Queues line (its own copy) for s, after a "lost" line when events
 * were dropped; E.lock held. */
static void sub_push(struct sub *s, const char *line, uint64_t seq)
{
	if (s->lost && s->n + 2 <= EVENTS_QUEUE) {
		char *m = NULL;
		size_t ml = 0;
		FILE *f = open_memstream(&m, &ml);
		if (f) {
			line_head(f, seq, EV_LOST);
			fprintf(f, ",\"count\":%llu}\n", (unsigned long long)s->lost);
			if (fclose(f) == 0 && m) {
				s->q[(s->head + s->n++) % EVENTS_QUEUE] = m;
				s->lost = 0;
			} else {
				free(m);
			}
		}
	}
	char *c = s->n < EVENTS_QUEUE && !s->lost ? strdup(line) : NULL;
	if (!c) {
		s->lost++;
		E.lost_total++;
		return;
	}
	s->q[(s->head + s->n++) % EVENTS_QUEUE] = c;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* After detach_stdio (-d), standard error may have become the log. */
static void check_stderr(void)
{
	struct stat a, b;

	if (E.log_fd >= 0 && fstat(E.log_fd, &a) == 0 && fstat(2, &b) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
		close(E.log_fd);
		E.log_fd = -1;
	}
}

static void emit_v(const char *type, va_list ap)
{
	char *line = NULL;
	size_t len = 0;
	FILE *f;
	int k;

	pthread_mutex_lock(&E.lock);
	if (!E.started || E.stopping == 2)
		goto out;
	if (!(f = open_memstream(&line, &len)))
		goto out;
	line_head(f, ++E.seq, type);
	while ((k = va_arg(ap, int)) != EVF_END) {
		const char *key = va_arg(ap, const char *);
		fputc(',', f);
		json_escape(f, key);
		fputc(':', f);
		if (k == EVF_STR) {
			const char *v = va_arg(ap, const char *);
			if (v)
				json_escape(f, v);
			else
				fputs("null", f);
		} else if (k == EVF_U64) {
			fprintf(f, "%llu", (unsigned long long)va_arg(ap, uint64_t));
		} else {
			fputs(va_arg(ap, int) ? "true" : "false", f);
		}
	}
	fputs("}\n", f);
	if (fclose(f) || !line)
		goto out;
	/* where an operator looks: the run directory's log, standard error
	 * (once when that is the log), as "PROG: event: JSON" */
	check_stderr();
	fprintf(stderr, "%s: event: %s", progname, line);
	fflush(stderr);
	if (E.log_fd >= 0) {
		char *l = NULL;
		if (asprintf(&l, "%s: event: %s", progname, line) >= 0) {
			write_all(E.log_fd, l, strlen(l));
			free(l);
		}
	}
	for (unsigned i = 0; i < E.nsubs; i++)
		sub_push(E.subs[i], line, E.seq);
	if (E.nsubs)
		wake_writer();
out:
	pthread_mutex_unlock(&E.lock);
	free(line);
}

void event_emit(const char *type, ...)
{
	va_list ap;

	va_start(ap, type);
	emit_v(type, ap);
	va_end(ap);
}

void event_io_error(int err, uint64_t io_errors, uint64_t nospace_errors)
{
	int64_t now = mono_ms(), prev;

	pthread_mutex_lock(&E.lock);
	prev = E.last_io_err_ms;
	E.last_io_err_ms = now;
	pthread_mutex_unlock(&E.lock);
	if (prev >= 0 && now - prev < EVENTS_BURST_MS)
		return;
	event_emit(EV_IO_ERROR, EV_STR("error", strerrorname_np(err) ? strerrorname_np(err) : "EIO"),
		   EV_STR("message", strerror(err)), EV_U64("io_errors", io_errors),
		   EV_U64("nospace_errors", nospace_errors), EV_END);
}

static void sub_free(struct sub *s)
{
	while (s->n) {
		free(s->q[s->head]);
		s->head = (s->head + 1) % EVENTS_QUEUE;
		s->n--;
	}
	close(s->fd);
	free(s);
}

/* Writes what s has queued without waiting.  0, or -1 when it is gone. */
static int sub_flush(struct sub *s)
{
	while (s->n) {
		const char *l = s->q[s->head];
		size_t len = strlen(l);
		ssize_t w = send(s->fd, l + s->off, len - s->off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (w <= 0)
			return -1;
		s->off += (size_t)w;
		if (s->off == len) {
			free(s->q[s->head]);
			s->head = (s->head + 1) % EVENTS_QUEUE;
			s->n--;
			s->off = 0;
		}
	}
	return 0;
}

/* The writer: waits for queued lines, writable sockets and subscribers
 * that hang up; at events_stop, flushes for EVENTS_FLUSH_MS at most. */
static void *writer_main(void *arg)
{
	struct pollfd p[EVENTS_MAX_SUBS + 1];
	int64_t deadline = -1;

	(void)arg;
	for (;;) {
		unsigned n, i, pending = 0;
		int timeout = -1;

		pthread_mutex_lock(&E.lock);
		for (i = 0; i < E.nsubs;) {
			struct sub *s = E.subs[i];
			if (sub_flush(s) < 0) {
				sub_free(s);
				E.subs[i] = E.subs[--E.nsubs];
				continue;
			}
			pending += s->n;
			i++;
		}
		if (E.stopping && deadline < 0)
			deadline = mono_ms() + EVENTS_FLUSH_MS;
		if (E.stopping && (!pending || mono_ms() >= deadline)) {
			for (i = 0; i < E.nsubs; i++)
				sub_free(E.subs[i]);
			E.nsubs = 0;
			pthread_mutex_unlock(&E.lock);
			return NULL;
		}
		p[0] = (struct pollfd){ .fd = E.wake[0], .events = POLLIN };
		for (i = 0, n = 1; i < E.nsubs; i++, n++)
			p[n] = (struct pollfd){ .fd = E.subs[i]->fd,
						.events = POLLIN | POLLRDHUP |
							  (E.subs[i]->n ? POLLOUT : 0) };
		pthread_mutex_unlock(&E.lock);
		if (deadline >= 0)
			timeout = (int)(deadline - mono_ms() > 0 ? deadline - mono_ms() : 0);
		if (poll(p, n, timeout) < 0 && errno != EINTR)
			usleep(10000);
		if (p[0].revents & POLLIN) {
			char buf[256];
			while (read(E.wake[0], buf, sizeof(buf)) > 0)
				;
		}
		/* a subscriber sends nothing: what it sends is read and
		 * dropped; end of file or a hang-up removes it */
		pthread_mutex_lock(&E.lock);
		for (i = 1; i < n; i++) {
			if (!(p[i].revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)))
				continue;
			for (unsigned k = 0; k < E.nsubs; k++) {
				struct sub *s = E.subs[k];
				char buf[256];
				ssize_t r;
				if (s->fd != p[i].fd)
					continue;
				r = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
				if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR) ||
				    (p[i].revents & (POLLHUP | POLLERR | POLLRDHUP))) {
					sub_free(s);
					E.subs[k] = E.subs[--E.nsubs];
				}
				break;
			}
		}
		pthread_mutex_unlock(&E.lock);
	}
}

int events_start(const char *image, const char *log_path)
{
	int r;

	if (!(E.image = strdup(image)))
		return -ENOMEM;
	if (pipe2(E.wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		r = -errno;
		errmsg("cannot start the events: %s", strerror(-r));
		return r;
	}
	if (log_path) {
		E.log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		check_stderr();
	}
	if ((r = pthread_create(&E.thread, NULL, writer_main, NULL))) {
		errmsg("cannot start the events thread: %s", strerror(r));
		return -r;
	}
	pthread_mutex_lock(&E.lock);
	E.started = 1;
	pthread_mutex_unlock(&E.lock);
	return 0;
}

int events_subscribe(int fd)
{
	struct sub *s = NULL;
	int r = 0;

	pthread_mutex_lock(&E.lock);
	check_stderr();
	if (!E.started || E.stopping)
		r = -ESHUTDOWN;
	else if (E.nsubs >= EVENTS_MAX_SUBS)
		r = -EUSERS;
	else if (!(s = calloc(1, sizeof(*s))))
		r = -ENOMEM;
	if (r == 0) {
		/* what the socket holds beyond the queue: bounded too */
		int sndbuf = EVENTS_SNDBUF;
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
		s->fd = fd;
		E.subs[E.nsubs++] = s;
		wake_writer();
	}
	pthread_mutex_unlock(&E.lock);
	if (r)
		close(fd);
	return r;
}

void events_stop(void)
{
	pthread_mutex_lock(&E.lock);
	if (!E.started) {
		pthread_mutex_unlock(&E.lock);
		return;
	}
	E.stopping = 1;
	wake_writer();
	pthread_mutex_unlock(&E.lock);
	pthread_join(E.thread, NULL);
	pthread_mutex_lock(&E.lock);
	E.stopping = 2;
	E.started = 0;
	if (E.log_fd >= 0)
		close(E.log_fd);
	E.log_fd = -1;
	close(E.wake[0]);
	close(E.wake[1]);
	E.wake[0] = E.wake[1] = -1;
	free(E.image);
	E.image = NULL;
	pthread_mutex_unlock(&E.lock);
}

void events_status_fields(struct json_out *j)
{
	pthread_mutex_lock(&E.lock);
	json_u64(j, "event_subscribers", E.nsubs);
	json_u64(j, "events", E.seq);
	json_u64(j, "events_lost", E.lost_total);
	pthread_mutex_unlock(&E.lock);
}

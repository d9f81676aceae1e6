/* SPDX-License-Identifier: MIT */
/*
 * The control protocol of imgserve's socket: the one description shared
 * by imgserve (the server) and every client (imgctl; imgattach, imgmount,
 * imgdetach, imgumount through daemon.h; growimg, shrinkimg, compact,
 * imgsnap).  Every word of the protocol is spelled here, once.
 *
 * Socket: RUNDIR/ctl (CTL_SOCKET, online_ctl_path; RUNDIR: rundir.h), a
 * Unix stream socket of mode 0600, one request per connection, one
 * connection at a time.
 *
 * Request: one line of at most CTL_LINE_MAX - 1 bytes (merge BASE is a
 * full path), words separated by spaces or tabs: a command of
 * online_commands and its arguments, "status", "grow SIZE", "shrink SIZE
 * [discard-data]", "compact [no-zero-detect]", "snapshot [NAME]", "merge
 * [BASE]", "qos [SETTINGS]", "events", "low-water BYTES|PCT%", "resume",
 * "on-nospace POLICY" or "stop".  imgserve takes from online_commands which commands
 * a read-only daemon refuses, clients such as imgctl what to check.  The
 * server waits CTL_READ_TIMEOUT_S seconds at most for the line.
 *
 * Reply: one line, "ok" (CTL_OK) followed by a space and one flat JSON
 * object (online_reply_parse; CTL_KEY_* name the keys clients read), or
 * "error ERRNO message" (CTL_ERROR).
 *
 * "events" (ONLINE_CMD_STREAM) keeps the connection: after its "ok" line
 * come the daemon's events, one JSON object a line (online/events.h), until
 * the daemon stops (its last event is "stopping") or the client closes
 * the connection; the socket then takes the next request at once (the
 * events go out from another thread).  online_subscribe is its client.
 */
#ifndef TOOLS_ONLINE_CONTROL_H
#define TOOLS_ONLINE_CONTROL_H

#include <stdint.h>
#include <stdio.h>

#include "rundir.h"

#define CTL_SOCKET          "ctl"
#define CTL_LINE_MAX        (PATH_MAX + 64)
#define CTL_READ_TIMEOUT_S  10

/* commands (online_commands) and their argument words */
#define CTL_STATUS          "status"
#define CTL_GROW            "grow"
#define CTL_SHRINK          "shrink"
#define CTL_COMPACT         "compact"
#define CTL_SNAPSHOT        "snapshot"
#define CTL_MERGE           "merge"
#define CTL_STOP            "stop"
#define CTL_QOS             "qos"       /* qos [SETTINGS]: online/qos.h */
#define CTL_EVENTS          "events"
#define CTL_LOW_WATER       "low-water"         /* low-water BYTES|PCT% (0: none) */
#define CTL_RESUME          "resume"            /* retry the requests held on a full host */
#define CTL_ON_NOSPACE      "on-nospace"        /* on-nospace pause|error|pause:SECONDS */
#define CTL_DISCARD_DATA    "discard-data"      /* shrink SIZE discard-data */
#define CTL_NO_ZERO_DETECT  "no-zero-detect"    /* compact no-zero-detect */

/* replies */
#define CTL_OK              "ok"
#define CTL_ERROR           "error"
/* keys of the "ok" objects that clients read: status (and snapshot and
 * merge, which add their own key to the status) */
#define CTL_KEY_PID         "pid"
#define CTL_KEY_IMAGE       "image"
#define CTL_KEY_EXPORT      "export"
#define CTL_KEY_OPEN        "open"
#define CTL_KEY_VIRTUAL_SIZE "virtual_size"
#define CTL_KEY_DISK_USAGE  "disk_usage"
#define CTL_KEY_READS       "reads"
#define CTL_KEY_WRITES      "writes"
#define CTL_KEY_IO_ERRORS   "io_errors"
#define CTL_KEY_SNAPSHOT    "snapshot"
#define CTL_KEY_MERGED_INTO "merged_into"
/* status and qos: the export's QoS limits (online/qos.h; 0: no limit)
 * and the requests that waited for them */
#define CTL_KEY_QOS_IOPS_READ  "qos_iops_read"
#define CTL_KEY_QOS_IOPS_WRITE "qos_iops_write"
#define CTL_KEY_QOS_IOPS       "qos_iops"
#define CTL_KEY_QOS_BPS_READ   "qos_bps_read"
#define CTL_KEY_QOS_BPS_WRITE  "qos_bps_write"
#define CTL_KEY_QOS_BPS        "qos_bps"
#define CTL_KEY_QOS_BURST_MS   "qos_burst_ms"
#define CTL_KEY_QOS_WAITED     "qos_waited"
#define CTL_KEY_QOS_WAIT_MS    "qos_wait_ms"
/* the host out of space (imgserve --on-nospace) */
#define CTL_KEY_NOSPACE_POLICY "nospace_policy"
#define CTL_KEY_PAUSED      "paused"
#define CTL_KEY_HELD_REQUESTS "held_requests"
/* grow and shrink */
#define CTL_KEY_OLD_SIZE    "old_size"
#define CTL_KEY_NEW_SIZE    "new_size"
/* compact */
#define CTL_KEY_FILE_SIZE_BEFORE    "file_size_before"
#define CTL_KEY_FILE_SIZE_AFTER     "file_size_after"
#define CTL_KEY_DISK_USAGE_BEFORE   "disk_usage_before"
#define CTL_KEY_DISK_USAGE_AFTER    "disk_usage_after"
#define CTL_KEY_ZERO_CLUSTERS_FREED "zero_clusters_freed"
#define CTL_KEY_CLUSTERS_MOVED      "clusters_moved"

/* The socket of the run directory rundir into buf.  0, or -ENAMETOOLONG
 * when it fits in neither buf nor a sockaddr_un. */
int online_ctl_path(const char *rundir, char *buf, size_t len);

/* ---- the client side ---------------------------------------------------- */

/* Sends one command to the daemon and reads its answer.  0 with the JSON
 * object of "ok" in reply, or -errno with the daemon's message in reply
 * (or a message about the socket).  Nothing is printed. */
int online_request(const struct online_state *st, const char *cmd, char *reply, size_t len);

/* Extracts an unsigned number "key": N from a JSON text.  0 or -ENOENT. */
int online_json_u64(const char *json, const char *key, uint64_t *out);

/* online_request, waiting at most timeout_ms for the answer (-1: no
 * limit): -ETIMEDOUT (message in reply) when none came, as when the
 * daemon runs another command (one at a time: a compact or merge takes
 * its time). */
int online_request_timeout(const struct online_state *st, const char *cmd, char *reply,
			   size_t len, int timeout_ms);

/* Sends "events" and reads the "ok" line: the connected socket (its
 * events follow, one JSON object a line), or -errno with a message in err. */
int online_subscribe(const struct online_state *st, char *err, size_t len);

/* The commands of the control protocol (above), for clients (imgctl);
 * the list ends with a NULL name. */
#define ONLINE_CMD_WRITES 0x1u   /* changes the image: refused read-only */
#define ONLINE_CMD_RESIZE 0x2u   /* changes the size: online_refresh_size */
#define ONLINE_CMD_STOP   0x4u   /* stops the daemon */
#define ONLINE_CMD_STREAM 0x8u   /* the answer goes on: a stream of lines */
struct online_command {
	const char *name;
	const char *args;      /* synopsis of the arguments, "" when none */
	unsigned min_args, max_args;
	unsigned flags;
};
extern const struct online_command online_commands[];
/* The entry of name, or NULL. */
const struct online_command *online_command_find(const char *name);

/* ---- the server side (imgserve) ---------------------------------------- */

/* Listens on the socket path (a dead daemon's socket there is removed
 * first: the caller holds the image's lock).  The socket's fd, or -errno
 * (message printed). */
int online_ctl_listen(const char *path);

/* Reads the request of the connection c into line (len: CTL_LINE_MAX),
 * without its line end ("" when none came in time). */
void online_ctl_read(int c, char *line, size_t len);

/* Sends the reply line (its line end added when missing). */
void online_ctl_write(int c, const char *reply);

/* An "ok" reply: online_ok_begin, the object's members through j,
 * online_ok_end, which returns the line (malloc'd, the object on one line;
 * NULL when out of memory).  online_ok_begin: 0 or -ENOMEM. */
struct online_ok {
	char *text;
	size_t len;
	FILE *f;
	struct json_out j;
};
int online_ok_begin(struct online_ok *r);
char *online_ok_end(struct online_ok *r);
/* "ok {}": an "ok" reply without members (malloc'd, or NULL). */
char *online_ok_empty(void);

/* An "error" reply for errno err (> 0), the message formatted from fmt:
 * the line, malloc'd (NULL when out of memory). */
char *online_error_reply(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- replies, as clients read them -------------------------------------- */

/* The JSON object of an "ok" reply: one flat object whose values are
 * strings, unsigned numbers, true, false or null (what the daemon
 * sends).  Keys and strings are unescaped (UTF-8). */
enum online_value { ONLINE_STR, ONLINE_NUM, ONLINE_BOOL, ONLINE_NULL };
struct online_kv {
	char *key;
	enum online_value type;
	char *str;             /* ONLINE_STR */
	uint64_t num;          /* ONLINE_NUM; ONLINE_BOOL: 0 or 1 */
};
struct online_reply {
	struct online_kv *kv;
	size_t n;
};
/* 0, -EPROTO when json is not such an object, -ENOMEM. */
int online_reply_parse(const char *text, struct online_reply *r);
void online_reply_free(struct online_reply *r);
/* The value of key, or NULL. */
const struct online_kv *online_reply_get(const struct online_reply *r, const char *key);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * Control protocol: one line per connection, "status", "grow SIZE",
 * "shrink SIZE [discard-data]", "compact [no-zero-detect]", "snapshot
 * [NAME]", "merge [BASE]" or "stop" (online_commands below: imgserve
 * takes from it which commands a read-only daemon refuses, clients such
 * as imgctl what to check); one line back, "ok" followed by a space and a
 * JSON object (online_reply_parse), or "error ERRNO message".
 */
#ifndef TOOLS_ONLINE_CONTROL_H
#define TOOLS_ONLINE_CONTROL_H

#include <stdint.h>

#include "rundir.h"

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

/* The commands of the control protocol (above), for clients (imgctl);
 * the list ends with a NULL name. */
#define ONLINE_CMD_WRITES 0x1u   /* changes the image: refused read-only */
#define ONLINE_CMD_RESIZE 0x2u   /* changes the size: online_refresh_size */
#define ONLINE_CMD_STOP   0x4u   /* stops the daemon */
struct online_command {
	const char *name;
	const char *args;      /* synopsis of the arguments, "" when none */
	unsigned min_args, max_args;
	unsigned flags;
};
extern const struct online_command online_commands[];
/* The entry of name, or NULL. */
const struct online_command *online_command_find(const char *name);

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

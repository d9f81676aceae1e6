/* SPDX-License-Identifier: MIT */
/* LIBIMG_FAULT parsing (fault_env.h): test code, not in the library. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "fault_env.h"

static const struct {
	const char *name;
	unsigned mask;
} fault_ops[] = {
	{ "read", IMG_FAULT_READ }, { "write", IMG_FAULT_WRITE },
	{ "flush", IMG_FAULT_FLUSH }, { "punch", IMG_FAULT_PUNCH },
	{ "truncate", IMG_FAULT_TRUNCATE }, { "mutating", IMG_FAULT_MUTATING },
	{ "any", IMG_FAULT_ANY },
};

static const struct {
	const char *name;
	int err;
} fault_errnos[] = {
	{ "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT }, { "EROFS", EROFS },
	{ "ENOMEM", ENOMEM }, { "EFBIG", EFBIG },
};

/* Parses "op:N:ERRNO[,sticky][,partial][,drop]".  0 or -EINVAL. */
static int fault_parse(const char *spec, unsigned *mask, uint64_t *nth, int *err,
		       unsigned *flags)
{
	char buf[128], *field[3], *save = NULL, *opt, *end;
	size_t i, n = 0;
	unsigned long long v;

	if (strlen(spec) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, spec);
	opt = strchr(buf, ',');
	if (opt)
		*opt++ = 0;
	for (char *t = strtok_r(buf, ":", &save); t; t = strtok_r(NULL, ":", &save)) {
		if (n == 3)
			return -EINVAL;
		field[n++] = t;
	}
	if (n != 3)
		return -EINVAL;

	*mask = 0;
	for (i = 0; i < sizeof(fault_ops) / sizeof(fault_ops[0]); i++)
		if (!strcmp(field[0], fault_ops[i].name))
			*mask = fault_ops[i].mask;
	if (!*mask)
		return -EINVAL;

	errno = 0;
	v = strtoull(field[1], &end, 10);
	if (errno || *end || end == field[1] || v == 0 || field[1][0] == '-')
		return -EINVAL;
	*nth = v;

	*err = 0;
	for (i = 0; i < sizeof(fault_errnos) / sizeof(fault_errnos[0]); i++)
		if (!strcmp(field[2], fault_errnos[i].name))
			*err = fault_errnos[i].err;
	if (!*err) {
		errno = 0;
		v = strtoull(field[2], &end, 10);
		if (errno || *end || end == field[2] || v == 0 || v > 4095)
			return -EINVAL;
		*err = (int)v;
	}

	*flags = 0;
	save = NULL;
	for (char *t = opt ? strtok_r(opt, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
		if (!strcmp(t, "sticky"))
			*flags |= IMG_FAULT_STICKY;
		else if (!strcmp(t, "partial"))
			*flags |= IMG_FAULT_PARTIAL;
		else if (!strcmp(t, "drop"))
			*flags |= IMG_FAULT_DROP;
		else
			return -EINVAL;
	}
	return 0;
}

int imgi_io_fault_from_env(struct img_io *inner, struct img_io **out)
{
	const char *spec = getenv("LIBIMG_FAULT");
	unsigned mask, flags;
	uint64_t nth;
	int err, r;

	if (!spec || !*spec) {
		*out = inner;
		return 0;
	}
	if (fault_parse(spec, &mask, &nth, &err, &flags)) {
		imgi_set_error("LIBIMG_FAULT=%s: expected op:N:ERRNO[,sticky][,partial][,drop] with op "
			      "read|write|flush|punch|truncate|mutating|any", spec);
		return -EINVAL;
	}
	r = imgi_io_fault_new(inner, out);
	if (r)
		return r;
	imgi_io_fault_arm(*out, mask, nth, err, flags);
	return 0;
}

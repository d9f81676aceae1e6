/* SPDX-License-Identifier: MIT */
/* imgsnap: snapshots of an image as a chain of deltas (offline, or through
 * imgserve's control socket while the image is served). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "online/control.h"

enum { OPT_NAME = 256, OPT_ALLOW_BACKING_PATH, OPT_INTO, OPT_CLEAR };

static const struct option longopts[] = {
	{ "name",     required_argument, NULL, OPT_NAME },
	{ "into",     required_argument, NULL, OPT_INTO },
	{ "clear",    no_argument,       NULL, OPT_CLEAR },
	{ "unsafe",   no_argument,       NULL, 'u' },
	{ "allow-backing-path", no_argument, NULL, OPT_ALLOW_BACKING_PATH },
	{ "progress", no_argument,       NULL, 'p' },
	{ "json",     no_argument,       NULL, 'j' },
	{ "quiet",    no_argument,       NULL, 'q' },
	{ "help",     no_argument,       NULL, 'h' },
	{ "version",  no_argument,       NULL, 'V' },
	WAIT_OPTION,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s create [--name NAME] FILE | list FILE | merge [--into BASE] FILE\n"
	       "       %s rebase [-u] FILE NEWBASE|\"\" | flatten FILE\n"
	       "       %s template [--clear] FILE\n"
	       "Snapshots as a chain of thin deltas (served: create and merge go through\n"
	       "the daemon; create freezes the mounted filesystem, merge pauses I/O).\n"
	       "create:   FILE's contents become a read-only snapshot FILE.snapN (or NAME);\n"
	       "          FILE becomes an empty delta over it.\n"
	       "list:     FILE and the images below it, top first.\n"
	       "merge:    commit FILE into its own snapshot, which then replaces FILE; a\n"
	       "          clone's base only when named (--into), a template never.\n"
	       "rebase:   put FILE over NEWBASE (\"\": none), same contents (-u: reference).\n"
	       "flatten:  make the clone FILE standalone; its base is not touched.\n"
	       "template: mark FILE as a shared base no tool writes (--clear: unmark).\n"
	       "  --name NAME          the snapshot's file name (create)\n"
	       "  --into BASE          merge: the base FILE's chain resolves to, named\n"
	       "  --clear              template: remove the mark\n"
	       "  -u, --unsafe         rebase: change the reference only\n"
	       "  --allow-backing-path follow absolute or '..' backing references\n"
	       "  -p, --progress       merge, rebase, flatten: progress on stderr\n"
	       "  -j, --json           print the result as JSON (also with -q)\n"
	       WAIT_HELP
	       "  -q, --quiet          print nothing on success (-h, --help; -V, --version)\n"
	       "Exit status: 0 success, 1 error, 2 usage, 3 corrupt, 4 broken chain,\n"
	       "  5 not found, 8 no space, 75 in use.  See imgsnap(1), libimg(7).\n",
	       progname, progname, progname);
}

/* The JSON object of create, merge, rebase, flatten and template: schema,
 * command, filename, online, then key (a string, NULL: null) when given,
 * or "template" (a bool) for template.  Each command prints the same keys
 * whether FILE is served (online) or not. */
static void print_json_op(const char *cmd, const char *file, int online, const char *key,
			  const char *val, int template)
{
	struct json_out j;

	json_start(&j, stdout);
	json_doc_begin(&j);
	json_string(&j, "command", cmd);
	json_string(&j, "filename", file);
	json_bool(&j, "online", online);
	if (key)
		json_string(&j, key, val);
	else
		json_bool(&j, "template", template);
	json_object_end(&j);
	json_finish(&j);
}

static int do_list(const char *file, unsigned oflags)
{
	struct img *img;
	struct json_out j;
	char chain_msg[512];
	int r = 0, chain_err;

	{
		/* served: read without the lock the daemon holds */
		struct online_state os;
		if (access(file, F_OK) == 0 && online_state_load(file, &os) > 0)
			oflags |= IMG_OPEN_NOLOCK;
	}
	/* A broken chain: list what opens (the image alone), then say why
	 * the rest cannot be listed, and exit 4. */
	if ((r = open_image_degraded(file, oflags, &img, &chain_err, chain_msg,
				     sizeof(chain_msg))) < 0)
		return exit_status(r);
	if (json) {   /* -j -q too */
		json_start(&j, stdout);
		json_array_begin(&j, NULL);
	}
	for (struct img *p = img; p && !r; p = img_backing(p)) {
		struct img_info in;
		char ref[4096], b1[64], b2[64], e1[TEXT_ESCAPE_LEN(4096)], e2[TEXT_ESCAPE_LEN(4096)];
		ssize_t n;
		memset(&in, 0, sizeof(in));
		if ((r = img_info(p, &in)) < 0 || (n = img_backing_ref(p, ref, sizeof(ref))) < 0) {
			lib_errmsg(img_name(p), r < 0 ? r : -ERANGE);
			r = -1;
			break;
		}
		if (json) {
			json_doc_begin(&j);
			json_string(&j, "filename", p == img ? file : img_name(p));
			json_u64(&j, "depth", in.backing_depth);
			json_string(&j, "backing", n ? ref : NULL);
			json_u64(&j, "virtual_size", in.virtual_size);
			json_u64(&j, "allocated_clusters", in.allocated_clusters);
			json_u64(&j, "compressed_clusters", in.compressed_clusters);
			json_u64(&j, "zero_clusters", in.zero_clusters);
			json_u64(&j, "cluster_size", in.cluster_size);
			json_u64(&j, "disk_usage", in.disk_usage);
			json_bool(&j, "template", !!(in.ro_compat_features & IMG_FEATURE_RO_COMPAT_TEMPLATE));
			json_string(&j, "backing_chain_error", p == img && chain_err ? chain_msg : NULL);
			json_object_end(&j);
		} else if (!quiet) {
			printf("%s%s: %s virtual, %s used on the host%s%s%s\n", p == img ? "" : "  ",
			       text_escape(p == img ? file : img_name(p), e1, sizeof(e1)),
			       human_size(in.virtual_size, b1, sizeof(b1)),
			       human_size(in.disk_usage, b2, sizeof(b2)),
			       n ? ", over " : " (base)", text_escape(n ? ref : "", e2, sizeof(e2)),
			       in.ro_compat_features & IMG_FEATURE_RO_COMPAT_TEMPLATE ? " (template)" : "");
		}
	}
	if (json && !r) {
		json_array_end(&j);
		json_finish(&j);
	} else if (json) {
		json_discard(&j);   /* no half list */
	}
	if (close_image(file, img) < 0 || r)
		return EXIT_ERROR;
	if (chain_err) {
		char e1[TEXT_ESCAPE_LEN(1024)], e2[TEXT_ESCAPE_LEN(sizeof(chain_msg))];
		errmsg("%s: its backing chain cannot be opened: %s", text_escape(file, e1, sizeof(e1)),
		       text_escape(chain_msg, e2, sizeof(e2)));
		return EXIT_CHAIN;
	}
	return EXIT_OK;
}

/* The JSON string "key": "..." of a reply (no escapes expected in file
 * names we made) into buf. */
static void reply_string(const char *text, const char *key, char *buf, size_t len)
{
	char pat[64];
	const char *p, *e;

	snprintf(pat, sizeof(pat), "\"%s\": \"", key);
	buf[0] = 0;
	if (!(p = strstr(text, pat)))
		return;
	p += strlen(pat);
	e = strchr(p, '"');
	if (e && (size_t)(e - p) < len) {
		memcpy(buf, p, (size_t)(e - p));
		buf[e - p] = 0;
	}
}

/* create or merge while FILE is served: the daemon does it. */
static int online_op(const char *file, struct online_state *os, const char *cmd,
		     const char *name)
{
	char req[PATH_MAX + 64], reply[8192], out[4096];
	int r;

	if (!os->alive)
		return online_refuse_if_used(file, os), EXIT_ERROR;
	if (name && (strchr(name, ' ') || strchr(name, '\t') || strchr(name, '\n'))) {
		errmsg("%s: a name with blanks cannot be sent to the daemon", file);
		return EXIT_ERROR;
	}
	snprintf(req, sizeof(req), "%s%s%s", cmd, name ? " " : "", name ? name : "");
	r = online_request(os, req, reply, sizeof(reply));
	if (r < 0) {
		errmsg("%s: %s online: %s", file, cmd, reply);
		return exit_status(r);
	}
	reply_string(reply, !strcmp(cmd, CTL_SNAPSHOT) ? CTL_KEY_SNAPSHOT : CTL_KEY_MERGED_INTO, out,
		     sizeof(out));
	if (json) {   /* the keys of the offline command */
		if (!strcmp(cmd, CTL_SNAPSHOT))
			print_json_op("create", file, 1, "snapshot", out, 0);
		else
			print_json_op("merge", file, 1, "merged_into", out, 0);
	} else if (quiet) {
		/* nothing */
	} else if (!strcmp(cmd, CTL_SNAPSHOT)) {
		printf("%s: snapshot %s taken online; %s is now a delta over it\n", file, out, file);
	} else {
		printf("%s: merged into %s online, which is now %s\n", file, out, file);
	}
	return EXIT_OK;
}

static int run(int argc, char **argv)
{
	const char *cmd = NULL, *file = NULL, *arg2 = NULL, *name = NULL, *into = NULL;
	unsigned bflags = 0, oflags = 0;
	int c, r, npos = 0, unsafe = 0, want_progress = 0, clear = 0;
	struct tool_getopt g = { 0 };
	struct progress pr;

	tool_init(argc, argv);
	while ((c = tool_getopt(&g, argc, argv, "upjqhV", longopts)) != -1) {
		switch (c) {
		case 1:
			if (npos == 0)
				cmd = optarg;
			else if (npos == 1)
				file = optarg;
			else if (npos == 2)
				arg2 = optarg;
			else
				return usage_error("too many arguments");
			npos++;
			break;
		case OPT_NAME: name = optarg; break;
		case OPT_INTO: into = optarg; break;
		case OPT_CLEAR: clear = 1; break;
		case OPT_ALLOW_BACKING_PATH:
			bflags |= IMG_BACKING_ALLOW_PATH;
			oflags |= IMG_OPEN_ALLOW_BACKING_PATH;
			break;
		case 'u': unsafe = 1; break;
		case 'p': want_progress = 1; break;
		case 'j': json = 1; break;
		case 'q': quiet = 1; break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!cmd)
		return usage_error("expected a command: create, list, merge, rebase, flatten or template");
	if (!file)
		return usage_error("expected FILE");
	if (strcmp(cmd, "rebase") && arg2)
		return usage_error("too many arguments");
	if (name && strcmp(cmd, "create"))
		return usage_error("--name applies to create only");
	if (unsafe && strcmp(cmd, "rebase"))
		return usage_error("--unsafe applies to rebase only");
	if (into && strcmp(cmd, "merge"))
		return usage_error("--into applies to merge only");
	if (clear && strcmp(cmd, "template"))
		return usage_error("--clear applies to template only");
	progress_init(&pr, want_progress && !quiet);

	if (!strcmp(cmd, "list"))
		return do_list(file, oflags);
	if (!strcmp(cmd, "create") || !strcmp(cmd, "merge") || !strcmp(cmd, "rebase") ||
	    !strcmp(cmd, "flatten") || !strcmp(cmd, "template")) {
		struct online_state os;
		if (access(file, F_OK) == 0 && online_state_load(file, &os) > 0) {
			char full[PATH_MAX];
			if (!strcmp(cmd, "rebase") || !strcmp(cmd, "flatten") || !strcmp(cmd, "template"))
				return exit_status(online_refuse_if_used(file, &os));   /* 75 */
			if (bflags)
				return usage_error("--allow-backing-path: not while the image is served");
			if (into && !realpath(into, full)) {
				errmsg_err(into, -errno, "%s: %s", into, strerror(errno));
				return EXIT_ERROR;
			}
			/* the daemon has another working directory: the base
			 * goes by its full path */
			r = online_op(file, &os, !strcmp(cmd, "create") ? CTL_SNAPSHOT : CTL_MERGE,
				      !strcmp(cmd, "create") ? name : into ? full : NULL);
			/* the daemon merges and reports no progress: the end only */
			if (strcmp(cmd, "create"))
				progress_finish(&pr, r == EXIT_OK);
			return r;
		}
	}
	if (!strcmp(cmd, "template")) {
		if ((r = probe_image(file)) < 0)
			return exit_status(r);
		int64_t start = 0, waited = -1;
		while ((r = img_set_template(file, !clear)) == -EBUSY &&
		       lock_wait_again(&start, &waited))
			;
		if (r < 0) {
			lib_errmsg(file, r);
			return exit_status(r);
		}
		if (json)
			print_json_op("template", file, 0, NULL, NULL, !clear);
		else if (!quiet)
			printf("%s: %s\n", file, clear ? "no longer a template" :
			       "marked as a template: no tool writes it (imgsnap template --clear undoes it)");
		return EXIT_OK;
	}
	if (!strcmp(cmd, "flatten")) {
		struct img *img;
		/* the safe rebase to none: what FILE reads through its base
		 * is copied into it first; the base is only read.  A refusal
		 * comes before the open for writing, which marks the file. */
		if ((r = open_image(file, oflags | IMG_OPEN_NO_BACKING, &img)) < 0)
			return exit_status(r);
		{
			char ref[4096];
			r = (int)img_backing_ref(img, ref, sizeof(ref));
		}
		img_close(img);
		if (r == 0) {   /* done already: a re-run is a no-op (libimg(7)) */
			if (json)
				print_json_op("flatten", file, 0, "backing", NULL, 0);
			else if (!quiet)
				printf("%s: has no backing image: already standalone, nothing "
				       "to do\n", file);
			return EXIT_OK;
		}
		if ((r = open_image(file, IMG_OPEN_RDWR | oflags, &img)) < 0)
			return exit_status(r);
		r = img_set_backing(img, NULL, bflags, pr.enabled ? progress_cb : NULL, &pr);
		progress_finish(&pr, r == 0);
		if (r < 0) {
			lib_errmsg(file, r);
			img_close(img);
			return exit_status(r);
		}
		if (close_image(file, img) < 0)
			return EXIT_ERROR;
		if (json)
			print_json_op("flatten", file, 0, "backing", NULL, 0);
		else if (!quiet)
			printf("%s: now standalone (its base is unchanged)\n", file);
		return EXIT_OK;
	}
	if (!strcmp(cmd, "create")) {
		char snap[4096];
		if ((r = probe_image(file)) < 0)
			return exit_status(r);
		int64_t start = 0, waited = -1;
		/* a refusal of img_snapshot changes nothing: tried again */
		while ((r = img_snapshot(file, name, bflags, snap, sizeof(snap))) == -EBUSY &&
		       lock_wait_again(&start, &waited))
			;
		if (r < 0) {
			lib_errmsg(file, r);
			return exit_status(r);
		}
		if (json) {
			print_json_op("create", file, 0, "snapshot", snap, 0);
		} else if (!quiet) {
			printf("%s: snapshot %s taken; %s is now a delta over it\n", file, snap, file);
		}
		return EXIT_OK;
	}
	if (!strcmp(cmd, "merge")) {
		char ref[4096] = "";
		struct img *img;
		if ((r = open_image(file, IMG_OPEN_NO_BACKING | IMG_OPEN_NOLOCK | oflags, &img)) < 0)
			return exit_status(r);
		if (img_backing_ref(img, ref, sizeof(ref)) <= 0) {
			img_close(img);
			errmsg("%s: has no backing image to merge into", file);
			return EXIT_ERROR;
		}
		img_close(img);
		{
			/* a refusal (the top or the base in use) changes nothing */
			int64_t start = 0, waited = -1;
			while ((r = img_merge_into(file, into, bflags, pr.enabled ? progress_cb : NULL,
						   &pr)) == -EBUSY && lock_wait_again(&start, &waited))
				;
		}
		progress_finish(&pr, r == 0);
		if (r < 0) {
			lib_errmsg(file, r);
			return exit_status(r);
		}
		if (json)
			print_json_op("merge", file, 0, "merged_into", ref, 0);
		else if (!quiet)
			printf("%s: merged into %s, which is now %s\n", file, ref, file);
		return EXIT_OK;
	}
	if (!strcmp(cmd, "rebase")) {
		struct img *img;
		if (!arg2)
			return usage_error("expected FILE and NEWBASE (\"\" for none)");
		/* the new base checked on a read-only handle first: a refusal
		 * leaves the file as it was (the open for writing marks it) */
		if ((r = open_image(file, oflags | IMG_OPEN_NO_BACKING, &img)) < 0)
			return exit_status(r);
		r = img_set_backing(img, *arg2 ? arg2 : NULL, bflags | IMG_BACKING_CHECK_ONLY, NULL, NULL);
		if (r < 0) {
			lib_errmsg(file, r);
			img_close(img);
			return exit_status(r);
		}
		img_close(img);
		if ((r = open_image(file, IMG_OPEN_RDWR | oflags | (unsafe ? IMG_OPEN_NO_BACKING : 0), &img)) < 0)
			return exit_status(r);
		r = img_set_backing(img, *arg2 ? arg2 : NULL, bflags | (unsafe ? IMG_BACKING_UNSAFE : 0),
				    pr.enabled ? progress_cb : NULL, &pr);
		progress_finish(&pr, r == 0);
		if (r < 0) {
			lib_errmsg(file, r);
			img_close(img);
			return EXIT_ERROR;
		}
		if (close_image(file, img) < 0)
			return EXIT_ERROR;
		if (json)
			print_json_op("rebase", file, 0, "backing", *arg2 ? arg2 : NULL, 0);
		else if (!quiet)
			printf("%s: now %s%s\n", file, *arg2 ? "over " : "standalone", arg2);
		return EXIT_OK;
	}
	return usage_error("unknown command '%s' (create, list, merge, rebase, flatten or template)",
			   cmd);
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}

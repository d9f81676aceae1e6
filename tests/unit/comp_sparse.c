/* SPDX-License-Identifier: MIT */
/*
 * Issue 15 #14: the counts of compressed entries per host cluster cost what
 * the image holds, not the length of its file.  An image whose compressed
 * payloads are moved to host clusters scattered up to 2^42 bytes into a
 * sparse file (posix backend, a temp dir) opens within the allocator's
 * bitmap (8 MiB) and a few MiB more (a flat count per host cluster up to
 * the last would take 256 MiB more), and reads,
 * rewrites, img_check and compaction still work on it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libimg.h"
#include "format.h"
#include "internal.h"
#include "../helpers/procstat.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
#define NV 256u                        /* virtual clusters */
#define NFAR 64u                       /* payloads moved far */
#define FAR_END (1ull << 42)           /* the last one ends near here */

/* Generation 0 and 1 compress to a sector; 2 to more than half a cluster
 * (its first 60% does not compress), so each payload takes a host cluster. */
static void fill(uint8_t *b, uint64_t v, unsigned gen)
{
	uint64_t x = v * 0x9e3779b97f4a7c15ull + gen + 1;

	for (unsigned i = 0; i < CS; i++) {
		b[i] = (uint8_t)(v * 7 + gen * 13 + i / 512);
		if (gen == 2 && i < CS / 10 * 6) {
			x ^= x << 13; x ^= x >> 7; x ^= x << 17;
			b[i] = (uint8_t)x;
		}
	}
}

/* Far host cluster of the j-th moved payload: scattered, distinct, the
 * last one at the end. */
static uint64_t far_host(unsigned j)
{
	return FAR_END / CS - 1 - (uint64_t)(NFAR - 1 - j) * 1000003u;
}

static void check_clean(const char *path)
{
	struct img *img;
	struct img_check_result res;

	memset(&res, 0, sizeof(res));
	T_CHECK(img_open(path, IMG_OPEN_CHECK, &img) == 0);
	if (!img)
		return;
	T_CHECK(img_check(img, NULL, &res) == 0);
	T_CHECK(res.corruptions == 0 && res.leaks == 0 && res.incomplete == 0);
	img_close(img);
}

static void check_data(struct img *img, const unsigned *gen)
{
	uint8_t *want = malloc(CS), *got = malloc(CS);

	for (uint64_t v = 0; v < NV; v++) {
		fill(want, v, gen[v]);
		T_CHECK(img_pread(img, got, CS, v * CS) == (ssize_t)CS);
		if (memcmp(want, got, CS))
			T_ERROR("cluster %llu differs", (unsigned long long)v);
	}
	free(want);
	free(got);
}

/* The counts against a model: a pool of host clusters, half close
 * together (a dense window) and half scattered over 2^26 clusters (a
 * table), counted and dropped at random through comp_ref and
 * imgi_release_entry on a read-only handle of a memory image (nothing is
 * written); every count and the number of host clusters counted checked. */
#define POOL 4096u
static void counts_model(void)
{
	struct img_create_opts o = { .virtual_size = (uint64_t)NV * CS, .cluster_size = CS };
	struct img_io *io = NULL;
	struct img *img = NULL;
	static uint64_t key[POOL];
	static uint32_t model[POOL];
	uint64_t x = 88172645463325252ull, d0;

#define RND() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, x)
	T_CHECK(img_io_mem_new(NULL, 0, &io) == 0 && img_create_io(io, &o) == 0);
	T_CHECK(img_open_io(io, 0, &img) == 0);
	if (!img)
		return;
	d0 = img->g.data_cluster0 + 64;
	for (unsigned i = 0; i < POOL; i++)
		key[i] = i < POOL / 2 ? d0 + i : d0 + (1u << 20) + RND() % (1u << 26);
	for (unsigned i = POOL / 2; i < POOL; i++)      /* distinct keys */
		for (unsigned j = POOL / 2; j < i; j++)
			if (key[j] == key[i]) {
				key[i] = d0 + (1u << 20) + RND() % (1u << 26);
				j = POOL / 2 - 1;
			}
	for (unsigned phase = 0; phase < 4; phase++) {
		/* 0: the dense half only; 1, 2: everything; 3: drop all */
		unsigned span = phase == 0 ? POOL / 2 : POOL, ops = phase == 3 ? 0 : 200000;
		for (unsigned op = 0; op < ops; op++) {
			unsigned i = (unsigned)(RND() % span);
			uint64_t e = IMG_C_MAKE(key[i] * (CS / 512), 1);
			if (model[i] && RND() % 100 < (phase == 2 ? 70u : 40u)) {
				T_CHECK(imgi_release_entry(img, e) == 0);
				model[i]--;
			} else {
				T_CHECK(comp_ref(img, e) == 0);
				model[i]++;
			}
		}
		if (phase == 3)
			for (unsigned i = 0; i < POOL; i++)
				for (; model[i]; model[i]--)
					T_CHECK(imgi_release_entry(img, IMG_C_MAKE(key[i] * (CS / 512), 1)) == 0);
		{
			uint64_t hosts = 0;
			for (unsigned i = 0; i < POOL; i++) {
				hosts += model[i] != 0;
				if (cref_get(img, key[i]) != model[i]) {
					T_ERROR("phase %u: host cluster %llu counted %u, not %u", phase,
						(unsigned long long)key[i], cref_get(img, key[i]), model[i]);
					break;
				}
			}
			T_CHECK(cref_hosts(img) == hosts);
			T_CHECK(cref_get(img, d0 - 1) == 0 && cref_get(img, d0 + (1u << 27)) == 0);
			/* a window while they lie densely, a table once scattered */
			T_CHECK(phase == 0 ? img->cref.cap == 0 : phase == 3 || img->cref.cap > 0);
		}
	}
	/* all dropped: the next count starts a window again */
	T_CHECK(comp_ref(img, IMG_C_MAKE(d0 * (CS / 512), 1)) == 0);
	T_CHECK(img->cref.cap == 0 && cref_get(img, d0) == 1 && cref_hosts(img) == 1);
	img->npending = 0;
	img_close(img);
#undef RND
}

/* An image whose compressed payloads sit far apart in the host file:
 * reads, check, rewrites and compaction, and the open's memory. */
static void far_payloads(void)
{
	char dir[4096], path[4200];
	const char *tmp = getenv("TMPDIR");
	struct img_create_opts o = { .virtual_size = (uint64_t)NV * CS, .cluster_size = CS };
	struct imgi_header h;
	struct imgi_geom g;
	uint8_t slot[IMG_HEADER_SLOT], blk[IMG_BLOCK_SIZE], *buf = malloc(CS);
	uint64_t ents[IMG_ENTRIES_PER_BLOCK], seq;
	unsigned gen[NV] = { 0 };
	struct img *img = NULL;
	struct stat st;
	int fd, ws = 0;
	pid_t pid;

	snprintf(dir, sizeof(dir), "%s/libimg-comp-sparse.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		T_FAIL("mkdtemp %s: %s", dir, strerror(errno));
	snprintf(path, sizeof(path), "%s/far.img", dir);

	/* every cluster compressed (1 sector each: one host cluster) */
	T_CHECK(img_create(path, &o) == 0);
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	for (uint64_t v = 0; v < NV && img; v++) {
		fill(buf, v, 0);
		T_CHECK(img_write_compressed(img, buf, CS, v * CS) == 1);
	}
	if (img)
		img_close(img);

	/* move NFAR payloads, each to its own far host cluster */
	fd = open(path, O_RDWR);
	T_CHECK(fd >= 0 && pread(fd, slot, sizeof(slot), 0) == (ssize_t)sizeof(slot));
	T_CHECK(imgi_header_decode(slot, &h, NULL, 0) == 0 && imgi_header_validate(&h, &g, NULL, 0) == 0);
	T_CHECK(pread(fd, blk, sizeof(blk), (off_t)h.bat_offset) == (ssize_t)sizeof(blk));
	T_CHECK(imgi_bat_block_decode(blk, 0, ents, &seq, NULL, 0) == 0);
	for (unsigned j = 0; j < NFAR; j++) {
		uint64_t v = j * (NV / NFAR), e = ents[v], n = IMG_C_COUNT(e);
		uint64_t sct = far_host(j) * (CS / 512) + (j % 5);
		T_CHECK(IMG_E_STATE(e) == IMG_E_COMP);
		T_CHECK(pread(fd, buf, n * 512, (off_t)(IMG_C_SECTOR(e) * 512)) == (ssize_t)(n * 512));
		T_CHECK(pwrite(fd, buf, n * 512, (off_t)(sct * 512)) == (ssize_t)(n * 512));
		ents[v] = IMG_C_MAKE(sct, n);
	}
	imgi_bat_block_encode(0, seq, ents, blk);
	T_CHECK(pwrite(fd, blk, sizeof(blk), (off_t)h.bat_offset) == (ssize_t)sizeof(blk));
	T_CHECK(ftruncate(fd, (off_t)FAR_END) == 0);
	close(fd);
	T_CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == FAR_END);

	/* the open's memory, in a fresh process (high-water mark reset) */
#if defined(__SANITIZE_ADDRESS__)
	fprintf(stderr, "comp_sparse: open memory not measured under the address sanitizer\n");
	(void)pid; (void)ws;
#else
	pid = fork();
	if (pid == 0) {
		struct img *c;
		int cf = open("/proc/self/clear_refs", O_WRONLY);
		long r0, peak;
		if (cf < 0 || write(cf, "5", 1) != 1)
			_exit(77);
		close(cf);
		r0 = proc_status_kib("VmRSS:");
		if (img_open(path, 0, &c))
			_exit(2);
		peak = proc_status_kib("VmHWM:") - r0;
		img_close(c);
		fprintf(stderr, "comp_sparse: open of a %llu-byte file, payloads in %u far host clusters: "
			"peak growth %ld KiB\n", (unsigned long long)FAR_END, NFAR, peak);
		/* the allocator's bit per host cluster up to the last one
		 * mapped (FORMAT.md 2), and 8 MiB for the rest (buffers,
		 * code); the counts themselves are a few KiB */
		_exit(peak > (long)(FAR_END / CS / 8 / 1024) + 8 * 1024 ? 1 : 0);
	}
	T_CHECK(pid > 0 && waitpid(pid, &ws, 0) == pid && WIFEXITED(ws));
	if (WIFEXITED(ws) && WEXITSTATUS(ws) == 77)
		fprintf(stderr, "comp_sparse: no /proc/self/clear_refs (memory not measured)\n");
	else
		T_CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
#endif

	/* reads; a check finds nothing wrong */
	img = NULL;
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	if (!img)
		goto out;
	check_data(img, gen);
	img_close(img);
	check_clean(path);

	/* rewrites: half the far payloads replaced by compressed and plain
	 * writes; every other cluster rewritten compressed, one host cluster
	 * each (the counts grow well past what the open sized them for,
	 * and the two clusters first packed are dropped) */
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	if (!img)
		goto out;
	for (unsigned j = 0; j < NFAR; j += 2) {
		uint64_t v = j * (NV / NFAR);
		gen[v] = 1;
		fill(buf, v, 1);
		if (j % 4)
			T_CHECK(img_pwrite(img, buf, CS, v * CS) == (ssize_t)CS);
		else
			T_CHECK(img_write_compressed(img, buf, CS, v * CS) == 1);
	}
	for (uint64_t v = 0; v < NV; v++) {
		if (v % (NV / NFAR) == 0)
			continue;
		gen[v] = 2;
		fill(buf, v, 2);
		T_CHECK(img_write_compressed(img, buf, CS, v * CS) == 1);
	}
	T_CHECK(img_flush(img) == 0);
	check_data(img, gen);
	img_close(img);
	check_clean(path);

	/* compaction moves the rest down and truncates the file */
	{
		struct img_compact_stats cs;
		memset(&cs, 0, sizeof(cs));
		T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
		if (!img)
			goto out;
		T_CHECK(img_compact(img, NULL, &cs) == 0);
		check_data(img, gen);
		img_close(img);
		T_CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size < (64ull << 20));
		fprintf(stderr, "comp_sparse: compacted from %llu to %llu bytes\n",
			(unsigned long long)cs.file_size_before, (unsigned long long)st.st_size);
		check_clean(path);
		T_CHECK(img_open(path, 0, &img) == 0);
		if (img) {
			check_data(img, gen);
			img_close(img);
		}
	}
out:
	unlink(path);
	rmdir(dir);
	free(buf);
}

static const struct t_case cases[] = {
	T_CASE(counts_model), T_CASE(far_payloads),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}

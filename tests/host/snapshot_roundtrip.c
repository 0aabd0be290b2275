/* Snapshot round trip in one process, on this host's /dev/kvm, with the
 * self-checking dirty guest: snapshot it mid-workload, let the original run
 * to the end, then restore the snapshot lazily and eagerly. Every run must
 * end with "dirty: OK" and status 0; the restored runs must not start over.
 * Usage: snapshot_roundtrip DIRTY_ELF WORKDIR */
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "machine/machine.h"
#include "snapshot/snapshot.h"

struct runner {
	struct machine m;
	pthread_t thread;
	int status;
};

static void *run_thread(void *arg)
{
	struct runner *r = arg;
	struct terr err = { 0 };
	r->status = machine_run(&r->m, false, &err);
	return NULL;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return strdup("");
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	return strdup(buf);
}

static int failures;
#define CHECK(cond, ...)                                              \
	do {                                                          \
		if (!(cond)) {                                        \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                 \
			fprintf(stderr, "\n");                        \
			failures++;                                   \
		}                                                     \
	} while (0)

static void restore_and_check(const char *snap, const char *console, bool eager)
{
	unlink(console);
	struct terr err = { 0 };
	struct machine m;
	struct config *cfg;
	char o1[600], o2[64];
	snprintf(o1, sizeof(o1), "console.path=%s", console);
	snprintf(o2, sizeof(o2), "snapshot.eager=%s", eager ? "on" : "off");
	char *ov[] = { o1, o2 };
	int r = snapshot_restore(snap, ov, 2, &m, &cfg, &err);
	CHECK(r == 0, "restore (%s): %s", eager ? "eager" : "lazy", err.msg);
	if (r)
		return;
	int status = machine_run(&m, false, &err);
	machine_destroy(&m);
	config_free(cfg);
	char *out = slurp(console);
	CHECK(status == 0, "restored (%s) guest exited %d; console:\n%s", eager ? "eager" : "lazy",
	      status, out);
	CHECK(strstr(out, "dirty: OK"), "restored (%s) guest did not print OK:\n%s",
	      eager ? "eager" : "lazy", out);
	CHECK(!strstr(out, "dirty: start") && !strstr(out, "dirty: pass 1\n"),
	      "restored (%s) guest started over:\n%s", eager ? "eager" : "lazy", out);
	CHECK(strstr(out, "dirty: pass 400\n"), "restored (%s) guest did not finish its passes:\n%s",
	      eager ? "eager" : "lazy", out);
	free(out);
}

static uint64_t le64_at(int fd, off_t off)
{
	uint8_t b[8] = { 0 };
	uint64_t v = 0;
	if (pread(fd, b, 8, off) != 8)
		return 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

/* The RAM parts of two snapshot files hold the same bytes and the same data
 * extents (zero pages are holes in both). */
static void compare_ram(const char *a, const char *b)
{
	int fa = open(a, O_RDONLY), fb = open(b, O_RDONLY);
	CHECK(fa >= 0 && fb >= 0, "cannot open %s or %s", a, b);
	if (fa < 0 || fb < 0)
		goto out;
	uint64_t off = le64_at(fa, 48), len = le64_at(fa, 56);
	CHECK(off && len && off == le64_at(fb, 48) && len == le64_at(fb, 56),
	      "%s and %s declare other RAM parts", a, b);
	static uint8_t ba[1 << 20], bb[1 << 20];
	for (uint64_t pos = off; pos < off + len; pos += sizeof(ba)) {
		ssize_t na = pread(fa, ba, sizeof(ba), (off_t)pos), nb = pread(fb, bb, sizeof(bb), (off_t)pos);
		if (na != nb || na <= 0 || memcmp(ba, bb, (size_t)na)) {
			CHECK(0, "%s and %s differ in RAM near file offset %llu", a, b,
			      (unsigned long long)pos);
			goto out;
		}
	}
	/* data extents: where each file's next data and next hole are */
	int extents = 0;
	for (off_t pos = (off_t)off; pos < (off_t)(off + len); extents++) {
		off_t da = lseek(fa, pos, SEEK_DATA), db = lseek(fb, pos, SEEK_DATA);
		CHECK(da == db, "%s and %s: data from %lld at %lld and %lld", a, b, (long long)pos,
		      (long long)da, (long long)db);
		if (da != db || da < 0)
			break;
		off_t ha = lseek(fa, da, SEEK_HOLE), hb = lseek(fb, db, SEEK_HOLE);
		CHECK(ha == hb, "%s and %s: a hole from %lld at %lld and %lld", a, b, (long long)da,
		      (long long)ha, (long long)hb);
		if (ha != hb)
			break;
		pos = ha;
	}
	CHECK(extents > 1, "%s: RAM has no holes (%d data extents)", a, extents);
out:
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
}

/* Where O_DIRECT is known to work, the direct path must be the one taken. */
static bool direct_expected(const char *dir)
{
	struct statfs sf;
	if (statfs(dir, &sf) < 0)
		return false;
	return sf.f_type == EXT4_SUPER_MAGIC || sf.f_type == XFS_SUPER_MAGIC ||
	       sf.f_type == BTRFS_SUPER_MAGIC;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: snapshot_roundtrip DIRTY_ELF WORKDIR\n");
		return 2;
	}
	const char *elf = argv[1], *dir = argv[2];
	char snap[512], con0[512], con1[512], con2[512], snap2[512];
	/* a snapshot of a VM that is exiting is refused, checked at the end */
	snprintf(snap, sizeof(snap), "%s/rt.snap", dir);
	snprintf(snap2, sizeof(snap2), "%s/rt2.snap", dir);
	snprintf(con0, sizeof(con0), "%s/original.log", dir);
	snprintf(con1, sizeof(con1), "%s/lazy.log", dir);
	snprintf(con2, sizeof(con2), "%s/eager.log", dir);

	struct terr err = { 0 };
	struct config *cfg = config_new();
	char o[600];
	snprintf(o, sizeof(o), "kernel=%s", elf);
	config_set_option(cfg, o, &err);
	snprintf(o, sizeof(o), "console.path=%s", con0);
	config_set_option(cfg, o, &err);
	config_set_option(cfg, "memory.size=96M", &err);
	config_set_option(cfg, "cpus=2", &err);
	config_set_option(cfg, "test_exit.enable=on", &err);
	config_set_option(cfg, "cmdline=passes=400 window=16M progress=1", &err);
	CHECK(err.code == 0, "config: %s", err.msg);
	unlink(con0);

	struct runner run = { 0 };
	if (machine_build(&run.m, cfg, NULL, &err)) {
		fprintf(stderr, "FAIL: build: %s\n", err.msg);
		return 1;
	}
	pthread_create(&run.thread, NULL, run_thread, &run);
	/* snapshot once the guest is well into its passes, and long before
	 * its end */
	bool started = false;
	for (int i = 0; i < 1000 && !started; i++) {
		char *out = slurp(con0);
		started = strstr(out, "dirty: pass 20\n") != NULL;
		free(out);
		if (!started)
			usleep(5000);
	}
	CHECK(started, "the guest never reached pass 20");
	struct snapshot_stats st = { 0 }, st2 = { 0 };
	int r = snapshot_save(&run.m, snap, NULL, NULL, &st, &err);
	CHECK(r == 0, "save: %s", err.msg);
	CHECK(st.direct || !direct_expected(dir), "save: RAM was not written with O_DIRECT");
	/* a second snapshot from the same run, through the page cache */
	usleep(20000);
	setenv("TERN_SNAPSHOT_DIRECT", "off", 1);
	r = snapshot_save(&run.m, snap2, NULL, NULL, &st2, &err);
	unsetenv("TERN_SNAPSHOT_DIRECT");
	CHECK(r == 0 && !st2.direct, "second save (page cache): %s", err.msg);
	/* both paths write the same RAM part: two saves of the paused VM */
	char snap3[512], snap4[512];
	snprintf(snap3, sizeof(snap3), "%s/rt3.snap", dir);
	snprintf(snap4, sizeof(snap4), "%s/rt4.snap", dir);
	vm_pause(&run.m.vm);
	struct snapshot_stats st3 = { 0 }, st4 = { 0 };
	r = snapshot_save(&run.m, snap3, NULL, NULL, &st3, &err);
	CHECK(r == 0, "third save: %s", err.msg);
	setenv("TERN_SNAPSHOT_DIRECT", "off", 1);
	r = snapshot_save(&run.m, snap4, NULL, NULL, &st4, &err);
	unsetenv("TERN_SNAPSHOT_DIRECT");
	CHECK(r == 0, "fourth save: %s", err.msg);
	vm_resume(&run.m.vm);
	CHECK(st3.data_bytes == st4.data_bytes && st3.data_bytes,
	      "direct and page-cache saves wrote %llu and %llu bytes",
	      (unsigned long long)st3.data_bytes, (unsigned long long)st4.data_bytes);
	compare_ram(snap3, snap4);
	fprintf(stderr, "direct %s: %.1f ms, page cache: %.1f ms (paused VM, %llu KiB data)\n",
		st3.direct ? "on" : "not taken", st3.total_ms, st4.total_ms,
		(unsigned long long)(st3.data_bytes >> 10));
	unlink(snap3);
	unlink(snap4);
	fprintf(stderr, "saved: %llu MiB RAM, %llu KiB data, paused %.1f ms, total %.1f ms\n",
		(unsigned long long)(st.ram_bytes >> 20), (unsigned long long)(st.data_bytes >> 10),
		st.paused_ms, st.total_ms);
	pthread_join(run.thread, NULL);
	r = snapshot_save(&run.m, snap2, NULL, NULL, NULL, &err);
	CHECK(r < 0 && strstr(err.msg, "shutting down"), "a snapshot of an ended VM was not refused");
	terr_clear(&err);
	char *out = slurp(con0);
	CHECK(run.status == 0 && strstr(out, "dirty: OK"),
	      "original run after the snapshot: status %d, console:\n%s", run.status, out);
	free(out);
	machine_destroy(&run.m);
	config_free(cfg);

	restore_and_check(snap, con1, false);
	restore_and_check(snap, con2, true);
	snprintf(con1, sizeof(con1), "%s/second.log", dir);
	restore_and_check(snap2, con1, false);
	if (failures)
		fprintf(stderr, "%d check(s) failed\n", failures);
	return failures ? 1 : 0;
}

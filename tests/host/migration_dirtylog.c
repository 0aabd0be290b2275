/* KVM's dirty log as migration uses it (vm_dirty_log_* in src/core/vm.c), on
 * this host's /dev/kvm with the dirty guest: once the guest has filled RAM,
 * it writes only its window, so after a clear exactly the window (and a few
 * pages of its own image and stack below 16 MiB) shows up dirty; bits stay
 * until cleared (manual protection); a cleared chunk stays clean while the
 * VM is paused and fills again once it runs; logging stops and starts again.
 * Usage: migration_dirtylog DIRTY_ELF WORKDIR */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "machine/machine.h"

#define MIB (1ull << 20)

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

static bool console_has(const char *path, const char *what)
{
	char buf[65536];
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return strstr(buf, what) != NULL;
}

static void msleep(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static uint64_t count(const uint64_t *b, uint64_t from, uint64_t to)
{
	uint64_t n = 0;
	for (uint64_t pg = from; pg < to; pg++)
		n += b[pg / 64] >> (pg % 64) & 1;
	return n;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: migration_dirtylog DIRTY_ELF WORKDIR\n");
		return 2;
	}
	char con[600], o[700];
	snprintf(con, sizeof(con), "%s/dirtylog.log", argv[2]);
	unlink(con);
	struct terr err = { 0 };
	struct config *cfg = config_new();
	snprintf(o, sizeof(o), "kernel=%s", argv[1]);
	config_set_option(cfg, o, &err);
	snprintf(o, sizeof(o), "console.path=%s", con);
	config_set_option(cfg, o, &err);
	config_set_option(cfg, "memory.size=64M", &err);
	config_set_option(cfg, "test_exit.enable=on", &err);
	config_set_option(cfg, "cmdline=passes=0 window=4M progress=0", &err);
	CHECK(err.code == 0, "config: %s", err.msg);

	struct runner run = { 0 };
	if (machine_build(&run.m, cfg, NULL, &err)) {
		fprintf(stderr, "FAIL: build: %s\n", err.msg);
		return 1;
	}
	struct vm *vm = &run.m.vm;
	pthread_create(&run.thread, NULL, run_thread, &run);
	for (int i = 0; i < 2000 && !console_has(con, "dirty: filled"); i++)
		msleep(10);
	CHECK(console_has(con, "dirty: filled"), "the guest did not fill its RAM");

	const uint64_t pages = 64 * MIB / 4096, win0 = 16 * MIB / 4096, win1 = 20 * MIB / 4096;
	uint64_t *b = calloc(pages / 64, 8), *ones = malloc(pages / 8);
	memset(ones, 0xff, pages / 8);
	bool all;
	CHECK(vm_dirty_log_start(vm, &all, &err) == 0, "start: %s", err.msg);
	CHECK(vm->mem.nregions == 1, "one RAM slot expected");
	if (!vm->dirty_manual) {
		fprintf(stderr, "SKIP: no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 here\n");
		vm_request_exit(vm, VM_EXIT_QUIT, 0);
		pthread_join(run.thread, NULL);
		machine_destroy(&run.m);
		config_free(cfg);
		return 77;
	}
	CHECK(vm_dirty_log_get(vm, 0, b, &err) == 0, "get: %s", err.msg);
	if (all)
		CHECK(count(b, 0, pages) == pages, "initially set, but only %llu of %llu pages dirty",
		      (unsigned long long)count(b, 0, pages), (unsigned long long)pages);
	for (uint64_t c = 0; c < pages; c += 512)
		CHECK(vm_dirty_log_clear(vm, 0, c, 512, ones + c / 64, &err) == 0, "clear: %s", err.msg);
	msleep(300);
	memset(b, 0, pages / 8);
	CHECK(vm_dirty_log_get(vm, 0, b, &err) == 0, "get: %s", err.msg);
	uint64_t in_win = count(b, win0, win1), above = count(b, win1, pages),
		 below = count(b, 0, win0);
	fprintf(stderr, "after a clear and 300 ms: %llu of %llu window pages dirty, %llu below it, "
		"%llu above it\n", (unsigned long long)in_win, (unsigned long long)(win1 - win0),
		(unsigned long long)below, (unsigned long long)above);
	CHECK(in_win == win1 - win0, "only %llu window pages dirty", (unsigned long long)in_win);
	CHECK(above == 0, "%llu pages above the window dirty", (unsigned long long)above);
	CHECK(below < 64, "%llu pages below the window dirty", (unsigned long long)below);
	/* manual protection: the bits stay */
	memset(b, 0, pages / 8);
	CHECK(vm_dirty_log_get(vm, 0, b, &err) == 0, "get: %s", err.msg);
	CHECK(count(b, win0, win1) == win1 - win0, "bits went without a clear");
	/* paused: a cleared chunk stays clean; running: it fills again */
	vm_pause(vm);
	for (uint64_t c = win0; c < win1; c += 512)
		CHECK(vm_dirty_log_clear(vm, 0, c, 512, b + c / 64, &err) == 0, "clear: %s", err.msg);
	memset(b, 0, pages / 8);
	CHECK(vm_dirty_log_get(vm, 0, b, &err) == 0, "get: %s", err.msg);
	CHECK(count(b, win0, win1) == 0, "%llu window pages dirty while paused after a clear",
	      (unsigned long long)count(b, win0, win1));
	msleep(50);
	memset(b, 0, pages / 8);
	CHECK(vm_dirty_log_get(vm, 0, b, &err) == 0, "get: %s", err.msg);
	CHECK(count(b, win0, win1) == 0, "window pages dirtied while paused");
	vm_resume(vm);
	msleep(300);
	memset(b, 0, pages / 8);
	CHECK(vm_dirty_log_get(vm, 0, b, &err) == 0, "get: %s", err.msg);
	CHECK(count(b, win0, win1) == win1 - win0, "after resuming only %llu window pages dirty",
	      (unsigned long long)count(b, win0, win1));
	vm_dirty_log_stop(vm);
	CHECK(!vm->dirty_logging, "still logging");
	/* once more, and the guest still checks out */
	CHECK(vm_dirty_log_start(vm, &all, &err) == 0, "restart: %s", err.msg);
	msleep(100);
	vm_dirty_log_stop(vm);
	vm_request_exit(vm, VM_EXIT_QUIT, 0);
	pthread_join(run.thread, NULL);
	CHECK(!console_has(con, "BAD"), "the guest found damage");
	machine_destroy(&run.m);
	config_free(cfg);
	free(b);
	free(ones);
	if (failures)
		fprintf(stderr, "%d check(s) failed\n", failures);
	return failures ? 1 : 0;
}

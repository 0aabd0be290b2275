/* The receiving side: tern receive. It trusts nothing that arrives: every
 * frame is checked (wire.c), every message parsed with limits, and the
 * guest starts only after the source said GO, which it says only after
 * this side reported HAVE_ALL. Any failure before that ends the process
 * with status 1 and nothing started. */
#include "migration/migration.h"
#include "arch/x86/cpu.h"
#include "control/control.h"
#include "core/kvm.h"
#include "machine/machine.h"
#include "migration/handover.h"
#include "migration/proto.h"
#include "migration/ram.h"
#include "migration/wire.h"
#include "snapshot/snapfile.h"
#include "snapshot/snapshot.h"
#include "util/log.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PEER_WAIT_MS 60000

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Largest number of bytes received in any one-second window. */
struct rx_window {
	double t[4096];
	uint64_t b[4096];
	unsigned head, n;
	uint64_t in, max;
};

static void window_add(struct rx_window *w, uint64_t bytes)
{
	double t = now_ms();
	while (w->n && (t - w->t[w->head] >= 1000 || w->n == 4096)) {
		w->in -= w->b[w->head];
		w->head = (w->head + 1) % 4096;
		w->n--;
	}
	unsigned s = (w->head + w->n) % 4096;
	w->t[s] = t;
	w->b[s] = bytes;
	w->n++;
	w->in += bytes;
	if (w->in > w->max)
		w->max = w->in;
}

struct rx {
	struct mig_conn conn;
	struct machine m;
	bool built;
	struct config *cfg;
	struct mig_ram_rx ram;
	bool ram_ready;
	struct rx_window win;
	uint8_t *state;
	uint32_t state_len;
	bool user_paused;
	uint64_t rounds;
};

/* HELLO: is this a source we can take? */
static int take_hello(struct rx *x, struct mig_hello *h, struct terr *err)
{
	uint8_t *buf;
	uint32_t len, version;
	int r = mig_expect(&x->conn, MIG_HELLO, &buf, &len, err);
	if (r)
		return r;
	r = mig_hello_decode(buf, len, h, err);
	free(buf);
	if (r)
		return r;
	if ((r = mig_check_version(h, &version, err)) || (r = mig_check_layout(h, err)))
		goto refuse;
	struct kvm_sys kvm;
	if ((r = kvm_sys_open(&kvm, "/dev/kvm", err)))
		goto refuse;
	struct kvm_cpuid2 *cpuid = x86_supported_cpuid(&kvm, err);
	if (cpuid) {
		r = mig_check_cpu(h, cpuid, err);
		free(cpuid);
	} else {
		r = err->code ? err->code : -EINVAL;
	}
	kvm_sys_close(&kvm);
	if (r)
		goto refuse;
	log_info("migration", "%s migration from tern %s (protocol %u): %llu MiB, %u vCPU(s)",
		 h->mode, h->tern_version, version, (unsigned long long)(h->mem_size >> 20), h->cpus);
	return mig_send_welcome(&x->conn, version, err);
refuse:
	mig_send_refuse(&x->conn, err->msg);
	return r;
}

/* CONFIG: build the machine it describes, with our overrides. */
static int take_config(struct rx *x, const struct mig_hello *h, char **overrides, int noverrides,
		       struct terr *err)
{
	uint8_t *buf;
	uint32_t len;
	struct snapshot s;
	int r = mig_expect(&x->conn, MIG_CONFIG, &buf, &len, err);
	if (r)
		return r;
	r = snap_parse(&s, buf, len, "the migration's configuration", err);
	if (!r) {
		r = snapshot_config(&s, "the migration's configuration", overrides, noverrides, &x->cfg,
				    err);
		snap_close(&s);
	}
	free(buf);
	uint64_t size = 0;
	int64_t cpus = 0;
	if (!r)
		r = config_get_size(x->cfg, "memory.size", &size, err);
	if (!r)
		r = config_get_int(x->cfg, "cpus", &cpus, err);
	if (!r && (size != h->mem_size || cpus != (int64_t)h->cpus))
		r = terr_set(err, EPROTO, "the configuration (%llu MiB, %lld vCPUs) does not match the "
			     "HELLO (%llu MiB, %u vCPUs)", (unsigned long long)(size >> 20),
			     (long long)cpus, (unsigned long long)(h->mem_size >> 20), h->cpus);
	if (!r) {
		/* writable disks open without their locks: the source holds them
		 * until it says RELEASED */
		struct machine_restore rs = { .ram = { .fd = -1, .anon = true }, .incoming = true };
		r = machine_build(&x->m, x->cfg, &rs, err);
		x->built = r == 0;
	}
	if (!r)
		r = mig_ram_rx_init(&x->ram, &x->m.vm.mem, err);
	x->ram_ready = r == 0;
	if (r) {
		mig_send_refuse(&x->conn, err->msg);
		return r;
	}
	/* a signal (SIGTERM, ^C) ends the receive: tern blocks them for its
	 * signalfd, which the loop does not serve yet */
	x->conn.abort_fd = x->m.signal_fd;
	return mig_send_buf(&x->conn, MIG_READY, NULL, 0, err);
}

/* RAM, ROUND and STATE until DONE; then load the state. */
static int take_stream(struct rx *x, struct terr *err)
{
	for (;;) {
		unsigned type;
		uint32_t len;
		uint64_t before = x->conn.rx_bytes;
		int r = mig_frame_begin(&x->conn, &type, &len, err);
		if (r)
			return r;
		if (type == MIG_RAM) {
			r = mig_ram_rx_frame(&x->ram, &x->conn, len, err);
			if (r)
				return r;
			window_add(&x->win, x->conn.rx_bytes - before);
			continue;
		}
		uint8_t *buf = malloc(len ? len : 1);
		if (!buf)
			return terr_set(err, ENOMEM, "out of memory for a %u-byte message", len);
		r = mig_frame_read(&x->conn, buf, len, err);
		if (!r)
			r = mig_frame_end(&x->conn, err);
		window_add(&x->win, x->conn.rx_bytes - before);
		if (r) {
			free(buf);
			return r;
		}
		if (type == MIG_ROUND) {
			const char *const names[] = { "round", "dirty_bytes" };
			uint64_t v[2] = { 0, 0 };
			r = mig_parse_fields(buf, len, type, names, v, 2, err);
			free(buf);
			if (r)
				return r;
			log_debug("migration", "round %llu done, %llu bytes dirty", (unsigned long long)v[0],
				  (unsigned long long)v[1]);
			continue;
		}
		if (type == MIG_STATE) {
			if (x->state) {
				free(buf);
				return terr_set(err, EPROTO, "the source sent the machine state twice");
			}
			x->state = buf;
			x->state_len = len;
			continue;
		}
		if (type == MIG_DONE) {
			const char *const names[] = { "rounds", "ram_frames", "paused" };
			uint64_t v[3] = { 0, 0, 0 };
			r = mig_parse_fields(buf, len, type, names, v, 3, err);
			free(buf);
			if (r)
				return r;
			if (!x->state)
				return terr_set(err, EPROTO, "the source said DONE without sending the "
						"machine state");
			if (v[1] != x->ram.frames)
				return terr_set(err, EPROTO, "the source sent %llu RAM frames, %llu arrived",
						(unsigned long long)v[1],
						(unsigned long long)x->ram.frames);
			x->rounds = v[0];
			x->user_paused = v[2] != 0;
			return 0;
		}
		if (type == MIG_REFUSE) {
			struct state_reader rd;
			const void *reason = NULL;
			size_t rl = 0;
			if (sr_init(&rd, buf, len, "REFUSE", NULL) == 0) {
				sr_bytes(&rd, "reason", &reason, &rl, NULL);
				r = terr_set(err, ECONNABORTED, "the source gave up: %.*s", (int)(rl < 400 ? rl : 400),
					     reason ? (const char *)reason : "(no reason given)");
				sr_free(&rd);
			} else {
				r = terr_set(err, ECONNABORTED, "the source gave up");
			}
			free(buf);
			return r;
		}
		free(buf);
		return terr_set(err, EPROTO, "the source sent %s in the middle of the stream",
				mig_type_name(type));
	}
}

static int load_state(struct rx *x, struct terr *err)
{
	struct snapshot s;
	int r = snap_parse(&s, x->state, x->state_len, "the migrated machine state", err);
	if (r)
		return r;
	r = snapshot_apply_sections(&s, &x->m, err);
	snap_close(&s);
	return r;
}

int migration_receive(const char *listen_spec, char **overrides, int noverrides)
{
	struct terr err = { 0 };
	char bound[600];
	int lfd = -1, fd = -1, status = TERN_EXIT_SETUP_ERROR, r;
	struct rx *x = calloc(1, sizeof(*x));
	struct mig_hello h;
	memset(&h, 0, sizeof(h));

	if (!x) {
		fprintf(stderr, "tern receive: out of memory\n");
		return TERN_EXIT_SETUP_ERROR;
	}
	/* a source that goes away must not kill us with SIGPIPE */
	signal(SIGPIPE, SIG_IGN);
	if (mig_listen(listen_spec, &lfd, bound, sizeof(bound), &err)) {
		fprintf(stderr, "tern receive: %s\n", err.msg);
		free(x);
		return TERN_EXIT_SETUP_ERROR;
	}
	fprintf(stderr, "tern receive: listening on %s\n", bound);
	do
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	int accept_errno = errno;
	close(lfd);
	if (!strncmp(listen_spec, "unix:", 5))
		unlink(listen_spec + 5);
	if (fd < 0) {
		fprintf(stderr, "tern receive: accept: %s\n", strerror(accept_errno));
		free(x);
		return TERN_EXIT_SETUP_ERROR;
	}
	double t0 = now_ms();
	r = mig_conn_init(&x->conn, fd, "the source", &err);
	x->conn.timeout_ms = PEER_WAIT_MS;
	if (!r)
		r = take_hello(x, &h, &err);
	if (!r)
		r = take_config(x, &h, overrides, noverrides, &err);
	if (!r)
		r = take_stream(x, &err);
	if (!r) {
		r = load_state(x, &err);
		if (r)
			mig_send_refuse(&x->conn, err.msg);
	}
	uint8_t *buf = NULL;
	uint32_t len;
	if (!r)
		r = mig_send_buf(&x->conn, MIG_HAVE_ALL, NULL, 0, &err);
	if (!r)
		r = mig_expect(&x->conn, MIG_RELEASED, &buf, &len, &err);
	free(buf);
	buf = NULL;
	if (!r) {
		/* the source let go of its disks: take them (reading their
		 * metadata afresh); if one cannot be had, let go of the others
		 * first, so that the source gets them all back */
		r = mig_acquire_all(&x->m.vm, MIG_LOCK_WAIT_DEST_MS, &err);
		if (r) {
			struct terr rerr = { 0 };
			if (mig_release_all(&x->m.vm, &rerr))
				log_warn("migration", "letting the disks go again: %s", rerr.msg);
			mig_send_refuse(&x->conn, err.msg);
		}
	}
	if (!r)
		r = mig_send_buf(&x->conn, MIG_LOCKED, NULL, 0, &err);
	if (!r)
		r = mig_expect(&x->conn, MIG_GO, &buf, &len, &err);
	free(buf);
	if (r) {
		/* nothing ran: the source keeps (or kept) the guest, and gets
		 * back the disk locks taken here */
		if (x->built) {
			struct terr rerr = { 0 };
			mig_release_all(&x->m.vm, &rerr);
		}
		fprintf(stderr, "tern receive: the migration did not complete, nothing was started: %s\n",
			err.msg);
		goto out;
	}
	/* GO: the guest is ours */
	if (x->user_paused)
		control_adopt_pause(x->m.control);
	r = vm_start(&x->m.vm, x->user_paused, &err);
	if (r) {
		fprintf(stderr, "tern receive: cannot start the guest: %s\n", err.msg);
		status = TERN_EXIT_HOST_ERROR;
		goto out;
	}
	if (mig_send_buf(&x->conn, MIG_STARTED, NULL, 0, &err))
		log_warn("migration", "telling the source the guest runs: %s", err.msg);
	log_info("migration", "migration complete in %.0f ms: %llu MiB received (%llu pages of data, "
		 "%llu zero), %llu round(s); at most %llu bytes in one second", now_ms() - t0,
		 (unsigned long long)(x->conn.rx_bytes >> 20), (unsigned long long)x->ram.pages_data,
		 (unsigned long long)x->ram.pages_zero, (unsigned long long)x->rounds,
		 (unsigned long long)x->win.max);
	fprintf(stderr, "tern receive: guest running (%llu bytes received, at most %llu in any "
		"second)\n", (unsigned long long)x->conn.rx_bytes, (unsigned long long)x->win.max);
	mig_conn_free(&x->conn);
	close(fd);
	fd = -1;
	status = vm_wait(&x->m.vm);
out:
	mig_hello_free(&h);
	if (x->ram_ready)
		mig_ram_rx_free(&x->ram);
	if (fd >= 0) {
		mig_conn_free(&x->conn);
		close(fd);
	}
	if (x->built)
		machine_destroy(&x->m);
	config_free(x->cfg);
	free(x->state);
	free(x);
	return status;
}

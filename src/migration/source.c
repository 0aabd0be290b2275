/* The sending side: handshake, pre-copy rounds over KVM's dirty log,
 * auto-converge, stop-and-copy, handover. */
#include "migration/migration.h"
#include "control/control.h"
#include "machine/machine.h"
#include "migration/handover.h"
#include "migration/proto.h"
#include "migration/ram.h"
#include "migration/wire.h"
#include "snapshot/sections.h"
#include "snapshot/snapfile.h"
#include "snapshot/snapshot.h"
#include "util/log.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define PAGE            4096u
#define CHUNK_PAGES     512u        /* dirty log cleared and sent 2 MiB at a time */
#define SCRATCH_PAGES   64u         /* pages not in core read at once */
#define CONNECT_MS      5000
#define PEER_WAIT_MS    60000       /* longest silence of the destination */
#define STARTED_WAIT_MS 30000
/* What the stop-and-copy costs beyond the dirty pages: vCPU and device
 * state out of KVM, over the wire and into the destination's KVM, the
 * handover round trip. Measured on the development host (2 vCPUs, the
 * platform devices): 1-3 ms. */
#define STATE_EST_MS    3.0
#define THROTTLE_PERIOD_MS 20

const char *mig_state_name(enum mig_state s)
{
	switch (s) {
	case MIG_S_NONE: return "none";
	case MIG_S_SETUP: return "setup";
	case MIG_S_PRECOPY: return "precopy";
	case MIG_S_STOPPED: return "stopped";
	case MIG_S_COMPLETED: return "completed";
	case MIG_S_FAILED: return "failed";
	case MIG_S_CANCELLED: return "cancelled";
	}
	return "?";
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(double ms)
{
	if (ms <= 0)
		return;
	struct timespec ts = { (time_t)(ms / 1000), (long)((ms - (double)(time_t)(ms / 1000) * 1000) * 1e6) };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

struct slot {
	unsigned idx;              /* KVM slot = RAM region */
	uint64_t gpa, npages;
	uint64_t first_page;       /* in RAM offset pages (the host-write log's index) */
	uint8_t *hva;
	uint64_t *want;            /* pages to send this round */
	size_t nwords;
};

struct src {
	struct machine *m;
	struct vm *vm;
	const struct mig_params *p;
	atomic_bool *cancel;
	mig_progress_fn progress;
	void *opaque;
	struct mig_stats st;
	struct mig_conn conn;
	struct mig_ratelimit rl;
	struct mig_ram_tx tx;
	uint8_t *scratch;          /* SCRATCH_PAGES pages */
	bool tx_ready;
	struct slot slots[GUEST_MEM_MAX_REGIONS];
	unsigned nslots;
	double t0, deadline, last_publish;
	double round_t0;           /* when the first pass began */
	uint64_t round_b0;
	bool logging, paused;
	bool released;             /* disk locks given up (handover) */
	/* bytes sent, sampled, for the largest one-second window */
	double win_t[64];
	uint64_t win_b[64];
	unsigned win_n, win_head;
	/* auto-converge */
	pthread_t thr;
	bool thr_running;
	atomic_uint thr_pct;
	atomic_bool thr_stop;
};

/* ---- progress ---------------------------------------------------------- */

static void sample_window(struct src *s, double t)
{
	uint64_t b = s->conn.tx_bytes;
	/* drop samples more than a second old, but keep the newest of those
	 * as the window's left edge */
	while (s->win_n >= 2 && t - s->win_t[(s->win_head + 1) % 64] >= 1000) {
		s->win_head = (s->win_head + 1) % 64;
		s->win_n--;
	}
	if (s->win_n) {
		unsigned first = s->win_head;
		uint64_t in = b - s->win_b[first];
		/* the span may be a little over a second: scale it down */
		double span = t - s->win_t[first];
		if (span > 1000)
			in = (uint64_t)((double)in * 1000 / span);
		if (in > s->st.max_window_bytes)
			s->st.max_window_bytes = in;
	}
	if (s->win_n == 64) {
		s->win_head = (s->win_head + 1) % 64;
		s->win_n--;
	}
	unsigned slot = (s->win_head + s->win_n) % 64;
	s->win_t[slot] = t;
	s->win_b[slot] = b;
	s->win_n++;
}

static void publish(struct src *s, bool force)
{
	double t = now_ms();
	if (!force && t - s->last_publish < 50)
		return;
	s->last_publish = t;
	s->st.elapsed_ms = t - s->t0;
	s->st.bytes_sent = s->conn.tx_bytes;
	if (s->tx_ready) {
		s->st.pages_data = s->tx.pages_data;
		s->st.pages_zero = s->tx.pages_zero;
	}
	sample_window(s, t);
	/* until the first round has measured it */
	if (s->st.round <= 1 && s->tx_ready && t > s->round_t0 + 50 && s->round_t0 > 0)
		s->st.bandwidth = (uint64_t)((double)(s->tx.bytes - s->round_b0) * 1000 / (t - s->round_t0));
	if (s->progress)
		s->progress(s->opaque, &s->st);
}

static int check_stop(struct src *s, struct terr *err)
{
	if (s->cancel && atomic_load(s->cancel))
		return terr_set(err, ECANCELED, "cancelled");
	if (s->deadline && now_ms() > s->deadline)
		return terr_set(err, ETIMEDOUT, "the migration did not finish within %u s (predicted "
				"downtime %.1f ms, limit %u ms)%s", s->p->timeout_s,
				s->st.expected_downtime_ms, s->p->downtime_limit_ms,
				s->st.throttle_pct ? "; the guest dirties memory faster than the "
				"link drains it, even throttled" : "");
	pthread_mutex_lock(&s->vm->lock);
	bool exiting = s->vm->exit_req;
	pthread_mutex_unlock(&s->vm->lock);
	if (exiting)
		return terr_set(err, ESHUTDOWN, "the VM is shutting down");
	return 0;
}

/* ---- auto-converge ----------------------------------------------------- */

static void *throttle_main(void *arg)
{
	struct src *s = arg;
	while (!atomic_load(&s->thr_stop)) {
		unsigned pct = atomic_load(&s->thr_pct);
		vm_pause(s->vm);
		sleep_ms(THROTTLE_PERIOD_MS * pct / 100.0);
		vm_resume(s->vm);
		sleep_ms(THROTTLE_PERIOD_MS * (100 - pct) / 100.0);
	}
	return NULL;
}

static void throttle_set(struct src *s, unsigned pct)
{
	atomic_store(&s->thr_pct, pct);
	s->st.throttle_pct = pct;
	if (!s->thr_running && pct) {
		atomic_store(&s->thr_stop, false);
		s->thr_running = pthread_create(&s->thr, NULL, throttle_main, s) == 0;
	}
}

static void throttle_stop(struct src *s)
{
	if (!s->thr_running)
		return;
	atomic_store(&s->thr_stop, true);
	pthread_join(s->thr, NULL);
	s->thr_running = false;
}

/* ---- RAM --------------------------------------------------------------- */

static int slots_init(struct src *s, struct terr *err)
{
	const struct guest_mem *mem = &s->vm->mem;
	s->nslots = mem->nregions;
	for (unsigned i = 0; i < mem->nregions; i++) {
		struct slot *sl = &s->slots[i];
		sl->idx = i;
		sl->gpa = mem->regions[i].gpa;
		sl->npages = mem->regions[i].size / PAGE;
		sl->first_page = mem->regions[i].offset / PAGE;
		sl->hva = mem->regions[i].hva;
		sl->nwords = (sl->npages + 63) / 64;
		sl->want = calloc(sl->nwords, sizeof(uint64_t));
		if (!sl->want)
			return terr_set(err, ENOMEM, "out of memory for the dirty bitmap");
	}
	return 0;
}

static void slots_free(struct src *s)
{
	for (unsigned i = 0; i < s->nslots; i++)
		free(s->slots[i].want);
}

static void want_all(struct src *s)
{
	for (unsigned i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];
		memset(sl->want, 0xff, sl->nwords * sizeof(uint64_t));
		if (sl->npages % 64)
			sl->want[sl->nwords - 1] = (1ull << (sl->npages % 64)) - 1;
	}
}

/* Adds the dirty log (and tern's own writes) to want, which may still hold
 * pages not sent yet; *pages: how many are wanted now. */
static int collect_dirty(struct src *s, uint64_t *pages, struct terr *err)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];
		uint64_t *log = calloc(sl->nwords, sizeof(uint64_t));
		if (!log)
			return terr_set(err, ENOMEM, "out of memory for the dirty bitmap");
		int r = vm_dirty_log_get(s->vm, sl->idx, log, err);
		if (r) {
			free(log);
			return r;
		}
		guest_mem_take_host_writes(&s->vm->mem, sl->first_page, log, sl->nwords);
		for (size_t w = 0; w < sl->nwords; w++) {
			sl->want[w] |= log[w];
			n += (uint64_t)__builtin_popcountll(sl->want[w]);
		}
		free(log);
	}
	*pages = n;
	return 0;
}

static int send_bits(struct src *s, struct slot *sl, uint64_t first, uint64_t n, struct terr *err)
{
	for (uint64_t w = first / 64; w < (first + n + 63) / 64; w++) {
		uint64_t bits = sl->want[w];
		while (bits) {
			uint64_t pg = w * 64 + (uint64_t)__builtin_ctzll(bits);
			bits &= bits - 1;
			int r = mig_ram_tx_page(&s->tx, sl->gpa + pg * PAGE, sl->hva + pg * PAGE, err);
			if (r)
				return r;
		}
	}
	return 0;
}

static int pread_full(int fd, uint8_t *dst, size_t len, uint64_t off, struct terr *err)
{
	for (size_t done = 0; done < len;) {
		ssize_t k = pread(fd, dst + done, len - done, (off_t)(off + done));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return terr_set(err, k < 0 ? errno : EIO, "reading guest RAM at 0x%llx: %s",
					(unsigned long long)(off + done), k < 0 ? strerror(errno) : "short read");
		done += (size_t)k;
	}
	return 0;
}

/* Pages [c, c + n) of a slot read from the memfd: a hole (never touched)
 * reads as zeros without being allocated, as a read through the mapping
 * would. */
static int send_chunk_fd(struct src *s, struct slot *sl, uint64_t c, uint64_t n, struct terr *err)
{
	uint8_t *dst = mig_ram_tx_reserve(&s->tx, n, err);
	if (!dst)
		return err->code ? err->code : -EINVAL;
	int r = pread_full(s->vm->mem.fd, dst, n * PAGE, (sl->first_page + c) * PAGE, err);
	return r ? r : mig_ram_tx_commit(&s->tx, sl->gpa + c * PAGE, n, err);
}

/* The wanted pages of [c, c + n) of a slot straight from the RAM's memfd
 * (no copy: sendfile). Pages in the page cache (mincore) are checked for
 * zeros through the mapping, which stops at the first non-zero word of a
 * data page; the others are holes (RAM never touched) or swapped out, and
 * are read with pread, which returns a hole's zeros without allocating it.
 * Called after the chunk's dirty bits were cleared, so a page that changes
 * after it was looked at is sent again next round. (SEEK_DATA/SEEK_HOLE
 * would be exact but scans to the end of the file on every call.) */
static int send_chunk_zc(struct src *s, struct slot *sl, uint64_t c, uint64_t n, struct terr *err)
{
	int fd = s->vm->mem.fd;
	unsigned char in_core[CHUNK_PAGES];
	if (mincore(sl->hva + c * PAGE, n * PAGE, in_core) < 0)
		return terr_set(err, errno, "looking at guest RAM at 0x%llx: %s",
				(unsigned long long)(sl->gpa + c * PAGE), strerror(errno));
	for (uint64_t i = 0; i < n;) {
		uint64_t pg = c + i;
		if (!(sl->want[pg / 64] >> (pg % 64) & 1)) {
			i++;
			continue;
		}
		uint64_t gpa = sl->gpa + pg * PAGE, off = (sl->first_page + pg) * PAGE;
		int r;
		if (in_core[i] & 1) {
			r = mig_page_is_zero(sl->hva + pg * PAGE) ? mig_ram_tx_zero(&s->tx, gpa, err) :
				mig_ram_tx_file_page(&s->tx, gpa, fd, off, err);
			i++;
		} else {
			/* the run of pages not in core, read at once */
			uint64_t k = 1;
			while (i + k < n && !(in_core[i + k] & 1) && k < SCRATCH_PAGES)
				k++;
			r = pread_full(fd, s->scratch, k * PAGE, off, err);
			for (uint64_t j = 0; j < k && !r; j++) {
				uint64_t p = pg + j;
				if (!(sl->want[p / 64] >> (p % 64) & 1))
					continue;
				r = mig_page_is_zero(s->scratch + j * PAGE) ?
					mig_ram_tx_zero(&s->tx, sl->gpa + p * PAGE, err) :
					mig_ram_tx_file_page(&s->tx, sl->gpa + p * PAGE, fd,
							     (sl->first_page + p) * PAGE, err);
			}
			i += k;
		}
		if (r)
			return r;
	}
	return 0;
}

/* One pass over the pages in want. clear: re-protect each chunk right
 * before sending it (writes after that are in the next round's log).
 * full: every page is wanted (the first pass), read from the memfd when
 * RAM is one. */
static int send_pass(struct src *s, bool clear, bool full, struct terr *err)
{
	const struct guest_mem *mem = &s->vm->mem;
	uint64_t left = 0;
	for (unsigned i = 0; i < s->nslots; i++)
		for (size_t w = 0; w < s->slots[i].nwords; w++)
			left += (uint64_t)__builtin_popcountll(s->slots[i].want[w]);
	for (unsigned i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];
		for (uint64_t c = 0; c < sl->npages; c += CHUNK_PAGES) {
			uint64_t n = sl->npages - c < CHUNK_PAGES ? sl->npages - c : CHUNK_PAGES;
			uint64_t cnt = 0;
			for (uint64_t w = c / 64; w < (c + n + 63) / 64; w++)
				cnt += (uint64_t)__builtin_popcountll(sl->want[w]);
			if (!cnt)
				continue;
			int r = check_stop(s, err);
			if (!r && clear)
				r = vm_dirty_log_clear(s->vm, sl->idx, c, n, sl->want + c / 64, err);
			if (r)
				return r;
			/* a frame holds max_data bytes of pages: under a tight cap
			 * (frames of half a 100 ms window) less than a chunk */
			uint64_t step = s->tx.max_data / PAGE;
			if (mem->memfd && !s->tx.zstd)
				r = send_chunk_zc(s, sl, c, n, err);
			else if (full && mem->memfd && step)
				for (uint64_t o = 0; o < n && !r; o += step)
					r = send_chunk_fd(s, sl, c + o, n - o < step ? n - o : step, err);
			else
				r = send_bits(s, sl, c, n, err);
			if (r)
				return r;
			memset(sl->want + c / 64, 0, (n + 63) / 64 * sizeof(uint64_t));
			left -= cnt;
			s->st.remaining_bytes = left * PAGE;
			publish(s, false);
		}
	}
	return mig_ram_tx_flush(&s->tx, err);
}

/* ---- the stages -------------------------------------------------------- */

/* The configuration, as a snapshot with one section. */
static int config_message(struct machine *m, uint8_t **buf, size_t *len, struct terr *err)
{
	struct config *full = config_clone(m->cfg);
	if (!full)
		return terr_set(err, ENOMEM, "out of memory");
	int r = config_fill_defaults(full, err);
	json_t *j = r ? NULL : config_to_json(full);
	char *text = j ? json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
	json_decref(j);
	config_free(full);
	if (r)
		return r;
	if (!text)
		return terr_set(err, ENOMEM, "out of memory");
	struct snapshot s;
	struct state_writer w;
	snap_init_writer(&s);
	sw_init(&w);
	sw_str(&w, "json", text);
	free(text);
	r = snap_add_section(&s, SECTION_CONFIG, SECTION_CONFIG, SECTION_CONFIG_VERSION, 1, &w, err);
	sw_free(&w);
	if (!r)
		r = snap_encode(&s, 0, buf, len, err);
	snap_close(&s);
	return r;
}

static int handshake(struct src *s, struct terr *err)
{
	struct mig_hello h;
	struct state_writer w;
	uint8_t *buf = NULL;
	uint32_t len, version;
	char peer_version[32];
	int r = mig_hello_fill(&h, &s->vm->mem, s->vm->nvcpus, s->m->cpuid,
			       s->p->live ? "live" : "warm", s->p->zstd, err);
	if (r)
		return r;
	sw_init(&w);
	mig_hello_encode(&h, &w);
	mig_hello_free(&h);
	r = w.err ? terr_set(err, ENOMEM, "out of memory") : mig_send_buf(&s->conn, MIG_HELLO, w.buf, w.len, err);
	sw_free(&w);
	if (!r)
		r = mig_expect(&s->conn, MIG_WELCOME, &buf, &len, err);
	if (!r)
		r = mig_parse_welcome(buf, len, &version, peer_version, sizeof(peer_version), err);
	free(buf);
	if (r)
		return r;
	log_info("migration", "destination %s: tern %s, protocol %u", s->p->dest, peer_version, version);
	size_t clen;
	r = config_message(s->m, &buf, &clen, err);
	if (!r)
		r = mig_send_buf(&s->conn, MIG_CONFIG, buf, clen, err);
	free(buf);
	buf = NULL;
	if (!r)
		r = mig_expect(&s->conn, MIG_READY, &buf, &len, err);
	free(buf);
	return r;
}

static int precopy(struct src *s, struct terr *err)
{
	bool all_dirty;
	int r = vm_dirty_log_start(s->vm, &all_dirty, err);
	if (r)
		return r;
	s->logging = true;
	s->st.state = MIG_S_PRECOPY;
	double send_ms = 0;
	uint64_t send_bytes = 0;
	unsigned hot = 0;
	want_all(s);
	for (s->st.round = 1;; s->st.round++) {
		double t = now_ms();
		uint64_t b = s->tx.bytes;
		if (s->st.round == 1) {
			s->round_t0 = t;
			s->round_b0 = b;
		}
		publish(s, true);
		r = send_pass(s, true, s->st.round == 1, err);
		if (r)
			return r;
		double dt = now_ms() - t;
		send_ms += dt;
		send_bytes += s->tx.bytes - b;
		uint64_t pages;
		r = collect_dirty(s, &pages, err);
		if (r)
			return r;
		uint64_t dirty = pages * PAGE;
		s->st.bandwidth = send_ms > 0 ? (uint64_t)((double)send_bytes * 1000 / send_ms) : 0;
		s->st.dirty_rate = dt > 0 ? (uint64_t)((double)dirty * 1000 / dt) : 0;
		s->st.remaining_bytes = dirty;
		s->st.expected_downtime_ms = (s->st.bandwidth ? (double)dirty * 1000 / (double)s->st.bandwidth : 0) +
					     STATE_EST_MS;
		const char *const names[] = { "round", "dirty_bytes" };
		const uint64_t vals[] = { s->st.round, dirty };
		r = mig_send_fields(&s->conn, MIG_ROUND, names, vals, 2, err);
		if (r)
			return r;
		log_debug("migration", "round %u: %.1f ms, %llu dirty pages, %.0f MB/s, expected "
			  "downtime %.1f ms, throttle %u%%", s->st.round, dt, (unsigned long long)pages,
			  (double)s->st.bandwidth / 1e6, s->st.expected_downtime_ms, s->st.throttle_pct);
		if (s->st.expected_downtime_ms <= s->p->downtime_limit_ms)
			return 0;
		if ((r = check_stop(s, err)))
			return r;
		/* the guest dirties more than half of what the link carries:
		 * two such rounds in a row hold its vCPUs a growing share of the
		 * time */
		if (s->st.round >= 2 && s->st.dirty_rate > s->st.bandwidth / 2) {
			if (++hot >= 2) {
				unsigned pct = s->st.throttle_pct;
				throttle_set(s, pct == 0 ? 30 : pct < 90 ? pct + 20 > 90 ? 90 : pct + 20 : 99);
				hot = 0;
				log_debug("migration", "auto-converge: vCPUs held %u%% of the time",
					  s->st.throttle_pct);
			}
		} else {
			hot = 0;
		}
	}
}

/* After the guest is paused: the rest, the state, the handover. */
static int stop_and_copy(struct src *s, double *t_pause, struct terr *err)
{
	vm_pause(s->vm);
	s->paused = true;
	*t_pause = now_ms();
	if (s->p->live) {
		s->deadline = 0;   /* the last pages are few: finish */
	} else {
		s->round_t0 = *t_pause;
		s->round_b0 = s->tx.bytes;
	}
	throttle_stop(s);
	control_notify_state(s->m->control);
	s->st.state = MIG_S_STOPPED;
	pthread_mutex_lock(&s->vm->lock);
	bool exiting = s->vm->exit_req;
	bool user_paused = s->vm->paused_users > 1;
	pthread_mutex_unlock(&s->vm->lock);
	if (exiting)
		return terr_set(err, ESHUTDOWN, "the VM is shutting down");
	int r;
	if (s->p->live) {
		uint64_t pages;
		r = collect_dirty(s, &pages, err);
		if (!r)
			r = send_pass(s, false, false, err);
	} else {
		want_all(s);
		r = send_pass(s, false, true, err);
	}
	if (r)
		return r;
	struct snapshot snap;
	uint8_t *buf = NULL;
	size_t len = 0;
	snap_init_writer(&snap);
	r = snapshot_build_sections(s->m, &snap, err);
	if (!r)
		r = snap_encode(&snap, 0, &buf, &len, err);
	snap_close(&snap);
	if (!r)
		r = mig_send_buf(&s->conn, MIG_STATE, buf, len, err);
	free(buf);
	s->st.state_bytes = len;
	const char *const names[] = { "rounds", "ram_frames", "paused" };
	const uint64_t vals[] = { s->st.round, s->tx.frames, user_paused };
	if (!r)
		r = mig_send_fields(&s->conn, MIG_DONE, names, vals, 3, err);
	uint8_t *reply = NULL;
	uint32_t rlen;
	if (!r)
		r = mig_expect(&s->conn, MIG_HAVE_ALL, &reply, &rlen, err);
	free(reply);
	reply = NULL;
	if (r)
		return r;
	/* the disk handover: the devices were quiesced by the pause; writable
	 * images are flushed and their locks let go (they stay open, so that
	 * a failure from here to GO takes them back and the guest runs on);
	 * the destination takes its locks and says LOCKED */
	if (s->cancel && atomic_load(s->cancel))
		return terr_set(err, ECANCELED, "cancelled");
	s->released = true;
	r = mig_release_all(s->vm, err);
	if (!r)
		r = mig_send_buf(&s->conn, MIG_RELEASED, NULL, 0, err);
	if (!r)
		r = mig_expect(&s->conn, MIG_LOCKED, &reply, &rlen, err);
	free(reply);
	reply = NULL;
	if (r)
		return r;
	/* the commit point: from here the guest belongs to the destination */
	if (s->cancel && atomic_load(s->cancel))
		return terr_set(err, ECANCELED, "cancelled");
	s->st.committed = true;
	char why[600];
	snprintf(why, sizeof(why), "the guest was migrated to %s", s->p->dest);
	control_block_resume(s->m->control, why);
	s->conn.cancel = NULL;   /* too late to cancel */
	s->conn.timeout_ms = STARTED_WAIT_MS;
	r = mig_send_buf(&s->conn, MIG_GO, NULL, 0, err);
	if (!r)
		r = mig_expect(&s->conn, MIG_STARTED, &reply, &rlen, err);
	free(reply);
	if (r) {
		terr_prefix(err, "lost contact with the destination after handing the guest over "
			    "(it may be running there; it stays paused here for good): ");
		return r;
	}
	s->st.downtime_ms = now_ms() - *t_pause;
	return 0;
}

int migration_send(struct machine *m, const struct mig_params *p, atomic_bool *cancel,
		   mig_progress_fn progress, void *opaque, struct mig_stats *stats,
		   struct terr *err)
{
	struct src *s = calloc(1, sizeof(*s));
	if (!s)
		return terr_set(err, ENOMEM, "out of memory");
	s->m = m;
	s->vm = &m->vm;
	s->p = p;
	s->cancel = cancel;
	s->progress = progress;
	s->opaque = opaque;
	s->t0 = now_ms();
	s->deadline = p->timeout_s ? s->t0 + p->timeout_s * 1000.0 : 0;
	s->st.state = MIG_S_SETUP;
	s->st.live = p->live;
	s->st.ram_bytes = m->vm.mem.size;
	s->st.remaining_bytes = m->vm.mem.size;
	int fd = -1, r;
	double t_pause = 0;

	publish(s, true);
	r = check_stop(s, err);
	if (!r)
		r = mig_connect(p->dest, CONNECT_MS, &fd, err);
	if (!r)
		r = mig_conn_init(&s->conn, fd, "the destination", err);
	if (r)
		goto out;
	s->conn.cancel = cancel;
	s->conn.timeout_ms = PEER_WAIT_MS;
	mig_rl_init(&s->rl, p->max_bandwidth);
	s->conn.rl = &s->rl;
	/* under a cap, frames of at most half a window keep the pace even */
	size_t frame = MIG_RAM_MAX_DATA / 4;
	if (s->rl.per_window && frame > s->rl.per_window / 2)
		frame = s->rl.per_window / 2;
	r = slots_init(s, err);
	if (!r)
		r = mig_ram_tx_init(&s->tx, &s->conn, frame, p->zstd, err);
	if (!r && !(s->scratch = malloc(SCRATCH_PAGES * PAGE)))
		r = terr_set(err, ENOMEM, "out of memory for the RAM sender");
	if (r)
		goto out;
	s->tx_ready = true;
	r = handshake(s, err);
	if (r)
		goto out;
	s->st.setup_ms = now_ms() - s->t0;
	if (p->live) {
		r = precopy(s, err);
		if (r)
			goto out;
	} else {
		s->st.round = 1;
	}
	r = stop_and_copy(s, &t_pause, err);
out:
	throttle_stop(s);
	if (s->logging)
		vm_dirty_log_stop(s->vm);
	if (r && !s->st.committed) {
		/* tell the destination why, unless it is the one that went: first,
		 * so that it lets go of the disk locks we take back */
		if (s->conn.xxh && r != -EPIPE && r != -ECONNABORTED && r != -ECONNRESET) {
			s->conn.cancel = NULL;
			mig_send_refuse(&s->conn, err->msg);
		}
		if (s->released) {
			struct terr lerr = { 0 };
			/* wakes a destination waiting for GO: it ends and unlocks */
			shutdown(fd, SHUT_RDWR);
			if (mig_acquire_all(s->vm, MIG_LOCK_WAIT_SOURCE_MS, &lerr)) {
				/* the disk stays inactive: the guest gets I/O errors
				 * on it rather than sharing it with another writer */
				log_err("migration", "taking the disk locks back failed: %s", lerr.msg);
				char msg[1100];
				snprintf(msg, sizeof(msg), "%s; and a disk lock could not be taken back, "
					 "that disk fails its requests: %s", err->msg, lerr.msg);
				snprintf(err->msg, sizeof(err->msg), "%.*s", (int)sizeof(err->msg) - 1, msg);
			}
		}
		if (s->paused) {
			vm_resume(s->vm);
			control_notify_state(m->control);
		}
	}
	s->st.state = !r ? MIG_S_COMPLETED : r == -ECANCELED ? MIG_S_CANCELLED : MIG_S_FAILED;
	if (r)
		snprintf(s->st.error, sizeof(s->st.error), "%s", err->msg);
	s->st.remaining_bytes = r ? s->st.remaining_bytes : 0;
	publish(s, true);
	if (stats)
		*stats = s->st;
	if (s->tx_ready)
		mig_ram_tx_free(&s->tx);
	free(s->scratch);
	mig_conn_free(&s->conn);
	if (fd >= 0)
		close(fd);
	slots_free(s);
	free(s);
	return r;
}

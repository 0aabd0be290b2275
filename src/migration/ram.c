#include "migration/ram.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define PAGE 4096u
#define HEAD 8u

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

bool mig_page_is_zero(const uint8_t *p)
{
	const uint64_t *q = (const uint64_t *)p;
	for (unsigned i = 0; i < PAGE / 8; i += 8)
		if (q[i] | q[i + 1] | q[i + 2] | q[i + 3] | q[i + 4] | q[i + 5] | q[i + 6] | q[i + 7])
			return false;
	return true;
}

/* ---- sender ------------------------------------------------------------ */

int mig_ram_tx_init(struct mig_ram_tx *t, struct mig_conn *c, size_t max_data, bool zstd,
		    struct terr *err)
{
	memset(t, 0, sizeof(*t));
	t->c = c;
	max_data &= ~(size_t)(PAGE - 1);
	t->max_data = max_data < PAGE ? PAGE : max_data > MIG_RAM_MAX_DATA ? MIG_RAM_MAX_DATA : max_data;
	t->stage = malloc(t->max_data);
	t->table = malloc(HEAD + MIG_RAM_RUN_SIZE * MIG_RAM_MAX_RUNS);
	t->ext = malloc(sizeof(*t->ext) * (t->max_data / PAGE));
	t->file_fd = -1;
	t->zstd = zstd;
	if (zstd) {
		t->zcap = ZSTD_compressBound(t->max_data);
		t->zbuf = malloc(t->zcap);
		t->cctx = ZSTD_createCCtx();
	}
	if (!t->stage || !t->table || !t->ext || (zstd && (!t->zbuf || !t->cctx))) {
		mig_ram_tx_free(t);
		return terr_set(err, ENOMEM, "out of memory for the RAM sender");
	}
	return 0;
}

void mig_ram_tx_free(struct mig_ram_tx *t)
{
	free(t->stage);
	free(t->table);
	free(t->zbuf);
	free(t->ext);
	ZSTD_freeCCtx(t->cctx);
	t->ext = NULL;
	t->stage = t->table = t->zbuf = NULL;
	t->cctx = NULL;
}

int mig_ram_tx_flush(struct mig_ram_tx *t, struct terr *err)
{
	if (!t->nruns)
		return 0;
	uint32_t flags = 0;
	const uint8_t *data = t->stage;
	size_t dlen = t->stage_len;
	if (t->zstd && dlen) {
		size_t z = ZSTD_compressCCtx(t->cctx, t->zbuf, t->zcap, t->stage, t->stage_len, 1);
		/* worth it only when it saves something */
		if (!ZSTD_isError(z) && z < dlen - dlen / 16) {
			flags |= MIG_RAM_ZSTD;
			data = t->zbuf;
			dlen = z;
		}
	}
	put32(t->table, t->nruns);
	put32(t->table + 4, flags);
	struct iovec head = { t->table, HEAD + MIG_RAM_RUN_SIZE * t->nruns };
	struct iovec tail = { (void *)data, dlen };
	uint64_t before = t->c->tx_bytes;
	int r = mig_send_split(t->c, MIG_RAM, (uint32_t)(head.iov_len + dlen + t->file_len), &head, 1,
			       err);
	if (!r)
		r = mig_send_tail(t->c, &tail, 1, err);
	for (unsigned i = 0; i < t->next && !r; i++)
		r = mig_send_file(t->c, t->file_fd, t->ext[i][0], (size_t)t->ext[i][1], err);
	t->bytes += t->c->tx_bytes - before;
	t->frames++;
	t->nruns = 0;
	t->stage_len = 0;
	t->file_len = 0;
	t->next = 0;
	t->run_kind = 0;
	return r;
}

static int add_to_run(struct mig_ram_tx *t, uint64_t gpa, int kind, struct terr *err)
{
	if (t->nruns && t->run_kind == kind && t->run_end == gpa) {
		uint8_t *e = t->table + HEAD + MIG_RAM_RUN_SIZE * (t->nruns - 1);
		uint32_t n = get32(e + 8);
		if (kind == MIG_RUN_DATA || n < MIG_RAM_MAX_ZERO) {
			put32(e + 8, n + 1);
			t->run_end += PAGE;
			return 0;
		}
	}
	if (t->nruns == MIG_RAM_MAX_RUNS) {
		int r = mig_ram_tx_flush(t, err);
		if (r)
			return r;
	}
	uint8_t *e = t->table + HEAD + MIG_RAM_RUN_SIZE * t->nruns++;
	put64(e, gpa);
	put32(e + 8, 1);
	put16(e + 12, (uint16_t)kind);
	put16(e + 14, 0);
	t->run_kind = kind;
	t->run_end = gpa + PAGE;
	return 0;
}

int mig_ram_tx_page(struct mig_ram_tx *t, uint64_t gpa, const uint8_t *hva, struct terr *err)
{
	if (t->file_len || t->stage_len + PAGE > t->max_data) {
		int r = mig_ram_tx_flush(t, err);
		if (r)
			return r;
	}
	/* the copy is what gets checked and sent: the guest may be writing */
	uint8_t *dst = t->stage + t->stage_len;
	memcpy(dst, hva, PAGE);
	if (mig_page_is_zero(dst)) {
		t->pages_zero++;
		return add_to_run(t, gpa, MIG_RUN_ZERO, err);
	}
	int r = add_to_run(t, gpa, MIG_RUN_DATA, err);
	if (r)
		return r;
	/* the run may have been started in a new frame: the page is still at
	 * dst only if no flush happened */
	if (t->stage + t->stage_len != dst)
		memcpy(t->stage + t->stage_len, dst, PAGE);
	t->stage_len += PAGE;
	t->pages_data++;
	return 0;
}

uint8_t *mig_ram_tx_reserve(struct mig_ram_tx *t, size_t n, struct terr *err)
{
	if (n * PAGE > t->max_data) {
		terr_set(err, EINVAL, "%zu pages do not fit in one RAM frame", n);
		return NULL;
	}
	if ((t->file_len || t->stage_len + n * PAGE > t->max_data) && mig_ram_tx_flush(t, err))
		return NULL;
	return t->stage + t->stage_len;
}

int mig_ram_tx_commit(struct mig_ram_tx *t, uint64_t gpa, size_t n, struct terr *err)
{
	/* pages move down over the zero ones (never onto one not read yet) */
	const uint8_t *src = t->stage + t->stage_len;
	for (size_t i = 0; i < n; i++, src += PAGE, gpa += PAGE) {
		int r;
		if (mig_page_is_zero(src)) {
			t->pages_zero++;
			r = add_to_run(t, gpa, MIG_RUN_ZERO, err);
		} else {
			r = add_to_run(t, gpa, MIG_RUN_DATA, err);
			if (!r && src != t->stage + t->stage_len)
				memmove(t->stage + t->stage_len, src, PAGE);
			t->stage_len += PAGE;
			t->pages_data++;
		}
		if (r)
			return r;
	}
	return 0;
}

int mig_ram_tx_file_page(struct mig_ram_tx *t, uint64_t gpa, int fd, uint64_t off,
			 struct terr *err)
{
	if (t->stage_len || (t->file_len && fd != t->file_fd) || t->file_len + PAGE > t->max_data) {
		int r = mig_ram_tx_flush(t, err);
		if (r)
			return r;
	}
	int r = add_to_run(t, gpa, MIG_RUN_DATA, err);
	if (r)
		return r;
	t->file_fd = fd;
	if (t->next && t->ext[t->next - 1][0] + t->ext[t->next - 1][1] == off) {
		t->ext[t->next - 1][1] += PAGE;
	} else {
		t->ext[t->next][0] = off;
		t->ext[t->next][1] = PAGE;
		t->next++;
	}
	t->file_len += PAGE;
	t->pages_data++;
	return 0;
}

int mig_ram_tx_zero(struct mig_ram_tx *t, uint64_t gpa, struct terr *err)
{
	t->pages_zero++;
	return add_to_run(t, gpa, MIG_RUN_ZERO, err);
}

size_t mig_ram_summed(const uint8_t *payload, size_t len)
{
	if (len < HEAD)
		return len;
	uint64_t want = HEAD + (uint64_t)MIG_RAM_RUN_SIZE * get32(payload);
	return want < len ? (size_t)want : len;
}

/* ---- receiver ---------------------------------------------------------- */

int mig_ram_rx_init(struct mig_ram_rx *r, struct guest_mem *mem, struct terr *err)
{
	memset(r, 0, sizeof(*r));
	r->mem = mem;
	r->written = calloc((mem->size / PAGE + 63) / 64 + 1, sizeof(uint64_t));
	r->table = malloc(HEAD + MIG_RAM_RUN_SIZE * MIG_RAM_MAX_RUNS);
	if (!r->written || !r->table) {
		mig_ram_rx_free(r);
		return terr_set(err, ENOMEM, "out of memory for the RAM receiver");
	}
	return 0;
}

void mig_ram_rx_free(struct mig_ram_rx *r)
{
	free(r->written);
	free(r->table);
	free(r->zsrc);
	free(r->zdst);
	ZSTD_freeDCtx(r->dctx);
	memset(r, 0, sizeof(*r));
}

static int bad(struct mig_conn *c, struct terr *err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int bad(struct mig_conn *c, struct terr *err, const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return terr_set(err, EPROTO, "RAM frame %u from %s: %s", c->rx_seq - 1, c->peer, msg);
}

static void mark(struct mig_ram_rx *r, const uint8_t *hva, uint32_t npages, bool data)
{
	uint64_t first = (uint64_t)(hva - r->mem->base) / PAGE;
	for (uint64_t p = first; p < first + npages; p++) {
		uint64_t bit = 1ull << (p % 64);
		if (data) {
			r->written[p / 64] |= bit;
		} else if (r->written[p / 64] & bit) {
			/* it held data before: zero it; a page never written is
			 * zero already and stays untouched (not even allocated) */
			memset(r->mem->base + p * PAGE, 0, PAGE);
			r->written[p / 64] &= ~bit;
		}
	}
}

int mig_ram_rx_frame(struct mig_ram_rx *r, struct mig_conn *c, uint32_t len, struct terr *err)
{
	uint8_t head[HEAD];
	if (len < HEAD)
		return bad(c, err, "%u bytes, shorter than its head", len);
	int e = mig_frame_read(c, head, HEAD, err);
	if (e)
		return e;
	uint32_t nruns = get32(head), flags = get32(head + 4);
	if (nruns == 0 || nruns > MIG_RAM_MAX_RUNS)
		return bad(c, err, "%u runs (1 to %d allowed)", nruns, MIG_RAM_MAX_RUNS);
	if (flags & ~MIG_RAM_ZSTD)
		return bad(c, err, "flags 0x%x this tern does not know", flags);
	if ((uint64_t)len - HEAD < (uint64_t)nruns * MIG_RAM_RUN_SIZE)
		return bad(c, err, "%u runs do not fit in %u bytes", nruns, len);
	uint8_t *tab = r->table;
	if ((e = mig_frame_read(c, tab, (size_t)nruns * MIG_RAM_RUN_SIZE, err)) ||
	    (e = mig_frame_check(c, err)))
		return e;
	/* check every run before writing anything */
	uint64_t data_bytes = 0;
	for (uint32_t i = 0; i < nruns; i++) {
		const uint8_t *t = tab + MIG_RAM_RUN_SIZE * i;
		uint64_t gpa = get64(t);
		uint32_t n = get32(t + 8);
		unsigned kind = get16(t + 12);
		if (get16(t + 14))
			return bad(c, err, "run %u has reserved bits set", i);
		if (kind != MIG_RUN_DATA && kind != MIG_RUN_ZERO)
			return bad(c, err, "run %u is of unknown kind %u", i, kind);
		uint32_t max = kind == MIG_RUN_DATA ? MIG_RAM_MAX_DATA / PAGE : MIG_RAM_MAX_ZERO;
		if (n == 0 || n > max)
			return bad(c, err, "run %u has %u pages (1 to %u allowed)", i, n, max);
		if (gpa % PAGE || !guest_mem_ptr(r->mem, gpa, (uint64_t)n * PAGE))
			return bad(c, err, "run %u (%u pages at 0x%llx) is not inside guest RAM", i, n,
				   (unsigned long long)gpa);
		if (kind == MIG_RUN_DATA)
			data_bytes += (uint64_t)n * PAGE;
	}
	if (data_bytes > MIG_RAM_MAX_DATA)
		return bad(c, err, "%llu bytes of pages, more than the %u one frame may hold",
			   (unsigned long long)data_bytes, MIG_RAM_MAX_DATA);
	uint64_t rest = (uint64_t)len - HEAD - (uint64_t)nruns * MIG_RAM_RUN_SIZE;
	const uint8_t *src = NULL;
	if (flags & MIG_RAM_ZSTD) {
		if (!rest || !data_bytes)
			return bad(c, err, "compressed, but with %llu bytes for %llu bytes of pages",
				   (unsigned long long)rest, (unsigned long long)data_bytes);
		if (!r->zsrc) {
			r->zsrc = malloc(mig_type_max(MIG_RAM));
			r->zdst = malloc(MIG_RAM_MAX_DATA);
			r->dctx = ZSTD_createDCtx();
			if (!r->zsrc || !r->zdst || !r->dctx)
				return terr_set(err, ENOMEM, "out of memory for decompression");
		}
		if ((e = mig_frame_read(c, r->zsrc, rest, err)) || (e = mig_frame_end(c, err)))
			return e;
		size_t got = ZSTD_decompressDCtx(r->dctx, r->zdst, MIG_RAM_MAX_DATA, r->zsrc, rest);
		if (ZSTD_isError(got))
			return bad(c, err, "its compressed pages do not decompress: %s",
				   ZSTD_getErrorName(got));
		if (got != data_bytes)
			return bad(c, err, "its compressed pages decompress to %zu bytes, its runs "
				   "need %llu", got, (unsigned long long)data_bytes);
		src = r->zdst;
	} else if (rest != data_bytes) {
		return bad(c, err, "%llu bytes of pages follow, its runs need %llu",
			   (unsigned long long)rest, (unsigned long long)data_bytes);
	}
	for (uint32_t i = 0; i < nruns; i++) {
		const uint8_t *t = tab + MIG_RAM_RUN_SIZE * i;
		uint32_t n = get32(t + 8);
		uint8_t *hva = guest_mem_ptr(r->mem, get64(t), (uint64_t)n * PAGE);
		if (get16(t + 12) == MIG_RUN_ZERO) {
			mark(r, hva, n, false);
			r->pages_zero += n;
			continue;
		}
		if (src) {
			memcpy(hva, src, (size_t)n * PAGE);
			src += (size_t)n * PAGE;
		} else if ((e = mig_frame_read(c, hva, (size_t)n * PAGE, err))) {
			return e;
		}
		mark(r, hva, n, true);
		r->pages_data += n;
	}
	if (!src && (e = mig_frame_end(c, err)))
		return e;
	r->frames++;
	return 0;
}

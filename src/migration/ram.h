/* Guest RAM on the migration stream: RAM frames of page runs
 * (docs/migration-protocol.md).
 *
 *     u32 nruns | u32 flags | nruns x (u64 gpa | u32 npages | u16 kind | u16 0)
 *     | data
 *
 * A DATA run's pages follow in the data part, in run order; a ZERO run has
 * none (the pages are zero). With MIG_RAM_ZSTD the data part is one zstd
 * frame holding those bytes. The frame's checksum covers its head and run
 * table only: the receiver checks it before it writes anything, then reads
 * the data part straight into guest RAM.
 *
 * Page data leaves the sender either copied (mig_ram_tx_page, reserve and
 * commit: a page the guest changes meanwhile is sent as it was when copied)
 * or straight from guest RAM's memfd with sendfile (mig_ram_tx_file_page: no
 * copy; what arrives is the page as it was when the kernel copied it out on
 * the receiving side). Either way a page the guest writes after its dirty
 * bit was cleared is in the next round's log and sent again, so the last
 * version to arrive is the one the paused guest left. */
#ifndef TERN_MIGRATION_RAM_H
#define TERN_MIGRATION_RAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/memory.h"
#include "migration/wire.h"
#include "util/error.h"

#define MIG_RAM_MAX_RUNS     2048
#define MIG_RAM_MAX_DATA     (8u << 20)     /* page bytes in one frame */
#define MIG_RAM_MAX_ZERO     (1u << 20)     /* pages in one zero run */
#define MIG_RAM_RUN_SIZE     16
#define MIG_RAM_ZSTD         1u

enum { MIG_RUN_DATA = 1, MIG_RUN_ZERO = 2 };

struct mig_ram_tx {
	struct mig_conn *c;
	size_t max_data;            /* page bytes per frame */
	uint8_t *stage;             /* page bytes of the frame being built */
	size_t stage_len;
	uint8_t *table;             /* 8-byte head + runs */
	unsigned nruns;
	uint64_t run_end;           /* gpa just past the last run */
	int run_kind;
	bool zstd;
	void *cctx;
	uint8_t *zbuf;
	size_t zcap;
	/* zero-copy frames: page data as extents of file_fd */
	int file_fd;
	uint64_t (*ext)[2];         /* offset, length */
	unsigned next;
	size_t file_len;
	/* counters */
	uint64_t pages_data, pages_zero, frames, bytes;   /* bytes: on the wire */
};

/* max_data: page bytes per frame (a multiple of 4 KiB, at most
 * MIG_RAM_MAX_DATA; smaller keeps frames short under a bandwidth cap). */
int mig_ram_tx_init(struct mig_ram_tx *t, struct mig_conn *c, size_t max_data, bool zstd,
		    struct terr *err);
void mig_ram_tx_free(struct mig_ram_tx *t);
/* Take page `gpa` (host address hva): copied now, sent with its frame. */
int mig_ram_tx_page(struct mig_ram_tx *t, uint64_t gpa, const uint8_t *hva, struct terr *err);
int mig_ram_tx_flush(struct mig_ram_tx *t, struct terr *err);
/* Room for n consecutive pages (n * 4 KiB <= max_data) in the frame being
 * built, for the caller to fill (pread from the RAM's memfd: holes read as
 * zeros without being allocated); commit then takes them as the pages at
 * gpa. NULL on error. */
uint8_t *mig_ram_tx_reserve(struct mig_ram_tx *t, size_t n, struct terr *err);
int mig_ram_tx_commit(struct mig_ram_tx *t, uint64_t gpa, size_t n, struct terr *err);
/* Page `gpa` sent from fd at offset off without a copy (not with zstd), and
 * a page known to be zero. */
int mig_ram_tx_file_page(struct mig_ram_tx *t, uint64_t gpa, int fd, uint64_t off,
			 struct terr *err);
int mig_ram_tx_zero(struct mig_ram_tx *t, uint64_t gpa, struct terr *err);
/* How many bytes at the start of a RAM frame's payload its checksum covers
 * (the head and run table, as far as the payload reaches). */
size_t mig_ram_summed(const uint8_t *payload, size_t len);
/* Whether the 4 KiB page at p is all zeros. */
bool mig_page_is_zero(const uint8_t *p);

struct mig_ram_rx {
	struct guest_mem *mem;
	uint64_t *written;          /* pages holding data (by RAM offset) */
	uint8_t *table;
	uint8_t *zsrc, *zdst;
	void *dctx;
	uint64_t pages_data, pages_zero, frames;
};

/* mem: the destination's RAM, zero-filled (fresh). */
int mig_ram_rx_init(struct mig_ram_rx *r, struct guest_mem *mem, struct terr *err);
void mig_ram_rx_free(struct mig_ram_rx *r);
/* The payload of a RAM frame whose header mig_frame_begin has read: checks
 * every run, writes the pages, checks the checksum (mig_frame_end). On error
 * guest RAM holds garbage: the migration must be abandoned. */
int mig_ram_rx_frame(struct mig_ram_rx *r, struct mig_conn *c, uint32_t len, struct terr *err);

#endif

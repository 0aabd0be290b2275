/* The migration stream's framing (docs/migration-protocol.md): every message
 * is one frame
 *
 *     u32 magic "TMIG" | u16 type | u16 flags (0) | u32 length | u32 seq |
 *     u64 checksum | payload (length bytes)
 *
 * little-endian, the checksum being XXH3-64 over the first 16 header bytes
 * and the payload (for RAM frames only the payload's head: their page data,
 * sent straight from guest RAM, is left to TCP's checksums), seq counting
 * the frames of each direction from 0. The
 * connection is a non-blocking socket (or, for fuzzing and tests, a memory
 * buffer to read from); every wait can be cut short by a cancel flag, an
 * abort fd (a signalfd) or a time limit. The receiver of a frame trusts
 * nothing: bad magic, an unexpected seq, a length over the limit of its type
 * and a checksum mismatch are errors naming the frame. */
#ifndef TERN_MIGRATION_WIRE_H
#define TERN_MIGRATION_WIRE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/error.h"

#define MIG_MAGIC          0x47494d54u   /* "TMIG" */
#define MIG_HDR_SIZE       24
#define MIG_MAX_PAYLOAD    (64u << 20)   /* any frame; each type has its own, smaller limit */

enum mig_type {
	MIG_HELLO = 1,     /* source -> destination: who I am, what the guest needs */
	MIG_WELCOME,       /* destination: accepted, protocol version chosen */
	MIG_REFUSE,        /* either side: no (reason); ends the migration */
	MIG_CONFIG,        /* source: the configuration (a snapshot with one section) */
	MIG_READY,         /* destination: machine built, send RAM */
	MIG_RAM,           /* source: page runs */
	MIG_ROUND,         /* source: a pre-copy round ended */
	MIG_STATE,         /* source: vCPU, VM and device state (a snapshot without RAM) */
	MIG_DONE,          /* source: that was everything */
	MIG_HAVE_ALL,      /* destination: everything received and loaded */
	MIG_GO,            /* source: the guest is yours; I will never run it again */
	MIG_STARTED,       /* destination: the guest runs here */
	MIG_RELEASED,      /* source (protocol 2): disks flushed, their image locks let go */
	MIG_LOCKED,        /* destination (protocol 2): it holds its disks' image locks */
	MIG_TYPE_MAX = MIG_LOCKED,
};

const char *mig_type_name(unsigned type);
/* The largest payload a frame of this type may have (0 for unknown types). */
uint32_t mig_type_max(unsigned type);

/* Sliding-window rate limit: at most `rate` bytes in any window of
 * MIG_RL_WINDOW_NS, and so at most `rate` bytes/s in any one-second window
 * (a second is ten windows). */
#define MIG_RL_WINDOW_NS  100000000ull
#define MIG_RL_SLOTS      4096
struct mig_ratelimit {
	uint64_t per_window;        /* bytes allowed in one window; 0 = unlimited */
	uint64_t in_window;         /* bytes of the entries below */
	uint64_t t[MIG_RL_SLOTS];   /* ring of (time, bytes) of recent sends */
	uint64_t n[MIG_RL_SLOTS];
	unsigned head, count;
	uint64_t sleep_ns;          /* total time spent waiting for the limit */
};
void mig_rl_init(struct mig_ratelimit *rl, uint64_t bytes_per_sec);

struct mig_conn {
	int fd;                     /* non-blocking socket, or -1: read from mem */
	const uint8_t *mem;
	size_t mem_len, mem_pos;
	int abort_fd;               /* -1, or an fd whose readability aborts a wait */
	int timeout_ms;             /* longest wait for the peer; -1 for ever */
	atomic_bool *cancel;        /* NULL, or set from another thread to stop */
	struct mig_ratelimit *rl;   /* NULL: unlimited */
	const char *peer;           /* "the destination", for messages */
	uint32_t tx_seq, rx_seq;
	uint64_t tx_bytes, rx_bytes;
	bool tx_broken;             /* a frame went out in part: nothing more can follow */
	uint32_t tx_tail;           /* bytes the frame being sent still owes (mig_send_split) */
	void *xxh;                  /* XXH3 state for the frame being read */
	/* the frame being read */
	unsigned rx_type;
	uint32_t rx_len, rx_left;
	uint64_t rx_sum;
	bool rx_checked;            /* checksum verified early (mig_frame_check) */
};

/* fd: a connected socket (made non-blocking here) or -1. */
int mig_conn_init(struct mig_conn *c, int fd, const char *peer, struct terr *err);
void mig_conn_init_mem(struct mig_conn *c, const uint8_t *buf, size_t len, const char *peer);
void mig_conn_free(struct mig_conn *c);   /* does not close fd */

/* Send one frame made of the iovecs (at most 8), waiting for the rate limit
 * first. */
int mig_send(struct mig_conn *c, unsigned type, const struct iovec *iov, int niov,
	     struct terr *err);
int mig_send_buf(struct mig_conn *c, unsigned type, const void *p, size_t len, struct terr *err);
/* A frame of len payload bytes sent in parts: the header and `head` (the
 * part the checksum covers) now, the len - |head| bytes after it through
 * mig_send_tail and mig_send_file (sendfile: no copy through user space).
 * Until they are all out no other frame may be sent; a failure among them
 * leaves the stream broken. */
int mig_send_split(struct mig_conn *c, unsigned type, uint32_t len, const struct iovec *head,
		   int nhead, struct terr *err);
int mig_send_tail(struct mig_conn *c, const struct iovec *iov, int niov, struct terr *err);
int mig_send_file(struct mig_conn *c, int fd, uint64_t off, size_t len, struct terr *err);

/* Reading a frame in pieces (RAM goes straight to guest memory): begin reads
 * and checks the header; read takes payload bytes (at most what is left);
 * end checks that the payload was consumed and the checksum matches. Until
 * end returned 0 nothing read may be trusted. */
int mig_frame_begin(struct mig_conn *c, unsigned *type, uint32_t *len, struct terr *err);
int mig_frame_read(struct mig_conn *c, void *dst, size_t n, struct terr *err);
int mig_frame_end(struct mig_conn *c, struct terr *err);
/* Check the checksum against the bytes read so far (a frame whose checksum
 * covers only its head); the rest is read unchecked. */
int mig_frame_check(struct mig_conn *c, struct terr *err);
/* A whole frame into a malloc'd buffer (*buf, *len; free it). */
int mig_recv(struct mig_conn *c, unsigned *type, uint8_t **buf, uint32_t *len, struct terr *err);

/* Raw I/O with the same waits (used by the above). */
int mig_write_all(struct mig_conn *c, const struct iovec *iov, int niov, struct terr *err);
int mig_read_all(struct mig_conn *c, void *dst, size_t n, struct terr *err);

/* Header encoding (tests and the fuzzer build frames with it). */
void mig_hdr_encode(uint8_t hdr[MIG_HDR_SIZE], unsigned type, uint32_t len, uint32_t seq,
		    const struct iovec *iov, int niov);

#endif

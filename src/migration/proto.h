/* The migration handshake and small messages (docs/migration-protocol.md).
 * Their payloads are tagged-field blobs (state/state.h): a reader skips
 * fields it does not know and defaults missing ones, so both ends can grow
 * fields without a protocol version bump; the version changes only when a
 * message's meaning does. */
#ifndef TERN_MIGRATION_PROTO_H
#define TERN_MIGRATION_PROTO_H

#include <stdbool.h>
#include <stdint.h>

#include "core/memory.h"
#include "migration/wire.h"
#include "state/state.h"
#include "util/error.h"

struct kvm_cpuid2;

/* The protocol this tern speaks, and the oldest it still accepts.
 * 2: the disk lock handover (RELEASED, LOCKED) between HAVE_ALL and GO.
 * 3: a RAM frame's checksum covers its head and run table only, so page
 * data can go out of guest RAM without a copy (sendfile).
 * A peer speaking only an older one is refused with the versions named. */
#define MIG_PROTO_VERSION  3
#define MIG_PROTO_MIN      3
#define MIG_PAGE_SIZE      4096u
#define MIG_MAX_CPUID      1024

struct mig_cpuid_entry {
	uint32_t function, index, eax, ebx, ecx, edx;
};

/* HELLO: what the source is and what the guest needs of the destination. */
struct mig_hello {
	uint32_t proto_min, proto_max;
	char tern_version[32];
	char mode[8];                       /* "warm" or "live" */
	char cpu_vendor[16];                /* the vendor the guest sees */
	struct mig_cpuid_entry *cpuid;      /* the CPUID the guest sees */
	unsigned ncpuid;
	uint64_t mem_size, page_size;
	unsigned nregions;
	struct { uint64_t gpa, size, offset; } regions[GUEST_MEM_MAX_REGIONS];
	uint32_t cpus;
	bool zstd;                          /* RAM frames may be compressed */
};

/* Fill from a machine's RAM, vCPU count and guest CPUID (as KVM reports
 * what it supports: the list every vCPU is given). */
int mig_hello_fill(struct mig_hello *h, const struct guest_mem *mem, unsigned cpus,
		   const struct kvm_cpuid2 *cpuid, const char *mode, bool zstd, struct terr *err);
void mig_hello_encode(const struct mig_hello *h, struct state_writer *w);
int mig_hello_decode(const uint8_t *buf, size_t len, struct mig_hello *h, struct terr *err);
void mig_hello_free(struct mig_hello *h);

/* The destination's checks; each fills err with the reason sent back in
 * REFUSE. Versions: the newest both speak goes to *chosen. */
int mig_check_version(const struct mig_hello *h, uint32_t *chosen, struct terr *err);
/* Same CPU vendor, and every feature bit the guest sees is one `host`
 * (KVM_GET_SUPPORTED_CPUID here) supports. */
int mig_check_cpu(const struct mig_hello *h, const struct kvm_cpuid2 *host, struct terr *err);
/* The RAM layout this tern makes for that size is the one the source has. */
int mig_check_layout(const struct mig_hello *h, struct terr *err);

/* WELCOME and REFUSE */
int mig_send_welcome(struct mig_conn *c, uint32_t version, struct terr *err);
int mig_parse_welcome(const uint8_t *buf, size_t len, uint32_t *version, char *tern_version,
		      size_t n, struct terr *err);
/* Best effort: the peer may be gone. */
void mig_send_refuse(struct mig_conn *c, const char *reason);

/* Receive a frame that must be of type `want` (*buf malloc'd, may be NULL
 * when len is 0... always freed by the caller). A REFUSE instead becomes an
 * error carrying the peer's reason. */
int mig_expect(struct mig_conn *c, unsigned want, uint8_t **buf, uint32_t *len, struct terr *err);

/* A message of named unsigned fields (ROUND, DONE): name, value pairs. */
int mig_send_fields(struct mig_conn *c, unsigned type, const char *const *names,
		    const uint64_t *values, unsigned n, struct terr *err);
int mig_parse_fields(const uint8_t *buf, size_t len, unsigned type, const char *const *names,
		     uint64_t *values, unsigned n, struct terr *err);

/* "tcp:HOST:PORT" or "unix:PATH" */
int mig_connect(const char *dest, int timeout_ms, int *fd, struct terr *err);
/* Listen on `spec` (port 0 picks one); *bound gets the address in the same
 * syntax, with the port chosen. */
int mig_listen(const char *spec, int *fd, char *bound, size_t n, struct terr *err);
/* Syntax check only. */
int mig_addr_check(const char *spec, struct terr *err);

#endif

#include "migration/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- HELLO ------------------------------------------------------------- */

int mig_hello_fill(struct mig_hello *h, const struct guest_mem *mem, unsigned cpus,
		   const struct kvm_cpuid2 *cpuid, const char *mode, bool zstd, struct terr *err)
{
	memset(h, 0, sizeof(*h));
	h->proto_min = MIG_PROTO_MIN;
	h->proto_max = MIG_PROTO_VERSION;
	snprintf(h->tern_version, sizeof(h->tern_version), "%s", TERN_VERSION);
	snprintf(h->mode, sizeof(h->mode), "%s", mode);
	h->ncpuid = cpuid->nent < MIG_MAX_CPUID ? cpuid->nent : MIG_MAX_CPUID;
	h->cpuid = calloc(h->ncpuid ? h->ncpuid : 1, sizeof(*h->cpuid));
	if (!h->cpuid)
		return terr_set(err, ENOMEM, "out of memory");
	for (unsigned i = 0; i < h->ncpuid; i++) {
		const struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		h->cpuid[i] = (struct mig_cpuid_entry){ e->function, e->index, e->eax, e->ebx,
							e->ecx, e->edx };
		if (e->function == 0) {
			memcpy(h->cpu_vendor, &e->ebx, 4);
			memcpy(h->cpu_vendor + 4, &e->edx, 4);
			memcpy(h->cpu_vendor + 8, &e->ecx, 4);
		}
	}
	h->mem_size = mem->size;
	h->page_size = MIG_PAGE_SIZE;
	h->nregions = mem->nregions;
	for (unsigned i = 0; i < mem->nregions; i++) {
		h->regions[i].gpa = mem->regions[i].gpa;
		h->regions[i].size = mem->regions[i].size;
		h->regions[i].offset = mem->regions[i].offset;
	}
	h->cpus = cpus;
	h->zstd = zstd;
	return 0;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> 8 * i);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void mig_hello_encode(const struct mig_hello *h, struct state_writer *w)
{
	char n[32];
	sw_uint(w, "proto_min", h->proto_min);
	sw_uint(w, "proto_max", h->proto_max);
	sw_str(w, "tern_version", h->tern_version);
	sw_str(w, "mode", h->mode);
	sw_str(w, "cpu_vendor", h->cpu_vendor);
	uint8_t *c = malloc((size_t)h->ncpuid * 24 + 1);
	if (c) {
		for (unsigned i = 0; i < h->ncpuid; i++) {
			const struct mig_cpuid_entry *e = &h->cpuid[i];
			const uint32_t v[6] = { e->function, e->index, e->eax, e->ebx, e->ecx, e->edx };
			for (int k = 0; k < 6; k++)
				put_le32(c + 24 * i + 4 * k, v[k]);
		}
		sw_bytes(w, "cpuid", c, (size_t)h->ncpuid * 24);
		free(c);
	} else {
		w->err = -ENOMEM;
	}
	sw_uint(w, "mem_size", h->mem_size);
	sw_uint(w, "page_size", h->page_size);
	sw_uint(w, "regions", h->nregions);
	for (unsigned i = 0; i < h->nregions; i++) {
		snprintf(n, sizeof(n), "region%u.gpa", i);
		sw_uint(w, n, h->regions[i].gpa);
		snprintf(n, sizeof(n), "region%u.size", i);
		sw_uint(w, n, h->regions[i].size);
		snprintf(n, sizeof(n), "region%u.offset", i);
		sw_uint(w, n, h->regions[i].offset);
	}
	sw_uint(w, "cpus", h->cpus);
	sw_uint(w, "zstd", h->zstd);
}

/* A string field into dst (n bytes with the NUL); bytes outside printable
 * ASCII become '?' (they end up in messages). Absent: "". */
static int get_str(const struct state_reader *r, const char *name, char *dst, size_t n,
		   struct terr *err)
{
	const void *p;
	size_t len;
	int e = sr_bytes(r, name, &p, &len, err);
	if (e)
		return e;
	if (len >= n)
		return terr_set(err, EPROTO, "%s: field %s is %zu bytes long, at most %zu", r->what,
				name, len, n - 1);
	for (size_t i = 0; i < len; i++) {
		char ch = ((const char *)p)[i];
		dst[i] = ch >= 0x20 && ch < 0x7f ? ch : '?';
	}
	dst[len] = '\0';
	return 0;
}

int mig_hello_decode(const uint8_t *buf, size_t len, struct mig_hello *h, struct terr *err)
{
	struct state_reader r;
	uint64_t v;
	char n[32];
	memset(h, 0, sizeof(*h));
	int e = sr_init(&r, buf, len, "HELLO", err);
	if (e)
		return e;
	if ((e = sr_uint_max(&r, "proto_min", 0, UINT32_MAX, &v, err)))
		goto out;
	h->proto_min = (uint32_t)v;
	if ((e = sr_uint_max(&r, "proto_max", 0, UINT32_MAX, &v, err)))
		goto out;
	h->proto_max = (uint32_t)v;
	if ((e = get_str(&r, "tern_version", h->tern_version, sizeof(h->tern_version), err)) ||
	    (e = get_str(&r, "mode", h->mode, sizeof(h->mode), err)) ||
	    (e = get_str(&r, "cpu_vendor", h->cpu_vendor, sizeof(h->cpu_vendor), err)))
		goto out;
	const void *c;
	size_t clen;
	if ((e = sr_bytes(&r, "cpuid", &c, &clen, err)))
		goto out;
	if (clen % 24 || clen / 24 > MIG_MAX_CPUID) {
		e = terr_set(err, EPROTO, "HELLO: the CPUID list is %zu bytes, not a list of at most "
			     "%d 24-byte entries", clen, MIG_MAX_CPUID);
		goto out;
	}
	h->ncpuid = (unsigned)(clen / 24);
	h->cpuid = calloc(h->ncpuid ? h->ncpuid : 1, sizeof(*h->cpuid));
	if (!h->cpuid) {
		e = terr_set(err, ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < h->ncpuid; i++) {
		const uint8_t *p = (const uint8_t *)c + 24 * i;
		h->cpuid[i] = (struct mig_cpuid_entry){ get_le32(p), get_le32(p + 4), get_le32(p + 8),
							get_le32(p + 12), get_le32(p + 16),
							get_le32(p + 20) };
	}
	if ((e = sr_uint(&r, "mem_size", 0, &h->mem_size, err)) ||
	    (e = sr_uint(&r, "page_size", MIG_PAGE_SIZE, &h->page_size, err)) ||
	    (e = sr_uint_max(&r, "regions", 0, GUEST_MEM_MAX_REGIONS, &v, err)))
		goto out;
	h->nregions = (unsigned)v;
	for (unsigned i = 0; i < h->nregions; i++) {
		snprintf(n, sizeof(n), "region%u.gpa", i);
		if ((e = sr_uint(&r, n, 0, &h->regions[i].gpa, err)))
			goto out;
		snprintf(n, sizeof(n), "region%u.size", i);
		if ((e = sr_uint(&r, n, 0, &h->regions[i].size, err)))
			goto out;
		snprintf(n, sizeof(n), "region%u.offset", i);
		if ((e = sr_uint(&r, n, 0, &h->regions[i].offset, err)))
			goto out;
	}
	if ((e = sr_uint_max(&r, "cpus", 0, UINT32_MAX, &v, err)))
		goto out;
	h->cpus = (uint32_t)v;
	if ((e = sr_uint_max(&r, "zstd", 0, 1, &v, err)))
		goto out;
	h->zstd = v;
out:
	sr_free(&r);
	if (e)
		mig_hello_free(h);
	return e;
}

void mig_hello_free(struct mig_hello *h)
{
	free(h->cpuid);
	h->cpuid = NULL;
	h->ncpuid = 0;
}

/* ---- the destination's checks ------------------------------------------ */

int mig_check_version(const struct mig_hello *h, uint32_t *chosen, struct terr *err)
{
	if (h->proto_max < h->proto_min)
		return terr_set(err, EPROTO, "the source (tern %s) announces protocol versions %u to %u, "
				"an empty range", h->tern_version, h->proto_min, h->proto_max);
	if (h->proto_max < MIG_PROTO_MIN || h->proto_min > MIG_PROTO_VERSION)
		return terr_set(err, EPROTONOSUPPORT, "incompatible migration protocol: the source "
				"(tern %s) speaks versions %u to %u, this destination (tern %s) "
				"speaks %u to %u", h->tern_version, h->proto_min, h->proto_max,
				TERN_VERSION, MIG_PROTO_MIN, MIG_PROTO_VERSION);
	*chosen = h->proto_max < MIG_PROTO_VERSION ? h->proto_max : MIG_PROTO_VERSION;
	return 0;
}

enum { R_EAX, R_EBX, R_ECX, R_EDX };
/* The CPUID words that are feature bit sets: a bit the guest sees must be
 * one the destination supports. */
static const struct {
	uint32_t function, index;
	int reg;
	const char *name;
} feature_words[] = {
	{ 0x1, 0, R_ECX, "1.ecx" },
	{ 0x1, 0, R_EDX, "1.edx" },
	{ 0x6, 0, R_EAX, "6.eax" },
	{ 0x7, 0, R_EBX, "7.0.ebx" },
	{ 0x7, 0, R_ECX, "7.0.ecx" },
	{ 0x7, 0, R_EDX, "7.0.edx" },
	{ 0x7, 1, R_EAX, "7.1.eax" },
	{ 0x7, 1, R_EDX, "7.1.edx" },
	{ 0xd, 0, R_EAX, "0xd.0.eax (XSAVE state components)" },
	{ 0xd, 0, R_EDX, "0xd.0.edx (XSAVE state components)" },
	{ 0xd, 1, R_EAX, "0xd.1.eax" },
	{ 0x80000001, 0, R_ECX, "0x80000001.ecx" },
	{ 0x80000001, 0, R_EDX, "0x80000001.edx" },
	{ 0x80000007, 0, R_EDX, "0x80000007.edx" },
	{ 0x80000008, 0, R_EBX, "0x80000008.ebx" },
	{ 0x40000001, 0, R_EAX, "0x40000001.eax (KVM features)" },
};

static uint32_t reg_of(const struct mig_cpuid_entry *e, int reg)
{
	switch (reg) {
	case R_EAX: return e->eax;
	case R_EBX: return e->ebx;
	case R_ECX: return e->ecx;
	default: return e->edx;
	}
}

static const struct mig_cpuid_entry *find_src(const struct mig_hello *h, uint32_t f, uint32_t idx)
{
	for (unsigned i = 0; i < h->ncpuid; i++)
		if (h->cpuid[i].function == f && h->cpuid[i].index == idx)
			return &h->cpuid[i];
	return NULL;
}

static bool find_host(const struct kvm_cpuid2 *host, uint32_t f, uint32_t idx,
		      struct mig_cpuid_entry *out)
{
	for (unsigned i = 0; i < host->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &host->entries[i];
		if (e->function == f && (e->index == idx || !(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX))) {
			*out = (struct mig_cpuid_entry){ e->function, e->index, e->eax, e->ebx, e->ecx,
							 e->edx };
			return true;
		}
	}
	return false;
}

int mig_check_cpu(const struct mig_hello *h, const struct kvm_cpuid2 *host, struct terr *err)
{
	struct mig_cpuid_entry he;
	char here[16] = "";
	if (find_host(host, 0, 0, &he)) {
		memcpy(here, &he.ebx, 4);
		memcpy(here + 4, &he.edx, 4);
		memcpy(here + 8, &he.ecx, 4);
	}
	for (int i = 0; here[i]; i++)
		if (here[i] < 0x20 || here[i] > 0x7e)
			here[i] = '?';
	if (strcmp(here, h->cpu_vendor))
		return terr_set(err, EPROTO, "the guest runs on a %s CPU, this host's is %s: a guest "
				"cannot move between CPU vendors", h->cpu_vendor[0] ? h->cpu_vendor : "?",
				here[0] ? here : "?");
	for (size_t i = 0; i < sizeof(feature_words) / sizeof(feature_words[0]); i++) {
		const struct mig_cpuid_entry *se = find_src(h, feature_words[i].function,
							    feature_words[i].index);
		if (!se)
			continue;
		uint32_t want = reg_of(se, feature_words[i].reg), have = 0;
		if (find_host(host, feature_words[i].function, feature_words[i].index, &he))
			have = reg_of(&he, feature_words[i].reg);
		if (want & ~have)
			return terr_set(err, EPROTO, "the guest sees CPU features this host lacks: CPUID "
					"%s bits 0x%08x (the guest has 0x%08x, this host offers 0x%08x)",
					feature_words[i].name, want & ~have, want, have);
	}
	return 0;
}

int mig_check_layout(const struct mig_hello *h, struct terr *err)
{
	struct guest_mem m;
	memset(&m, 0, sizeof(m));
	if (h->page_size != MIG_PAGE_SIZE)
		return terr_set(err, EPROTO, "the source uses %llu-byte pages, this tern %u-byte pages",
				(unsigned long long)h->page_size, MIG_PAGE_SIZE);
	if (h->mem_size < (2u << 20) || h->mem_size % MIG_PAGE_SIZE || h->mem_size > (1ull << 46))
		return terr_set(err, EPROTO, "the source announces %llu bytes of RAM, not a size tern "
				"makes", (unsigned long long)h->mem_size);
	guest_mem_layout(&m, h->mem_size);
	bool same = m.nregions == h->nregions;
	for (unsigned i = 0; same && i < m.nregions; i++)
		same = m.regions[i].gpa == h->regions[i].gpa && m.regions[i].size == h->regions[i].size &&
		       m.regions[i].offset == h->regions[i].offset;
	if (!same)
		return terr_set(err, EPROTO, "the guest's %llu MiB of RAM are laid out in %u region(s) "
				"starting at 0x%llx, which this tern (%s) does not lay out the same "
				"way", (unsigned long long)(h->mem_size >> 20), h->nregions,
				(unsigned long long)(h->nregions ? h->regions[0].gpa : 0), TERN_VERSION);
	return 0;
}

/* ---- WELCOME, REFUSE, field messages ------------------------------------ */

int mig_send_welcome(struct mig_conn *c, uint32_t version, struct terr *err)
{
	struct state_writer w;
	sw_init(&w);
	sw_uint(&w, "proto", version);
	sw_str(&w, "tern_version", TERN_VERSION);
	int r = w.err ? terr_set(err, ENOMEM, "out of memory") : mig_send_buf(c, MIG_WELCOME, w.buf, w.len, err);
	sw_free(&w);
	return r;
}

int mig_parse_welcome(const uint8_t *buf, size_t len, uint32_t *version, char *tern_version,
		      size_t n, struct terr *err)
{
	struct state_reader r;
	uint64_t v;
	int e = sr_init(&r, buf, len, "WELCOME", err);
	if (e)
		return e;
	e = sr_uint_max(&r, "proto", 0, UINT32_MAX, &v, err);
	if (!e)
		e = get_str(&r, "tern_version", tern_version, n, err);
	sr_free(&r);
	if (e)
		return e;
	if (v < MIG_PROTO_MIN || v > MIG_PROTO_VERSION)
		return terr_set(err, EPROTONOSUPPORT, "the destination (tern %s) chose migration protocol "
				"version %llu, this source speaks %u to %u", tern_version,
				(unsigned long long)v, MIG_PROTO_MIN, MIG_PROTO_VERSION);
	*version = (uint32_t)v;
	return 0;
}

void mig_send_refuse(struct mig_conn *c, const char *reason)
{
	struct state_writer w;
	struct terr err = { 0 };
	sw_init(&w);
	sw_str(&w, "reason", reason);
	if (!w.err && c->fd >= 0 && !c->tx_broken) {
		/* the peer may have stopped reading: do not wait long */
		int saved = c->timeout_ms;
		c->timeout_ms = 2000;
		mig_send_buf(c, MIG_REFUSE, w.buf, w.len, &err);
		c->timeout_ms = saved;
	}
	sw_free(&w);
}

int mig_expect(struct mig_conn *c, unsigned want, uint8_t **buf, uint32_t *len, struct terr *err)
{
	unsigned type;
	int r = mig_recv(c, &type, buf, len, err);
	if (r)
		return r;
	if (type == want)
		return 0;
	if (type == MIG_REFUSE) {
		struct state_reader rd;
		char reason[400] = "";
		if (sr_init(&rd, *buf, *len, "REFUSE", NULL) == 0) {
			get_str(&rd, "reason", reason, sizeof(reason), NULL);
			sr_free(&rd);
		}
		free(*buf);
		*buf = NULL;
		return terr_set(err, ECONNABORTED, "%s gave up: %s", c->peer,
				reason[0] ? reason : "(no reason given)");
	}
	free(*buf);
	*buf = NULL;
	return terr_set(err, EPROTO, "%s sent %s where %s was expected", c->peer, mig_type_name(type),
			mig_type_name(want));
}

int mig_send_fields(struct mig_conn *c, unsigned type, const char *const *names,
		    const uint64_t *values, unsigned n, struct terr *err)
{
	struct state_writer w;
	sw_init(&w);
	for (unsigned i = 0; i < n; i++)
		sw_uint(&w, names[i], values[i]);
	int r = w.err ? terr_set(err, ENOMEM, "out of memory") : mig_send_buf(c, type, w.buf, w.len, err);
	sw_free(&w);
	return r;
}

int mig_parse_fields(const uint8_t *buf, size_t len, unsigned type, const char *const *names,
		     uint64_t *values, unsigned n, struct terr *err)
{
	struct state_reader r;
	int e = sr_init(&r, buf, len, mig_type_name(type), err);
	if (e)
		return e;
	for (unsigned i = 0; !e && i < n; i++)
		e = sr_uint(&r, names[i], values[i], &values[i], err);
	sr_free(&r);
	return e;
}

/* ---- addresses --------------------------------------------------------- */

/* Splits "tcp:HOST:PORT" (HOST may be [v6]) or "unix:PATH". */
static int parse_addr(const char *spec, bool *is_unix, char *host, size_t hn, char *port,
		      size_t pn, struct terr *err)
{
	if (!strncmp(spec, "unix:", 5)) {
		*is_unix = true;
		if (!spec[5])
			return terr_set(err, EINVAL, "\"%s\": unix: needs a path", spec);
		if (strlen(spec + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return terr_set(err, ENAMETOOLONG, "\"%s\": the socket path is too long", spec);
		snprintf(host, hn, "%s", spec + 5);
		return 0;
	}
	if (strncmp(spec, "tcp:", 4))
		return terr_set(err, EINVAL, "\"%s\" is not an address (tcp:HOST:PORT or unix:PATH)", spec);
	*is_unix = false;
	const char *h = spec + 4, *colon;
	if (*h == '[') {
		const char *close = strchr(h, ']');
		if (!close || close[1] != ':')
			return terr_set(err, EINVAL, "\"%s\": expected tcp:[ADDRESS]:PORT", spec);
		if ((size_t)(close - h - 1) >= hn)
			return terr_set(err, EINVAL, "\"%s\": host name too long", spec);
		snprintf(host, hn, "%.*s", (int)(close - h - 1), h + 1);
		colon = close + 1;
	} else {
		colon = strrchr(h, ':');
		if (!colon || colon == h)
			return terr_set(err, EINVAL, "\"%s\": expected tcp:HOST:PORT", spec);
		if ((size_t)(colon - h) >= hn)
			return terr_set(err, EINVAL, "\"%s\": host name too long", spec);
		snprintf(host, hn, "%.*s", (int)(colon - h), h);
	}
	const char *p = colon + 1;
	char *end;
	long v = strtol(p, &end, 10);
	if (!*p || *end || v < 0 || v > 65535)
		return terr_set(err, EINVAL, "\"%s\": \"%s\" is not a port number", spec, p);
	snprintf(port, pn, "%ld", v);
	return 0;
}

int mig_addr_check(const char *spec, struct terr *err)
{
	bool u;
	char host[256], port[16];
	return parse_addr(spec, &u, host, sizeof(host), port, sizeof(port), err);
}

static int connect_wait(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return -errno;
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int n;
	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return -ETIMEDOUT;
	int e = 0;
	socklen_t el = sizeof(e);
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
	return -e;
}

int mig_connect(const char *dest, int timeout_ms, int *out, struct terr *err)
{
	bool is_unix;
	char host[256], port[16];
	int r = parse_addr(dest, &is_unix, host, sizeof(host), port, sizeof(port), err);
	if (r)
		return r;
	if (is_unix) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		memcpy(sa.sun_path, host, strlen(host) + 1);   /* length checked by parse_addr */
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return terr_set(err, errno, "socket: %s", strerror(errno));
		int e = connect_wait(fd, (struct sockaddr *)&sa, sizeof(sa), timeout_ms);
		if (e) {
			close(fd);
			return terr_set(err, -e, "cannot connect to %s: %s", dest, strerror(-e));
		}
		*out = fd;
		return 0;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	int g = getaddrinfo(host, port, &hints, &res);
	if (g)
		return terr_set(err, EHOSTUNREACH, "cannot resolve %s: %s", host, gai_strerror(g));
	int e = -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			e = -errno;
			continue;
		}
		e = connect_wait(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms);
		if (!e) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			*out = fd;
			freeaddrinfo(res);
			return 0;
		}
		close(fd);
	}
	freeaddrinfo(res);
	return terr_set(err, -e, "cannot connect to %s: %s", dest, strerror(-e));
}

int mig_listen(const char *spec, int *out, char *bound, size_t bn, struct terr *err)
{
	bool is_unix;
	char host[256], port[16];
	int r = parse_addr(spec, &is_unix, host, sizeof(host), port, sizeof(port), err);
	if (r)
		return r;
	if (is_unix) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		memcpy(sa.sun_path, host, strlen(host) + 1);   /* length checked by parse_addr */
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return terr_set(err, errno, "socket: %s", strerror(errno));
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0) {
			int e = errno;
			close(fd);
			return terr_set(err, e, "cannot listen on %s: %s", spec, strerror(e));
		}
		*out = fd;
		snprintf(bound, bn, "%s", spec);
		return 0;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE }, *res;
	int g = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (g)
		return terr_set(err, EHOSTUNREACH, "cannot resolve %s: %s", host, gai_strerror(g));
	int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
	if (fd < 0) {
		int e = errno;
		freeaddrinfo(res);
		return terr_set(err, e, "socket: %s", strerror(e));
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 1) < 0) {
		int e = errno;
		close(fd);
		freeaddrinfo(res);
		return terr_set(err, e, "cannot listen on %s: %s", spec, strerror(e));
	}
	freeaddrinfo(res);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char nport[16] = "?";
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		getnameinfo((struct sockaddr *)&ss, sl, NULL, 0, nport, sizeof(nport), NI_NUMERICSERV);
	if (strchr(host, ':'))
		snprintf(bound, bn, "tcp:[%s]:%s", host, nport);
	else
		snprintf(bound, bn, "tcp:%s:%s", host, nport);
	*out = fd;
	return 0;
}

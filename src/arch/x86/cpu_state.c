#include "arch/x86/cpu_state.h"
#include "core/kvm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

/* Field helpers: the field name is the C member path; on load the current
 * value (what KVM_GET returned for the fresh vCPU) is the default. */
#define PUT(w, s, f) sw_uint(w, #f, (uint64_t)(s)->f)
#define GET(r, s, f)                                                        \
	do {                                                                \
		uint64_t v_;                                                \
		int e_ = sr_uint(r, #f, (uint64_t)(s)->f, &v_, err);        \
		if (e_)                                                     \
			return e_;                                          \
		(s)->f = (__typeof__((s)->f))v_;                            \
	} while (0)

static void put_named(struct state_writer *w, const char *prefix, const char *name, uint64_t v)
{
	char n[64];
	snprintf(n, sizeof(n), "%s.%s", prefix, name);
	sw_uint(w, n, v);
}

static int get_named(const struct state_reader *r, const char *prefix, const char *name,
		     uint64_t *v, struct terr *err)
{
	char n[64];
	snprintf(n, sizeof(n), "%s.%s", prefix, name);
	return sr_uint(r, n, *v, v, err);
}

/* ---- segments and descriptor tables ---- */

static void put_seg(struct state_writer *w, const char *p, const struct kvm_segment *s)
{
	put_named(w, p, "base", s->base);
	put_named(w, p, "limit", s->limit);
	put_named(w, p, "selector", s->selector);
	put_named(w, p, "type", s->type);
	put_named(w, p, "present", s->present);
	put_named(w, p, "dpl", s->dpl);
	put_named(w, p, "db", s->db);
	put_named(w, p, "s", s->s);
	put_named(w, p, "l", s->l);
	put_named(w, p, "g", s->g);
	put_named(w, p, "avl", s->avl);
	put_named(w, p, "unusable", s->unusable);
}

static int get_seg(const struct state_reader *r, const char *p, struct kvm_segment *s,
		   struct terr *err)
{
	static const char *const names[] = { "base", "limit", "selector", "type", "present", "dpl",
					     "db", "s", "l", "g", "avl", "unusable" };
	uint64_t v[12] = { s->base, s->limit, s->selector, s->type, s->present, s->dpl,
			   s->db, s->s, s->l, s->g, s->avl, s->unusable };
	for (int i = 0; i < 12; i++) {
		int e = get_named(r, p, names[i], &v[i], err);
		if (e)
			return e;
	}
	s->base = v[0];
	s->limit = (uint32_t)v[1];
	s->selector = (uint16_t)v[2];
	s->type = (uint8_t)v[3];
	s->present = (uint8_t)v[4];
	s->dpl = (uint8_t)v[5];
	s->db = (uint8_t)v[6];
	s->s = (uint8_t)v[7];
	s->l = (uint8_t)v[8];
	s->g = (uint8_t)v[9];
	s->avl = (uint8_t)v[10];
	s->unusable = (uint8_t)v[11];
	return 0;
}

static void put_dt(struct state_writer *w, const char *p, const struct kvm_dtable *d)
{
	put_named(w, p, "base", d->base);
	put_named(w, p, "limit", d->limit);
}

static int get_dt(const struct state_reader *r, const char *p, struct kvm_dtable *d,
		  struct terr *err)
{
	uint64_t b = d->base, l = d->limit;
	int e = get_named(r, p, "base", &b, err);
	if (!e)
		e = get_named(r, p, "limit", &l, err);
	d->base = b;
	d->limit = (uint16_t)l;
	return e;
}

/* ---- MSRs ---- */

int x86_msr_index_list(struct kvm_sys *kvm, uint32_t **out, unsigned *n, struct terr *err)
{
	struct kvm_msr_list probe = { .nmsrs = 0 };
	if (ioctl(kvm->fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return terr_set(err, errno, "KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(uint32_t));
	if (!l)
		return terr_set(err, ENOMEM, "out of memory for the MSR list");
	l->nmsrs = probe.nmsrs;
	if (ioctl(kvm->fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
		free(l);
		return terr_set(err, errno, "KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
	}
	*out = malloc(l->nmsrs * sizeof(uint32_t) + 1);
	if (!*out) {
		free(l);
		return terr_set(err, ENOMEM, "out of memory for the MSR list");
	}
	memcpy(*out, l->indices, l->nmsrs * sizeof(uint32_t));
	*n = l->nmsrs;
	free(l);
	return 0;
}

/* Reads every listed MSR the vCPU can read. KVM_GET_MSRS stops at the first
 * MSR it refuses, so refused ones are dropped one by one. Stored as an array
 * of (u32 index, u32 0, u64 value) little-endian records. */
static int save_msrs(int fd, unsigned idx, const uint32_t *list, unsigned n,
		     struct state_writer *w, struct terr *err)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
	uint8_t *rec = malloc((size_t)n * 16 + 1);
	unsigned got = 0;
	int r = 0;
	if (!m || !rec) {
		r = terr_set(err, ENOMEM, "vcpu.%u: out of memory for MSRs", idx);
		goto out;
	}
	unsigned pos = 0;
	while (pos < n) {
		unsigned cnt = n - pos;
		m->nmsrs = cnt;
		for (unsigned i = 0; i < cnt; i++)
			m->entries[i] = (struct kvm_msr_entry){ .index = list[pos + i] };
		int done = ioctl(fd, KVM_GET_MSRS, m);
		if (done < 0) {
			r = terr_set(err, errno, "vcpu.%u: KVM_GET_MSRS: %s", idx, strerror(errno));
			goto out;
		}
		for (int i = 0; i < done; i++) {
			uint8_t *p = rec + (size_t)got * 16;
			uint64_t v = m->entries[i].data;
			uint32_t ix = m->entries[i].index;
			for (int b = 0; b < 4; b++)
				p[b] = (uint8_t)(ix >> (8 * b));
			memset(p + 4, 0, 4);
			for (int b = 0; b < 8; b++)
				p[8 + b] = (uint8_t)(v >> (8 * b));
			got++;
		}
		pos += (unsigned)done + 1;   /* skip the one KVM refused */
	}
	sw_bytes(w, "msrs", rec, (size_t)got * 16);
out:
	free(m);
	free(rec);
	return r;
}

/* One saved MSR record: u32 index, u32 zero, u64 value, little-endian. */
static void msr_record_get(const uint8_t *b, uint32_t *ix, uint64_t *v)
{
	*ix = 0;
	*v = 0;
	for (int k = 3; k >= 0; k--)
		*ix = *ix << 8 | b[k];
	for (int k = 7; k >= 0; k--)
		*v = *v << 8 | b[8 + k];
}

static int load_msrs(int fd, unsigned idx, const struct state_reader *r, struct terr *err)
{
	const void *p;
	size_t len;
	int ret = sr_bytes(r, "msrs", &p, &len, err);
	if (ret || !p)
		return ret;
	if (len % 16)
		return terr_set(err, EINVAL, "vcpu.%u: MSR records are %zu bytes, not a multiple of 16",
				idx, len);
	unsigned n = (unsigned)(len / 16);
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
	if (!m)
		return terr_set(err, ENOMEM, "vcpu.%u: out of memory for MSRs", idx);
	const uint8_t *b = p;
	for (unsigned i = 0; i < n; i++, b += 16) {
		uint32_t ix;
		uint64_t v;
		msr_record_get(b, &ix, &v);
		m->entries[i] = (struct kvm_msr_entry){ .index = ix, .data = v };
	}
	m->nmsrs = n;
	int done = ioctl(fd, KVM_SET_MSRS, m);
	if (done != (int)n)
		ret = terr_set(err, EINVAL, "vcpu.%u: this host's KVM refused MSR 0x%x (value 0x%llx) "
			       "of the snapshot", idx, done >= 0 && done < (int)n ? m->entries[done].index : 0,
			       done >= 0 && done < (int)n ? (unsigned long long)m->entries[done].data : 0ULL);
	free(m);
	return ret;
}

#define MSR_IA32_TSC_DEADLINE 0x6e0

static int reload_tsc_deadline(int fd, unsigned idx, const struct state_reader *r,
			       struct terr *err)
{
	const void *p;
	size_t len;
	int ret = sr_bytes(r, "msrs", &p, &len, err);
	if (ret || !p)
		return ret;
	const uint8_t *b = p;
	for (size_t i = 0; i + 16 <= len; i += 16, b += 16) {
		uint32_t ix;
		uint64_t v;
		msr_record_get(b, &ix, &v);
		if (ix != MSR_IA32_TSC_DEADLINE)
			continue;
		struct {
			struct kvm_msrs hdr;
			struct kvm_msr_entry e;
		} m;
		memset(&m, 0, sizeof(m));
		m.hdr.nmsrs = 1;
		m.e.index = ix;
		m.e.data = v;
		if (ioctl(fd, KVM_SET_MSRS, &m) != 1)
			return terr_set(err, EINVAL, "vcpu.%u: KVM refused the TSC deadline 0x%llx", idx,
					(unsigned long long)v);
		break;
	}
	return 0;
}

/* ---- vCPU ---- */

static void save_regs(struct state_writer *w, const struct kvm_regs *g)
{
	PUT(w, g, rax); PUT(w, g, rbx); PUT(w, g, rcx); PUT(w, g, rdx);
	PUT(w, g, rsi); PUT(w, g, rdi); PUT(w, g, rsp); PUT(w, g, rbp);
	PUT(w, g, r8); PUT(w, g, r9); PUT(w, g, r10); PUT(w, g, r11);
	PUT(w, g, r12); PUT(w, g, r13); PUT(w, g, r14); PUT(w, g, r15);
	PUT(w, g, rip); PUT(w, g, rflags);
}

static int load_regs(const struct state_reader *r, struct kvm_regs *g, struct terr *err)
{
	GET(r, g, rax); GET(r, g, rbx); GET(r, g, rcx); GET(r, g, rdx);
	GET(r, g, rsi); GET(r, g, rdi); GET(r, g, rsp); GET(r, g, rbp);
	GET(r, g, r8); GET(r, g, r9); GET(r, g, r10); GET(r, g, r11);
	GET(r, g, r12); GET(r, g, r13); GET(r, g, r14); GET(r, g, r15);
	GET(r, g, rip); GET(r, g, rflags);
	return 0;
}

static const char *const seg_names[8] = { "cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt" };

static struct kvm_segment *seg_of(struct kvm_sregs *s, int i)
{
	struct kvm_segment *segs[8] = { &s->cs, &s->ds, &s->es, &s->fs, &s->gs, &s->ss, &s->tr, &s->ldt };
	return segs[i];
}

static void save_sregs(struct state_writer *w, struct kvm_sregs *s)
{
	for (int i = 0; i < 8; i++)
		put_seg(w, seg_names[i], seg_of(s, i));
	put_dt(w, "gdt", &s->gdt);
	put_dt(w, "idt", &s->idt);
	PUT(w, s, cr0); PUT(w, s, cr2); PUT(w, s, cr3); PUT(w, s, cr4); PUT(w, s, cr8);
	PUT(w, s, efer); PUT(w, s, apic_base);
	sw_bytes(w, "interrupt_bitmap", s->interrupt_bitmap, sizeof(s->interrupt_bitmap));
}

static int load_sregs(const struct state_reader *r, struct kvm_sregs *s, struct terr *err)
{
	int e;
	for (int i = 0; i < 8; i++)
		if ((e = get_seg(r, seg_names[i], seg_of(s, i), err)))
			return e;
	if ((e = get_dt(r, "gdt", &s->gdt, err)) || (e = get_dt(r, "idt", &s->idt, err)))
		return e;
	GET(r, s, cr0); GET(r, s, cr2); GET(r, s, cr3); GET(r, s, cr4); GET(r, s, cr8);
	GET(r, s, efer); GET(r, s, apic_base);
	return sr_bytes_exact(r, "interrupt_bitmap", s->interrupt_bitmap,
			      sizeof(s->interrupt_bitmap), err);
}

static void save_events(struct state_writer *w, const struct kvm_vcpu_events *ev)
{
	PUT(w, ev, exception.injected); PUT(w, ev, exception.nr);
	PUT(w, ev, exception.has_error_code); PUT(w, ev, exception.pending);
	PUT(w, ev, exception.error_code);
	PUT(w, ev, interrupt.injected); PUT(w, ev, interrupt.nr); PUT(w, ev, interrupt.soft);
	PUT(w, ev, interrupt.shadow);
	PUT(w, ev, nmi.injected); PUT(w, ev, nmi.pending); PUT(w, ev, nmi.masked);
	PUT(w, ev, sipi_vector); PUT(w, ev, flags);
	PUT(w, ev, smi.smm); PUT(w, ev, smi.pending); PUT(w, ev, smi.smm_inside_nmi);
	PUT(w, ev, smi.latched_init);
	PUT(w, ev, triple_fault.pending);
	PUT(w, ev, exception_has_payload); PUT(w, ev, exception_payload);
}

static int load_events(const struct state_reader *r, struct kvm_vcpu_events *ev, struct terr *err)
{
	GET(r, ev, exception.injected); GET(r, ev, exception.nr);
	GET(r, ev, exception.has_error_code); GET(r, ev, exception.pending);
	GET(r, ev, exception.error_code);
	GET(r, ev, interrupt.injected); GET(r, ev, interrupt.nr); GET(r, ev, interrupt.soft);
	GET(r, ev, interrupt.shadow);
	GET(r, ev, nmi.injected); GET(r, ev, nmi.pending); GET(r, ev, nmi.masked);
	GET(r, ev, sipi_vector); GET(r, ev, flags);
	GET(r, ev, smi.smm); GET(r, ev, smi.pending); GET(r, ev, smi.smm_inside_nmi);
	GET(r, ev, smi.latched_init);
	GET(r, ev, triple_fault.pending);
	GET(r, ev, exception_has_payload); GET(r, ev, exception_payload);
	return 0;
}

static void save_debugregs(struct state_writer *w, const struct kvm_debugregs *d)
{
	char n[16];
	for (int i = 0; i < 4; i++) {
		snprintf(n, sizeof(n), "db%d", i);
		sw_uint(w, n, d->db[i]);
	}
	PUT(w, d, dr6); PUT(w, d, dr7); PUT(w, d, flags);
}

static int load_debugregs(const struct state_reader *r, struct kvm_debugregs *d, struct terr *err)
{
	char n[16];
	for (int i = 0; i < 4; i++) {
		snprintf(n, sizeof(n), "db%d", i);
		uint64_t v = d->db[i];
		int e = sr_uint(r, n, v, &v, err);
		if (e)
			return e;
		d->db[i] = v;
	}
	GET(r, d, dr6); GET(r, d, dr7); GET(r, d, flags);
	return 0;
}

#define VCPU_IOCTL(fd, req, arg, what)                                                   \
	do {                                                                             \
		if (ioctl(fd, req, arg) < 0)                                             \
			return terr_set(err, errno, "vcpu.%u: %s: %s", idx, what, strerror(errno)); \
	} while (0)

/* The xsave area: KVM_GET_XSAVE2 when the host has state beyond 4 KiB. */
static int xsave_size(int fd)
{
	int sz = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	return sz > (int)sizeof(struct kvm_xsave) ? sz : (int)sizeof(struct kvm_xsave);
}

int x86_vcpu_state_save(int fd, unsigned idx, const uint32_t *msrs, unsigned nmsrs,
			struct state_writer *w, struct terr *err)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dbg;
	struct kvm_mp_state mp;
	int r;

	VCPU_IOCTL(fd, KVM_GET_REGS, &regs, "KVM_GET_REGS");
	VCPU_IOCTL(fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
	VCPU_IOCTL(fd, KVM_GET_XCRS, &xcrs, "KVM_GET_XCRS");
	VCPU_IOCTL(fd, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC");
	VCPU_IOCTL(fd, KVM_GET_VCPU_EVENTS, &ev, "KVM_GET_VCPU_EVENTS");
	VCPU_IOCTL(fd, KVM_GET_DEBUGREGS, &dbg, "KVM_GET_DEBUGREGS");
	VCPU_IOCTL(fd, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE");

	int xs = xsave_size(fd);
	struct kvm_xsave *xsave = calloc(1, (size_t)xs);
	if (!xsave)
		return terr_set(err, ENOMEM, "vcpu.%u: out of memory for xsave", idx);
	if (ioctl(fd, xs > (int)sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, xsave) < 0) {
		r = terr_set(err, errno, "vcpu.%u: KVM_GET_XSAVE: %s", idx, strerror(errno));
		free(xsave);
		return r;
	}
	sw_bytes(w, "xsave", xsave, (size_t)xs);
	free(xsave);

	struct state_writer sub;
	sw_init(&sub); save_regs(&sub, &regs); sw_blob(w, "regs", &sub); sw_free(&sub);
	sw_init(&sub); save_sregs(&sub, &sregs); sw_blob(w, "sregs", &sub); sw_free(&sub);
	sw_init(&sub); save_events(&sub, &ev); sw_blob(w, "events", &sub); sw_free(&sub);
	sw_init(&sub); save_debugregs(&sub, &dbg); sw_blob(w, "debugregs", &sub); sw_free(&sub);
	sw_uint(w, "xcr_count", xcrs.nr_xcrs);
	for (unsigned i = 0; i < xcrs.nr_xcrs && i < KVM_MAX_XCRS; i++) {
		char n[24];
		snprintf(n, sizeof(n), "xcr%u", xcrs.xcrs[i].xcr);
		sw_uint(w, n, xcrs.xcrs[i].value);
	}
	sw_bytes(w, "lapic", lapic.regs, sizeof(lapic.regs));
	sw_uint(w, "mp_state", mp.mp_state);
	r = save_msrs(fd, idx, msrs, nmsrs, w, err);
	if (r)
		return r;
	return w->err ? terr_set(err, -w->err, "vcpu.%u: out of memory", idx) : 0;
}

static int load_sub(const struct state_reader *r, const char *name, unsigned idx,
		    struct state_reader *sub, struct terr *err)
{
	const void *p;
	size_t len;
	char what[32];
	int e = sr_bytes(r, name, &p, &len, err);
	if (e)
		return e;
	snprintf(what, sizeof(what), "vcpu.%u %s", idx, name);
	return sr_init(sub, p ? p : "", len, what, err);
}

int x86_vcpu_state_load(int fd, unsigned idx, const struct state_reader *r, struct terr *err)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dbg;
	struct kvm_mp_state mp;
	struct state_reader sub;
	int e;

	/* the fresh vCPU's state is the default of every field */
	VCPU_IOCTL(fd, KVM_GET_REGS, &regs, "KVM_GET_REGS");
	VCPU_IOCTL(fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
	VCPU_IOCTL(fd, KVM_GET_XCRS, &xcrs, "KVM_GET_XCRS");
	VCPU_IOCTL(fd, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC");
	VCPU_IOCTL(fd, KVM_GET_VCPU_EVENTS, &ev, "KVM_GET_VCPU_EVENTS");
	VCPU_IOCTL(fd, KVM_GET_DEBUGREGS, &dbg, "KVM_GET_DEBUGREGS");
	VCPU_IOCTL(fd, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE");

	if ((e = load_sub(r, "regs", idx, &sub, err)))
		return e;
	e = load_regs(&sub, &regs, err);
	sr_free(&sub);
	if (e || (e = load_sub(r, "sregs", idx, &sub, err)))
		return e;
	e = load_sregs(&sub, &sregs, err);
	sr_free(&sub);
	if (e || (e = load_sub(r, "events", idx, &sub, err)))
		return e;
	e = load_events(&sub, &ev, err);
	sr_free(&sub);
	if (e || (e = load_sub(r, "debugregs", idx, &sub, err)))
		return e;
	e = load_debugregs(&sub, &dbg, err);
	sr_free(&sub);
	if (e)
		return e;
	for (unsigned i = 0; i < xcrs.nr_xcrs && i < KVM_MAX_XCRS; i++) {
		char n[24];
		snprintf(n, sizeof(n), "xcr%u", xcrs.xcrs[i].xcr);
		uint64_t v = xcrs.xcrs[i].value;
		if ((e = sr_uint(r, n, v, &v, err)))
			return e;
		xcrs.xcrs[i].value = v;
	}
	if ((e = sr_bytes_exact(r, "lapic", lapic.regs, sizeof(lapic.regs), err)))
		return e;
	uint64_t mps;
	if ((e = sr_uint_max(r, "mp_state", mp.mp_state, 255, &mps, err)))
		return e;
	mp.mp_state = (uint32_t)mps;

	/* xsave: the saved area may be shorter (an older host); never longer
	 * than what this host's KVM takes */
	const void *xp;
	size_t xl;
	if ((e = sr_bytes(r, "xsave", &xp, &xl, err)))
		return e;
	if (xp) {
		int xs = xsave_size(fd);
		if (xl > (size_t)xs)
			return terr_set(err, EINVAL, "vcpu.%u: the snapshot's xsave area is %zu bytes, this "
					"host's KVM takes at most %d", idx, xl, xs);
		if (xl < sizeof(struct kvm_xsave))
			return terr_set(err, EINVAL, "vcpu.%u: the snapshot's xsave area is %zu bytes, "
					"shorter than the %zu-byte legacy area", idx, xl,
					sizeof(struct kvm_xsave));
		struct kvm_xsave *x = calloc(1, (size_t)xs);
		if (!x)
			return terr_set(err, ENOMEM, "vcpu.%u: out of memory", idx);
		memcpy(x, xp, xl);
		if (ioctl(fd, KVM_SET_XSAVE, x) < 0) {
			e = terr_set(err, errno, "vcpu.%u: KVM_SET_XSAVE: %s", idx, strerror(errno));
			free(x);
			return e;
		}
		free(x);
	}

	/* order: special registers first (mode, APIC base), then the rest */
	VCPU_IOCTL(fd, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
	VCPU_IOCTL(fd, KVM_SET_REGS, &regs, "KVM_SET_REGS");
	VCPU_IOCTL(fd, KVM_SET_XCRS, &xcrs, "KVM_SET_XCRS");
	if ((e = load_msrs(fd, idx, r, err)))
		return e;
	VCPU_IOCTL(fd, KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE");
	VCPU_IOCTL(fd, KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
	/* setting the LAPIC resets its timer: a TSC-deadline timer is armed
	 * again by writing its MSR after it, as on real hardware */
	if ((e = reload_tsc_deadline(fd, idx, r, err)))
		return e;
	ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW;
	VCPU_IOCTL(fd, KVM_SET_VCPU_EVENTS, &ev, "KVM_SET_VCPU_EVENTS");
	VCPU_IOCTL(fd, KVM_SET_DEBUGREGS, &dbg, "KVM_SET_DEBUGREGS");
	return 0;
}

/* ---- VM: PIC, IOAPIC, PIT, clock ---- */

static void save_pic(struct state_writer *w, const struct kvm_pic_state *p)
{
	PUT(w, p, last_irr); PUT(w, p, irr); PUT(w, p, imr); PUT(w, p, isr);
	PUT(w, p, priority_add); PUT(w, p, irq_base); PUT(w, p, read_reg_select);
	PUT(w, p, poll); PUT(w, p, special_mask); PUT(w, p, init_state); PUT(w, p, auto_eoi);
	PUT(w, p, rotate_on_auto_eoi); PUT(w, p, special_fully_nested_mode); PUT(w, p, init4);
	PUT(w, p, elcr); PUT(w, p, elcr_mask);
}

static int load_pic(const struct state_reader *r, struct kvm_pic_state *p, struct terr *err)
{
	GET(r, p, last_irr); GET(r, p, irr); GET(r, p, imr); GET(r, p, isr);
	GET(r, p, priority_add); GET(r, p, irq_base); GET(r, p, read_reg_select);
	GET(r, p, poll); GET(r, p, special_mask); GET(r, p, init_state); GET(r, p, auto_eoi);
	GET(r, p, rotate_on_auto_eoi); GET(r, p, special_fully_nested_mode); GET(r, p, init4);
	GET(r, p, elcr); GET(r, p, elcr_mask);
	return 0;
}

static void save_ioapic(struct state_writer *w, const struct kvm_ioapic_state *io)
{
	PUT(w, io, base_address); PUT(w, io, ioregsel); PUT(w, io, id); PUT(w, io, irr);
	for (int i = 0; i < KVM_IOAPIC_NUM_PINS; i++) {
		char n[24];
		snprintf(n, sizeof(n), "redir%d", i);
		sw_uint(w, n, io->redirtbl[i].bits);
	}
}

static int load_ioapic(const struct state_reader *r, struct kvm_ioapic_state *io, struct terr *err)
{
	GET(r, io, base_address); GET(r, io, ioregsel); GET(r, io, id); GET(r, io, irr);
	for (int i = 0; i < KVM_IOAPIC_NUM_PINS; i++) {
		char n[24];
		snprintf(n, sizeof(n), "redir%d", i);
		uint64_t v = io->redirtbl[i].bits;
		int e = sr_uint(r, n, v, &v, err);
		if (e)
			return e;
		io->redirtbl[i].bits = v;
	}
	return 0;
}

static void save_pit_channel(struct state_writer *w, const struct kvm_pit_channel_state *c)
{
	PUT(w, c, count); PUT(w, c, latched_count); PUT(w, c, count_latched);
	PUT(w, c, status_latched); PUT(w, c, status); PUT(w, c, read_state);
	PUT(w, c, write_state); PUT(w, c, write_latch); PUT(w, c, rw_mode); PUT(w, c, mode);
	PUT(w, c, bcd); PUT(w, c, gate); PUT(w, c, count_load_time);
}

static int load_pit_channel(const struct state_reader *r, struct kvm_pit_channel_state *c,
			    struct terr *err)
{
	GET(r, c, count); GET(r, c, latched_count); GET(r, c, count_latched);
	GET(r, c, status_latched); GET(r, c, status); GET(r, c, read_state);
	GET(r, c, write_state); GET(r, c, write_latch); GET(r, c, rw_mode); GET(r, c, mode);
	GET(r, c, bcd); GET(r, c, gate); GET(r, c, count_load_time);
	return 0;
}

#define VM_IOCTL(fd, req, arg, what)                                                     \
	do {                                                                             \
		if (ioctl(fd, req, arg) < 0)                                             \
			return terr_set(err, errno, "vm: %s: %s", what, strerror(errno)); \
	} while (0)

int x86_vm_state_save(int fd, struct state_writer *w, struct terr *err)
{
	struct kvm_irqchip chips[3] = { { .chip_id = KVM_IRQCHIP_PIC_MASTER },
					{ .chip_id = KVM_IRQCHIP_PIC_SLAVE },
					{ .chip_id = KVM_IRQCHIP_IOAPIC } };
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	struct state_writer sub;

	for (int i = 0; i < 3; i++)
		VM_IOCTL(fd, KVM_GET_IRQCHIP, &chips[i], "KVM_GET_IRQCHIP");
	VM_IOCTL(fd, KVM_GET_PIT2, &pit, "KVM_GET_PIT2");
	memset(&clock, 0, sizeof(clock));
	VM_IOCTL(fd, KVM_GET_CLOCK, &clock, "KVM_GET_CLOCK");

	sw_init(&sub); save_pic(&sub, &chips[0].chip.pic); sw_blob(w, "pic_master", &sub); sw_free(&sub);
	sw_init(&sub); save_pic(&sub, &chips[1].chip.pic); sw_blob(w, "pic_slave", &sub); sw_free(&sub);
	sw_init(&sub); save_ioapic(&sub, &chips[2].chip.ioapic); sw_blob(w, "ioapic", &sub); sw_free(&sub);
	for (int i = 0; i < 3; i++) {
		char n[16];
		snprintf(n, sizeof(n), "pit%d", i);
		sw_init(&sub);
		save_pit_channel(&sub, &pit.channels[i]);
		sw_blob(w, n, &sub);
		sw_free(&sub);
	}
	sw_uint(w, "pit_flags", pit.flags);
	sw_uint(w, "clock", clock.clock);
	sw_uint(w, "clock_flags", clock.flags);
	return w->err ? terr_set(err, -w->err, "vm: out of memory") : 0;
}

static int vm_sub(const struct state_reader *r, const char *name, struct state_reader *sub,
		  struct terr *err)
{
	const void *p;
	size_t len;
	int e = sr_bytes(r, name, &p, &len, err);
	if (e)
		return e;
	return sr_init(sub, p ? p : "", len, name, err);
}

int x86_vm_state_load(int fd, const struct state_reader *r, struct terr *err)
{
	struct kvm_irqchip chips[3] = { { .chip_id = KVM_IRQCHIP_PIC_MASTER },
					{ .chip_id = KVM_IRQCHIP_PIC_SLAVE },
					{ .chip_id = KVM_IRQCHIP_IOAPIC } };
	static const char *const chip_names[3] = { "pic_master", "pic_slave", "ioapic" };
	struct kvm_pit_state2 pit;
	struct state_reader sub;
	int e;

	for (int i = 0; i < 3; i++) {
		VM_IOCTL(fd, KVM_GET_IRQCHIP, &chips[i], "KVM_GET_IRQCHIP");
		if ((e = vm_sub(r, chip_names[i], &sub, err)))
			return e;
		e = i < 2 ? load_pic(&sub, &chips[i].chip.pic, err)
			  : load_ioapic(&sub, &chips[i].chip.ioapic, err);
		sr_free(&sub);
		if (e)
			return e;
		VM_IOCTL(fd, KVM_SET_IRQCHIP, &chips[i], "KVM_SET_IRQCHIP");
	}
	VM_IOCTL(fd, KVM_GET_PIT2, &pit, "KVM_GET_PIT2");
	for (int i = 0; i < 3; i++) {
		char n[16];
		snprintf(n, sizeof(n), "pit%d", i);
		if ((e = vm_sub(r, n, &sub, err)))
			return e;
		e = load_pit_channel(&sub, &pit.channels[i], err);
		sr_free(&sub);
		if (e)
			return e;
	}
	uint64_t v;
	if ((e = sr_uint(r, "pit_flags", pit.flags, &v, err)))
		return e;
	pit.flags = (uint32_t)v;
	VM_IOCTL(fd, KVM_SET_PIT2, &pit, "KVM_SET_PIT2");

	const struct state_field *cf = sr_find(r, "clock");
	if (cf) {
		struct kvm_clock_data clock;
		memset(&clock, 0, sizeof(clock));
		if ((e = sr_uint(r, "clock", 0, &v, err)))
			return e;
		/* kvmclock continues from the saved value: the guest sees no jump */
		clock.clock = v;
		VM_IOCTL(fd, KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK");
	}
	return 0;
}

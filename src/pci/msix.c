/* MSI-X: the capability, the vector table and the pending-bit array inside
 * the device's BARs, and delivery through KVM (one GSI with an MSI route and
 * one irqfd per vector).
 *
 * Masking follows the spec: a message raised while its vector (or the whole
 * function) is masked sets the vector's pending bit instead; clearing the
 * mask delivers it and clears the bit. Routes follow the table: a changed
 * address or data updates the vector's route, written to KVM lazily at the
 * next delivery (guests change entries while masked, so this batches). */
#include "pci/pci_internal.h"
#include "util/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define ENTRY_ADDR_LO   0
#define ENTRY_ADDR_HI   4
#define ENTRY_DATA      8
#define ENTRY_CTRL      12
#define CTRL_MASKED     1u

static unsigned pba_bytes(const struct pci_msix *m)
{
	return (m->nvec + 63) / 64 * 8;
}

static uint32_t entry32(const struct pci_msix *m, unsigned v, unsigned field)
{
	const uint8_t *p = m->table + v * PCI_MSIX_ENTRY_SIZE + field;
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t entry_addr(const struct pci_msix *m, unsigned v)
{
	return entry32(m, v, ENTRY_ADDR_LO) | (uint64_t)entry32(m, v, ENTRY_ADDR_HI) << 32;
}

static uint16_t control(const struct pci_device *pd)
{
	const uint8_t *p = pd->cfg + pd->msix->cap + PCI_MSIX_FLAGS;
	return (uint16_t)(p[0] | p[1] << 8);
}

static bool enabled(const struct pci_device *pd)
{
	return control(pd) & PCI_MSIX_FLAGS_ENABLE;
}

static bool masked(const struct pci_device *pd, unsigned v)
{
	return !enabled(pd) || (control(pd) & PCI_MSIX_FLAGS_MASKALL) ||
	       (entry32(pd->msix, v, ENTRY_CTRL) & CTRL_MASKED);
}

static bool pending(const struct pci_msix *m, unsigned v)
{
	return (m->pba[v / 64] >> (v % 64)) & 1;
}

static void set_pending(struct pci_msix *m, unsigned v, bool on)
{
	if (on)
		m->pba[v / 64] |= 1ull << (v % 64);
	else
		m->pba[v / 64] &= ~(1ull << (v % 64));
}

static void route(struct pci_device *pd, unsigned v)
{
	struct pci_msix *m = pd->msix;
	if (pd->bus && m->gsi[v] >= 0)
		gsi_set_msi(&pd->bus->gsi, m->gsi[v], true, entry_addr(m, v),
			    entry32(m, v, ENTRY_DATA));
}

static void deliver(struct pci_device *pd, unsigned v)
{
	struct pci_msix *m = pd->msix;
	if (!pd->bus)
		return;
	struct gsi_router *g = &pd->bus->gsi;
	if (m->efd[v] >= 0) {
		struct terr err = { 0 };
		route(pd, v);
		if (gsi_commit(g, &err) == 0) {
			uint64_t one = 1;
			if (write(m->efd[v], &one, sizeof(one)) == sizeof(one))
				return;
		} else {
			log_warn(pd->name, "MSI-X vector %u: %s; injecting directly", v, err.msg);
		}
	}
	gsi_signal_msi(g, entry_addr(m, v), entry32(m, v, ENTRY_DATA));
}

/* Deliver every pending vector that is no longer masked. */
static void flush_pending(struct pci_device *pd)
{
	struct pci_msix *m = pd->msix;
	for (unsigned v = 0; v < m->nvec; v++) {
		if (pending(m, v) && !masked(pd, v)) {
			set_pending(m, v, false);
			deliver(pd, v);
		}
	}
}

void msix_control_changed(struct pci_device *pd)
{
	flush_pending(pd);
	if (enabled(pd) && pd->bus) {
		/* get the routes into KVM now, not on the data path */
		struct terr err = { 0 };
		if (gsi_commit(&pd->bus->gsi, &err))
			log_warn(pd->name, "MSI-X: %s", err.msg);
	}
}

bool msix_in_region(const struct pci_msix *m, unsigned bar, uint64_t off, unsigned size)
{
	uint64_t tlen = (uint64_t)m->nvec * PCI_MSIX_ENTRY_SIZE;
	return (bar == m->table_bar && off + size > m->table_off && off < m->table_off + tlen) ||
	       (bar == m->pba_bar && off + size > m->pba_off && off < m->pba_off + pba_bytes(m));
}

bool msix_bar_access(struct pci_device *pd, unsigned bar, uint64_t off, void *data,
		     unsigned size, bool write)
{
	struct pci_msix *m = pd->msix;
	uint8_t *p = data;
	uint64_t tlen = (uint64_t)m->nvec * PCI_MSIX_ENTRY_SIZE;
	bool in_table = bar == m->table_bar && off + size > m->table_off && off < m->table_off + tlen;
	bool in_pba = bar == m->pba_bar && off + size > m->pba_off && off < m->pba_off + pba_bytes(m);
	if (!in_table && !in_pba)
		return false;
	if (in_table) {
		unsigned first = ~0u, last = 0;
		for (unsigned i = 0; i < size; i++) {
			uint64_t o = off + i;
			if (o < m->table_off || o >= m->table_off + tlen) {
				if (!write)
					p[i] = 0xff;
				continue;
			}
			unsigned idx = (unsigned)(o - m->table_off);
			unsigned v = idx / PCI_MSIX_ENTRY_SIZE, field = idx % PCI_MSIX_ENTRY_SIZE;
			if (!write) {
				p[i] = m->table[idx];
				continue;
			}
			if (field >= ENTRY_CTRL)   /* only the mask bit is writable */
				m->table[idx] = field == ENTRY_CTRL ? (p[i] & CTRL_MASKED) : 0;
			else
				m->table[idx] = p[i];
			if (v < first)
				first = v;
			last = v;
		}
		if (write && first != ~0u) {
			for (unsigned v = first; v <= last; v++)
				route(pd, v);
			flush_pending(pd);
		}
	} else {
		for (unsigned i = 0; i < size; i++) {
			uint64_t o = off + i;
			if (write)
				continue;   /* the PBA is read-only */
			if (o < m->pba_off || o >= m->pba_off + pba_bytes(m)) {
				p[i] = 0xff;
				continue;
			}
			unsigned b = (unsigned)(o - m->pba_off);
			p[i] = (uint8_t)(m->pba[b / 8] >> (8 * (b % 8)));
		}
	}
	return true;
}

void msix_reset(struct pci_device *pd)
{
	struct pci_msix *m = pd->msix;
	memset(m->table, 0, (size_t)m->nvec * PCI_MSIX_ENTRY_SIZE);
	for (unsigned v = 0; v < m->nvec; v++) {
		m->table[v * PCI_MSIX_ENTRY_SIZE + ENTRY_CTRL] = CTRL_MASKED;
		if (pd->bus && m->gsi[v] >= 0)
			gsi_set_msi(&pd->bus->gsi, m->gsi[v], false, 0, 0);
	}
	memset(m->pba, 0, pba_bytes(m));
}

int pci_msix_init(struct pci_device *pd, unsigned nvec, unsigned table_bar, uint32_t table_off,
		  unsigned pba_bar, uint32_t pba_off, struct terr *err)
{
	if (pd->msix)
		return terr_set(err, EBUSY, "%s: MSI-X is already set up", pd->name);
	if (nvec < 1 || nvec > 2048)
		return terr_set(err, EINVAL, "%s: %u MSI-X vectors; 1 to 2048 are possible", pd->name,
				nvec);
	if (table_bar >= PCI_STD_NUM_BARS || pba_bar >= PCI_STD_NUM_BARS ||
	    pd->bar[table_bar].type < PCI_BAR_MEM32 || pd->bar[pba_bar].type < PCI_BAR_MEM32)
		return terr_set(err, EINVAL, "%s: the MSI-X table and PBA need memory BARs", pd->name);
	uint64_t tlen = (uint64_t)nvec * PCI_MSIX_ENTRY_SIZE, plen = (nvec + 63) / 64 * 8;
	if ((table_off & 7) || (pba_off & 7) || table_off + tlen > pd->bar[table_bar].size ||
	    pba_off + plen > pd->bar[pba_bar].size ||
	    (table_bar == pba_bar && table_off < pba_off + plen && pba_off < table_off + tlen))
		return terr_set(err, EINVAL, "%s: MSI-X table at BAR %u + 0x%x (%llu bytes) and PBA at "
				"BAR %u + 0x%x (%llu bytes) must be 8-byte aligned, inside their BARs "
				"and apart", pd->name, table_bar, table_off, (unsigned long long)tlen,
				pba_bar, pba_off, (unsigned long long)plen);
	int cap = pci_add_capability(pd, PCI_CAP_ID_MSIX, PCI_CAP_MSIX_SIZEOF, err);
	if (cap < 0)
		return cap;
	struct pci_msix *m = calloc(1, sizeof(*m));
	if (m) {
		m->table = calloc(nvec, PCI_MSIX_ENTRY_SIZE);
		m->pba = calloc(1, plen);
		m->gsi = malloc(nvec * sizeof(int));
		m->efd = malloc(nvec * sizeof(int));
	}
	if (!m || !m->table || !m->pba || !m->gsi || !m->efd) {
		if (m) {
			free(m->table);
			free(m->pba);
			free(m->gsi);
			free(m->efd);
		}
		free(m);
		return terr_set(err, ENOMEM, "%s: out of memory for %u MSI-X vectors", pd->name, nvec);
	}
	m->nvec = nvec;
	m->cap = (unsigned)cap;
	m->table_bar = table_bar;
	m->table_off = table_off;
	m->pba_bar = pba_bar;
	m->pba_off = pba_off;
	for (unsigned v = 0; v < nvec; v++)
		m->gsi[v] = m->efd[v] = -1;
	pci_config_set16(pd, (unsigned)cap + PCI_MSIX_FLAGS, (uint16_t)(nvec - 1));
	pci_config_set32(pd, (unsigned)cap + PCI_MSIX_TABLE, table_off | table_bar);
	pci_config_set32(pd, (unsigned)cap + PCI_MSIX_PBA, pba_off | pba_bar);
	pci_config_set_wmask(pd, (unsigned)cap + PCI_MSIX_FLAGS, 2,
			     PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
	pd->msix = m;
	msix_reset(pd);
	return cap;
}

static void release_vectors(struct pci_device *pd)
{
	struct pci_msix *m = pd->msix;
	struct gsi_router *g = &pd->bus->gsi;
	for (unsigned v = 0; v < m->nvec; v++) {
		if (m->efd[v] >= 0) {
			gsi_irqfd_unbind(g, m->gsi[v], m->efd[v]);
			close(m->efd[v]);
		}
		if (m->gsi[v] >= 0)
			gsi_free(g, m->gsi[v]);
		m->gsi[v] = m->efd[v] = -1;
	}
}

int msix_attach(struct pci_device *pd, struct terr *err)
{
	struct pci_msix *m = pd->msix;
	struct gsi_router *g = &pd->bus->gsi;
	int r = 0;
	for (unsigned v = 0; v < m->nvec && !r; v++) {
		int gsi = gsi_alloc(g);
		if (gsi < 0) {
			r = terr_set(err, ENOSPC, "%s: no GSI left for MSI-X vector %u", pd->name, v);
			break;
		}
		m->gsi[v] = gsi;
		int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (efd < 0) {
			r = terr_set(err, errno, "%s: eventfd for MSI-X vector %u: %s", pd->name, v,
				     strerror(errno));
			break;
		}
		r = gsi_irqfd_bind(g, gsi, efd, err);
		if (r) {
			close(efd);
			terr_prefix(err, "%s: MSI-X vector %u: ", pd->name, v);
			break;
		}
		m->efd[v] = efd;
	}
	if (r)
		release_vectors(pd);
	return r;
}

void msix_detach(struct pci_device *pd)
{
	struct pci_msix *m = pd->msix;
	if (pd->bus)
		release_vectors(pd);
	free(m->table);
	free(m->pba);
	free(m->gsi);
	free(m->efd);
	free(m);
	pd->msix = NULL;
}

void msix_save(struct pci_device *pd, struct state_writer *w)
{
	struct pci_msix *m = pd->msix;
	uint8_t pba[256];   /* 2048 vectors */
	for (unsigned b = 0; b < pba_bytes(m); b++)
		pba[b] = (uint8_t)(m->pba[b / 8] >> (8 * (b % 8)));
	sw_bytes(w, "msix_table", m->table, (size_t)m->nvec * PCI_MSIX_ENTRY_SIZE);
	sw_bytes(w, "msix_pba", pba, pba_bytes(m));
}

int msix_load(struct pci_device *pd, const struct state_reader *r, struct terr *err)
{
	struct pci_msix *m = pd->msix;
	size_t tlen = (size_t)m->nvec * PCI_MSIX_ENTRY_SIZE;
	const void *t, *p;
	size_t tn, pn;
	int ret;
	if ((ret = sr_bytes(r, "msix_table", &t, &tn, err)) || (ret = sr_bytes(r, "msix_pba", &p, &pn, err)))
		return ret;
	if (t && tn != tlen)
		return terr_set(err, EINVAL, "%s: saved MSI-X table has %zu bytes, this device has %u "
				"vectors (%zu bytes)", r->what, tn, m->nvec, tlen);
	if (p && pn != pba_bytes(m))
		return terr_set(err, EINVAL, "%s: saved MSI-X PBA has %zu bytes, expected %u", r->what,
				pn, pba_bytes(m));
	if (p) {
		const uint8_t *pb = p;
		for (unsigned v = m->nvec; v < pn * 8; v++)
			if ((pb[v / 8] >> (v % 8)) & 1)
				return terr_set(err, EINVAL, "%s: MSI-X pending bit %u is beyond the %u "
						"vectors", r->what, v, m->nvec);
		memset(m->pba, 0, pba_bytes(m));
		for (unsigned b = 0; b < pn; b++)
			m->pba[b / 8] |= (uint64_t)pb[b] << (8 * (b % 8));
	}
	if (t) {
		memcpy(m->table, t, tlen);
		for (unsigned v = 0; v < m->nvec; v++) {
			uint8_t *c = m->table + v * PCI_MSIX_ENTRY_SIZE + ENTRY_CTRL;
			c[0] &= CTRL_MASKED;
			c[1] = c[2] = c[3] = 0;
		}
	}
	for (unsigned v = 0; v < m->nvec; v++)
		route(pd, v);
	return 0;
}

int pci_msix_notify(struct pci_device *pd, unsigned vec)
{
	int r;
	pthread_mutex_lock(&pd->lock);
	if (!pd->msix || vec >= pd->msix->nvec) {
		r = -EINVAL;
	} else if (!enabled(pd)) {
		r = -EAGAIN;
	} else if (masked(pd, vec)) {
		set_pending(pd->msix, vec, true);
		r = 1;
	} else {
		deliver(pd, vec);
		r = 0;
	}
	pthread_mutex_unlock(&pd->lock);
	return r;
}

bool pci_msix_enabled(struct pci_device *pd)
{
	pthread_mutex_lock(&pd->lock);
	bool on = pd->msix && enabled(pd);
	pthread_mutex_unlock(&pd->lock);
	return on;
}

bool pci_msix_pending(struct pci_device *pd, unsigned vec)
{
	pthread_mutex_lock(&pd->lock);
	bool on = pd->msix && vec < pd->msix->nvec && pending(pd->msix, vec);
	pthread_mutex_unlock(&pd->lock);
	return on;
}

int pci_msix_vector_gsi(struct pci_device *pd, unsigned vec)
{
	pthread_mutex_lock(&pd->lock);
	int g = pd->msix && vec < pd->msix->nvec ? pd->msix->gsi[vec] : -1;
	pthread_mutex_unlock(&pd->lock);
	return g;
}

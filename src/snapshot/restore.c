#include "snapshot/snapshot.h"
#include "arch/x86/cpu_state.h"
#include "core/vcpu.h"
#include "snapshot/sections.h"
#include "snapshot/snapfile.h"
#include "util/log.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int snapshot_config(const struct snapshot *s, const char *path, char **overrides,
		    int noverrides, struct config **out, struct terr *err)
{
	const struct snap_section *sec = snap_find(s, SECTION_CONFIG);
	struct state_reader r;
	const void *text;
	size_t len;
	int ret;

	if (!sec)
		return terr_set(err, EINVAL, "%s: the snapshot has no config section", path);
	ret = snap_section_reader(s, sec, SECTION_CONFIG_VERSION, &r, err);
	if (ret)
		return ret;
	ret = sr_bytes(&r, "json", &text, &len, err);
	if (!ret && !text)
		ret = terr_set(err, EINVAL, "%s: the config section has no configuration", path);
	json_error_t jerr;
	json_t *j = ret ? NULL : json_loadb(text, len, 0, &jerr);
	sr_free(&r);
	if (ret)
		return ret;
	if (!j)
		return terr_set(err, EINVAL, "%s: the embedded configuration is not valid JSON: %s",
				path, jerr.text);
	struct config *cfg = config_new();
	if (!cfg) {
		json_decref(j);
		return terr_set(err, ENOMEM, "out of memory");
	}
	ret = config_from_json(cfg, j, err);
	json_decref(j);
	if (ret) {
		terr_prefix(err, "%s: embedded configuration: ", path);
		config_free(cfg);
		return ret;
	}
	uint64_t mem_before;
	int64_t cpus_before;
	ret = config_get_size(cfg, "memory.size", &mem_before, err);
	if (!ret)
		ret = config_get_int(cfg, "cpus", &cpus_before, err);
	for (int i = 0; !ret && i < noverrides; i++)
		ret = config_set_option(cfg, overrides[i], err);
	uint64_t mem_after;
	int64_t cpus_after;
	if (!ret)
		ret = config_get_size(cfg, "memory.size", &mem_after, err);
	if (!ret)
		ret = config_get_int(cfg, "cpus", &cpus_after, err);
	if (!ret && mem_after != mem_before)
		ret = terr_set(err, EINVAL, "memory.size: the snapshot holds %llu MiB of RAM; it cannot be "
			       "restored with a different size", (unsigned long long)(mem_before >> 20));
	if (!ret && cpus_after != cpus_before)
		ret = terr_set(err, EINVAL, "cpus: the snapshot holds %lld vCPUs; it cannot be restored "
			       "with a different number", (long long)cpus_before);
	if (ret) {
		config_free(cfg);
		return ret;
	}
	*out = cfg;
	return 0;
}

/* The ram section against the machine's RAM. */
static int check_ram_section(const struct snapshot *s, const struct guest_mem *mem, struct terr *err)
{
	const struct snap_section *sec = snap_find(s, SECTION_RAM);
	struct state_reader r;
	uint64_t size, page, nregions;
	if (!sec)
		return terr_set(err, EINVAL, "the snapshot has no ram section");
	int ret = snap_section_reader(s, sec, SECTION_RAM_VERSION, &r, err);
	if (ret)
		return ret;
	ret = sr_uint(&r, "size", 0, &size, err);
	if (!ret)
		ret = sr_uint(&r, "page_size", SNAP_PAGE_SIZE, &page, err);
	if (!ret)
		ret = sr_uint(&r, "regions", mem->nregions, &nregions, err);
	/* the regions must lie where this tern lays RAM out: the bytes are
	 * stored in that order */
	for (unsigned i = 0; !ret && i < mem->nregions && nregions == mem->nregions; i++) {
		static const char *const what[3] = { "gpa", "size", "offset" };
		const uint64_t have[3] = { mem->regions[i].gpa, mem->regions[i].size, mem->regions[i].offset };
		for (int k = 0; !ret && k < 3; k++) {
			char n[32];
			uint64_t v;
			snprintf(n, sizeof(n), "region%u.%s", i, what[k]);
			ret = sr_uint(&r, n, have[k], &v, err);
			if (!ret && v != have[k])
				ret = terr_set(err, EINVAL, "ram: region %u has %s 0x%llx in the snapshot, "
					       "0x%llx here", i, what[k], (unsigned long long)v,
					       (unsigned long long)have[k]);
		}
	}
	sr_free(&r);
	if (ret)
		return ret;
	if (page != SNAP_PAGE_SIZE)
		return terr_set(err, EINVAL, "RAM saved with %llu-byte pages, this tern maps %d-byte "
				"pages", (unsigned long long)page, SNAP_PAGE_SIZE);
	if (size != mem->size)
		return terr_set(err, EINVAL, "the ram section declares %llu bytes, but the machine has "
				"%llu", (unsigned long long)size, (unsigned long long)mem->size);
	if (nregions != mem->nregions)
		return terr_set(err, EINVAL, "ram: %llu regions in the snapshot, %u here",
				(unsigned long long)nregions, mem->nregions);
	return 0;
}

static int load_section(const struct snapshot *s, const char *id, const char *kind,
			unsigned supported, bool *used, struct state_reader *r, struct terr *err)
{
	const struct snap_section *sec = snap_find(s, id);
	if (!sec)
		return terr_set(err, EINVAL, "the snapshot has no state for %s", id);
	if (strcmp(sec->kind, kind))
		return terr_set(err, EINVAL, "section %s holds a %s, but this configuration makes %s a %s",
				id, sec->kind, id, kind);
	used[sec - s->sections] = true;
	return snap_section_reader(s, sec, supported, r, err);
}

int snapshot_apply_sections(const struct snapshot *s, struct machine *m, struct terr *err)
{
	struct state_reader r;
	bool *used = calloc(s->nsections + 1, sizeof(bool));
	int ret;

	if (!used)
		return terr_set(err, ENOMEM, "out of memory");
	ret = check_ram_section(s, &m->vm.mem, err);
	if (ret)
		goto out;
	for (unsigned i = 0; i < s->nsections; i++)
		if (!strcmp(s->sections[i].id, SECTION_CONFIG) || !strcmp(s->sections[i].id, SECTION_RAM))
			used[i] = true;

	ret = load_section(s, SECTION_VM, SECTION_VM, VM_STATE_VERSION, used, &r, err);
	if (ret)
		goto out;
	ret = x86_vm_state_load(m->vm.fd, &r, err);
	sr_free(&r);
	for (unsigned i = 0; !ret && i < m->vm.nvcpus; i++) {
		char id[SNAP_ID_MAX + 1];
		snprintf(id, sizeof(id), "vcpu.%u", i);
		ret = load_section(s, id, SECTION_VCPU, VCPU_STATE_VERSION, used, &r, err);
		if (ret)
			break;
		ret = x86_vcpu_state_load(m->vm.vcpus[i].fd, i, &r, err);
		sr_free(&r);
	}
	for (struct device *d = m->vm.devices; !ret && d; d = d->next) {
		ret = load_section(s, d->id, d->ops->type, d->ops->state_version, used, &r, err);
		if (ret)
			break;
		ret = d->ops->load(d, &r, err);
		sr_free(&r);
	}
	for (unsigned i = 0; !ret && i < s->nsections; i++)
		if (!used[i])
			ret = terr_set(err, EINVAL, "the snapshot has state for %s (%s), which this "
				       "configuration does not create", s->sections[i].id, s->sections[i].kind);
	if (!ret)
		m->vm.state_loaded = true;   /* vm_start re-checks the devices' queues */
out:
	free(used);
	return ret;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int snapshot_restore(const char *path, char **overrides, int noverrides, struct machine *m,
		     struct config **cfg_out, struct terr *err)
{
	double t0 = now_ms(), t_open, t_build;
	struct snapshot s;
	struct config *cfg = NULL;
	uint64_t mem_size;
	bool eager;
	int ret;

	*cfg_out = NULL;
	ret = snap_open(&s, path, err);
	if (ret)
		return ret;
	t_open = now_ms();
	ret = snapshot_config(&s, path, overrides, noverrides, &cfg, err);
	if (!ret)
		ret = config_get_size(cfg, "memory.size", &mem_size, err);
	if (!ret)
		ret = config_get_bool(cfg, "snapshot.eager", &eager, err);
	if (!ret && s.ram_length != mem_size)
		ret = terr_set(err, EINVAL, "%s: the file holds %llu bytes of RAM, but the configuration "
			       "says memory.size is %llu", path, (unsigned long long)s.ram_length,
			       (unsigned long long)mem_size);
	if (ret)
		goto fail;
	if (snap_vendor_differs(&s))
		log_warn("snapshot", "%s was written on a %s CPU, this host has another vendor: its "
			 "state may not load", path, s.host.cpu_vendor);

	struct machine_restore rs = { .ram = { .fd = s.fd, .offset = s.ram_offset, .eager = eager } };
	ret = machine_build(m, cfg, &rs, err);
	if (ret)
		goto fail;
	t_build = now_ms();
	ret = snapshot_apply_sections(&s, m, err);
	if (ret) {
		terr_prefix(err, "%s: ", path);
		machine_destroy(m);
		goto fail;
	}
	snap_close(&s);
	*cfg_out = cfg;
	double t1 = now_ms();
	struct timespec rt;   /* wall clock: bench/snapshot.sh measures from the launch */
	clock_gettime(CLOCK_REALTIME, &rt);
	log_info("snapshot", "restored %s in %.2f ms (open %.2f, config and machine %.2f, state "
		 "%.2f; RAM %s); ready at %lld.%09ld", path, t1 - t0, t_open - t0, t_build - t_open,
		 t1 - t_build, eager ? "read eagerly" : "mapped lazily", (long long)rt.tv_sec, rt.tv_nsec);
	return 0;
fail:
	config_free(cfg);
	snap_close(&s);
	return ret;
}

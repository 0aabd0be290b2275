#include "hw/acpi_pm.h"
#include "core/vm.h"
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* PM1_CNT bits */
#define CNT_SCI_EN     0x0001u
#define CNT_BM_RLD     0x0002u
#define CNT_GBL_RLS    0x0004u   /* write-only */
#define CNT_SLP_TYP    0x1c00u
#define CNT_SLP_EN     0x2000u   /* write-only */
#define CNT_RW         (CNT_BM_RLD | CNT_SLP_TYP)

#define STS_BITS  (ACPI_PM1_TMR | ACPI_PM1_GBL | ACPI_PM1_PWRBTN | ACPI_PM1_SLPBTN | \
		   ACPI_PM1_RTC | ACPI_PM1_WAK)
#define EN_BITS   (ACPI_PM1_TMR | ACPI_PM1_GBL | ACPI_PM1_PWRBTN | ACPI_PM1_SLPBTN | \
		   ACPI_PM1_RTC)

struct acpi_pm {
	struct device dev;
	pthread_mutex_t lock;
	uint16_t evt_port, cnt_port, tmr_port, reset_port;
	uint8_t reset_value;
	unsigned sci_irq;
	int sci_level;
	/* guest-visible state, saved */
	uint16_t sts, en, cnt;
	/* timer = ticks(CLOCK_MONOTONIC) + tmr_offset, modulo 2^32 */
	uint32_t tmr_offset;
	bool paused;
	uint64_t paused_ticks;
};

static struct acpi_pm *to_pm(struct device *d)
{
	return (struct acpi_pm *)d;
}

static uint64_t mono_ticks(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	unsigned __int128 ns = (unsigned __int128)ts.tv_sec * 1000000000u + (unsigned)ts.tv_nsec;
	return (uint64_t)(ns * ACPI_PM_TMR_HZ / 1000000000u);
}

static uint32_t timer_value(const struct acpi_pm *pm)
{
	uint64_t t = pm->paused ? pm->paused_ticks : mono_ticks();
	return (uint32_t)t + pm->tmr_offset;
}

/* The SCI is level-triggered: asserted while an enabled event is pending. */
static void update_sci(struct acpi_pm *pm)
{
	int level = (pm->sts & pm->en & EN_BITS) && (pm->cnt & CNT_SCI_EN);
	if (level != pm->sci_level) {
		pm->sci_level = level;
		if (pm->dev.vm)
			vm_irq_line(pm->dev.vm, pm->sci_irq, level);
	}
}

static void fill(void *data, unsigned size, uint64_t reg, unsigned shift)
{
	uint8_t *p = data;
	for (unsigned i = 0; i < size; i++)
		p[i] = (uint8_t)((i + shift) < 8 ? reg >> (8 * (i + shift)) : 0xff);
}

static void evt_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct acpi_pm *pm = opaque;
	pthread_mutex_lock(&pm->lock);
	uint64_t reg = pm->sts | (uint64_t)pm->en << 16 | 0xffffffff00000000ull;
	pthread_mutex_unlock(&pm->lock);
	fill(data, size, reg, (unsigned)off);
}

static void evt_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct acpi_pm *pm = opaque;
	const uint8_t *p = data;
	pthread_mutex_lock(&pm->lock);
	for (unsigned i = 0; i < size && off + i < 4; i++) {
		unsigned at = (unsigned)off + i;
		uint16_t v = (uint16_t)(p[i] << (8 * (at & 1)));
		if (at < 2)
			pm->sts &= (uint16_t)~(v & STS_BITS);   /* write 1 to clear */
		else
			pm->en = (uint16_t)((pm->en & ~(0xff << (8 * (at & 1)))) | (v & EN_BITS));
	}
	update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
}

static void cnt_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct acpi_pm *pm = opaque;
	pthread_mutex_lock(&pm->lock);
	uint64_t reg = pm->cnt | 0xffffffffffff0000ull;
	pthread_mutex_unlock(&pm->lock);
	fill(data, size, reg, (unsigned)off);
}

static void cnt_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct acpi_pm *pm = opaque;
	const uint8_t *p = data;
	uint16_t v = 0, mask = 0;
	for (unsigned i = 0; i < size && off + i < 2; i++) {
		v |= (uint16_t)(p[i] << (8 * (off + i)));
		mask |= (uint16_t)(0xff << (8 * (off + i)));
	}
	pthread_mutex_lock(&pm->lock);
	pm->cnt = (uint16_t)((pm->cnt & ~(mask & CNT_RW)) | (v & mask & CNT_RW));
	unsigned typ = (pm->cnt & CNT_SLP_TYP) >> ACPI_PM1_CNT_SLP_TYP_SHIFT;
	bool sleep = (v & mask & CNT_SLP_EN) != 0;
	pthread_mutex_unlock(&pm->lock);
	if (!sleep)
		return;
	if (typ == ACPI_S5_SLP_TYP) {
		log_info(pm->dev.id, "guest entered S5: powering off");
		vm_request_exit(pm->dev.vm, VM_EXIT_POWEROFF, 0);
	} else {
		/* only \_S5 is in the DSDT, so a sleep state is a guest bug */
		log_warn(pm->dev.id, "sleep type %u requested; only S5 (%u) is supported, ignored",
			 typ, ACPI_S5_SLP_TYP);
	}
}

static void tmr_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct acpi_pm *pm = opaque;
	pthread_mutex_lock(&pm->lock);
	uint64_t reg = timer_value(pm) | 0xffffffff00000000ull;
	pthread_mutex_unlock(&pm->lock);
	fill(data, size, reg, (unsigned)off);
}

static void reset_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	(void)opaque;
	(void)off;
	memset(data, 0xff, size);
}

static void reset_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct acpi_pm *pm = opaque;
	(void)size;
	if (off == 0 && ((const uint8_t *)data)[0] == pm->reset_value) {
		log_info(pm->dev.id, "guest wrote the ACPI reset register");
		vm_request_exit(pm->dev.vm, VM_EXIT_RESET, 0);
	}
}

void acpi_pm_power_button(struct device *d)
{
	struct acpi_pm *pm = to_pm(d);
	pthread_mutex_lock(&pm->lock);
	pm->sts |= ACPI_PM1_PWRBTN;
	update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
}

uint32_t acpi_pm_timer(struct device *d)
{
	struct acpi_pm *pm = to_pm(d);
	pthread_mutex_lock(&pm->lock);
	uint32_t v = timer_value(pm);
	pthread_mutex_unlock(&pm->lock);
	return v;
}

static void pm_reset(struct device *d)
{
	struct acpi_pm *pm = to_pm(d);
	pthread_mutex_lock(&pm->lock);
	pm->sts = pm->en = 0;
	pm->cnt = CNT_SCI_EN;
	pm->tmr_offset = (uint32_t)0 - (uint32_t)(pm->paused ? pm->paused_ticks : mono_ticks());
	update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
}

/* The timer does not count while the VM is paused, so a snapshot's pause
 * is invisible to the guest. */
static int pm_pause(struct device *d)
{
	struct acpi_pm *pm = to_pm(d);
	pthread_mutex_lock(&pm->lock);
	if (!pm->paused) {
		pm->paused_ticks = mono_ticks();
		pm->paused = true;
	}
	pthread_mutex_unlock(&pm->lock);
	return 0;
}

static void pm_resume(struct device *d)
{
	struct acpi_pm *pm = to_pm(d);
	pthread_mutex_lock(&pm->lock);
	if (pm->paused) {
		pm->tmr_offset -= (uint32_t)(mono_ticks() - pm->paused_ticks);
		pm->paused = false;
	}
	pthread_mutex_unlock(&pm->lock);
}

/* The timer is saved as its offset from the host's CLOCK_MONOTONIC, in
 * ticks: restored on the same host it keeps counting real time; elsewhere
 * it restarts at an arbitrary value, which a 32-bit free-running counter
 * that wraps every 20 minutes allows (Linux on KVM keeps time with
 * kvm-clock and uses the PM timer for boot-time calibration). */
static int pm_save(struct device *d, struct state_writer *w)
{
	struct acpi_pm *pm = to_pm(d);
	pthread_mutex_lock(&pm->lock);
	sw_uint(w, "pm1_sts", pm->sts);
	sw_uint(w, "pm1_en", pm->en);
	sw_uint(w, "pm1_cnt", pm->cnt);
	sw_uint(w, "tmr_offset", pm->tmr_offset);
	pthread_mutex_unlock(&pm->lock);
	return w->err;
}

static int pm_load(struct device *d, const struct state_reader *r, struct terr *err)
{
	struct acpi_pm *pm = to_pm(d);
	uint64_t sts, en, cnt, off;
	int ret;

	pthread_mutex_lock(&pm->lock);
	uint32_t cur_off = pm->tmr_offset;
	pthread_mutex_unlock(&pm->lock);
	if ((ret = sr_uint_max(r, "pm1_sts", 0, 0xffff, &sts, err)) ||
	    (ret = sr_uint_max(r, "pm1_en", 0, 0xffff, &en, err)) ||
	    (ret = sr_uint_max(r, "pm1_cnt", CNT_SCI_EN, 0xffff, &cnt, err)) ||
	    (ret = sr_uint_max(r, "tmr_offset", cur_off, 0xffffffff, &off, err)))
		return ret;
	if (sts & ~STS_BITS)
		return terr_set(err, EINVAL, "%s: PM1 status 0x%llx has undefined bits set", d->id,
				(unsigned long long)sts);
	if (en & ~EN_BITS)
		return terr_set(err, EINVAL, "%s: PM1 enable 0x%llx has undefined bits set", d->id,
				(unsigned long long)en);
	if (cnt & ~(CNT_RW | CNT_SCI_EN))
		return terr_set(err, EINVAL, "%s: PM1 control 0x%llx has undefined bits set", d->id,
				(unsigned long long)cnt);
	pthread_mutex_lock(&pm->lock);
	pm->sts = (uint16_t)sts;
	pm->en = (uint16_t)en;
	pm->cnt = (uint16_t)(cnt | CNT_SCI_EN);
	pm->tmr_offset = (uint32_t)off;
	pm->sci_level = -1;   /* derived: recomputed, not saved */
	update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
	return 0;
}

static void pm_destroy(struct device *d)
{
	struct acpi_pm *pm = to_pm(d);
	pthread_mutex_destroy(&pm->lock);
	free(pm);
}

const struct device_ops acpi_pm_ops = {
	.type = "acpi-pm",
	.state_version = 1,
	.state_min_version = 1,
	.reset = pm_reset,
	.pause = pm_pause,
	.resume = pm_resume,
	.save = pm_save,
	.load = pm_load,
	.destroy = pm_destroy,
};

int acpi_pm_create(struct vm *vm, const struct acpi_pm_params *p, struct device **out,
		   struct terr *err)
{
	static const struct acpi_pm_params defaults = { .id = "acpi-pm.0" };
	if (!p)
		p = &defaults;
	const char *id = p->id ? p->id : "acpi-pm.0";
	struct acpi_pm *pm = calloc(1, sizeof(*pm));
	if (!pm)
		return terr_set(err, ENOMEM, "%s: out of memory", id);
	pm->dev.ops = &acpi_pm_ops;
	snprintf(pm->dev.id, sizeof(pm->dev.id), "%s", id);
	pm->dev.priv = pm;
	pm->evt_port = p->evt_port ? p->evt_port : ACPI_PM1A_EVT_PORT;
	pm->cnt_port = p->cnt_port ? p->cnt_port : ACPI_PM1A_CNT_PORT;
	pm->tmr_port = p->tmr_port ? p->tmr_port : ACPI_PM_TMR_PORT;
	pm->reset_port = p->reset_port ? p->reset_port : ACPI_RESET_PORT;
	pm->reset_value = p->reset_port ? p->reset_value : ACPI_RESET_VALUE;
	pm->sci_irq = p->sci_irq ? p->sci_irq : ACPI_SCI_IRQ;
	pthread_mutex_init(&pm->lock, NULL);
	vm_add_device(vm, &pm->dev);
	pm->sci_level = 0;
	pm_reset(&pm->dev);
	int r;
	if ((r = bus_register(&vm->pio, pm->evt_port, 4, evt_read, evt_write, pm, pm->dev.id, err)) ||
	    (r = bus_register(&vm->pio, pm->cnt_port, 2, cnt_read, cnt_write, pm, pm->dev.id, err)) ||
	    (r = bus_register(&vm->pio, pm->tmr_port, 4, tmr_read, NULL, pm, pm->dev.id, err)) ||
	    (r = bus_register(&vm->pio, pm->reset_port, 1, reset_read, reset_write, pm, pm->dev.id,
			      err)))
		return r;   /* the VM owns the device now and frees it */
	*out = &pm->dev;
	return 0;
}

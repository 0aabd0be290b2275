#include "hw/rtc_cmos.h"
#include "core/vm.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
	REG_SEC = 0x00, REG_SEC_ALARM = 0x01, REG_MIN = 0x02, REG_MIN_ALARM = 0x03,
	REG_HOUR = 0x04, REG_HOUR_ALARM = 0x05, REG_WDAY = 0x06, REG_MDAY = 0x07,
	REG_MON = 0x08, REG_YEAR = 0x09, REG_A = 0x0a, REG_B = 0x0b, REG_C = 0x0c,
	REG_D = 0x0d,
};

#define A_UIP     0x80
#define B_SET     0x80
#define B_PIE     0x40
#define B_AIE     0x20
#define B_UIE     0x10
#define B_SQWE    0x08
#define B_DM_BIN  0x04
#define B_24H     0x02
#define D_VRT     0x80

#define NSEC      1000000000LL
#define UIP_NS    244000LL      /* UIP is set this long before each update */

#define RESET_A   0x26          /* 32.768 kHz time base, 1024 Hz periodic rate */
#define RESET_B   B_24H         /* BCD, 24-hour */

struct rtc {
	struct device dev;
	pthread_mutex_t lock;
	/* guest-visible state, saved */
	uint8_t index;
	uint8_t ram[128];           /* CMOS RAM; A and B live here too, the clock does not */
	/* guest time - host CLOCK_REALTIME = offset_s + offset_ns / 1e9, with
	 * 0 <= offset_ns < 1e9 (seconds and nanoseconds apart, so a guest may
	 * set any year the registers can hold without overflow) */
	int64_t offset_s, offset_ns;
	int64_t frozen_s;           /* the clock's time while SET is set */
};

static struct rtc *to_rtc(struct device *d)
{
	return (struct rtc *)d;
}

static void host_now(int64_t *s, int64_t *ns)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	*s = ts.tv_sec;
	*ns = ts.tv_nsec;
}

/* The running clock: whole seconds and the nanoseconds into the second. */
static void guest_now(const struct rtc *r, int64_t *s, int64_t *ns)
{
	int64_t hs, hns;
	host_now(&hs, &hns);
	int64_t n = hns + r->offset_ns;
	*s = hs + r->offset_s + n / NSEC;
	*ns = n % NSEC;
}

/* Make the running clock read (s, ns) now. */
static void set_guest_now(struct rtc *r, int64_t s, int64_t ns)
{
	int64_t hs, hns;
	host_now(&hs, &hns);
	r->offset_s = s - hs;
	r->offset_ns = ns - hns;
	if (r->offset_ns < 0) {
		r->offset_ns += NSEC;
		r->offset_s--;
	}
}

/* Seconds the registers show now. */
static int64_t shown_seconds(const struct rtc *r)
{
	if (r->ram[REG_B] & B_SET)
		return r->frozen_s;
	int64_t s, ns;
	guest_now(r, &s, &ns);
	return s;
}

static uint8_t encode(const struct rtc *r, int v)
{
	if (r->ram[REG_B] & B_DM_BIN)
		return (uint8_t)v;
	return (uint8_t)(((v / 10) % 10) << 4 | (v % 10));
}

static int decode(const struct rtc *r, uint8_t v)
{
	if (r->ram[REG_B] & B_DM_BIN)
		return v;
	return (v >> 4) * 10 + (v & 15);
}

static uint8_t encode_hour(const struct rtc *r, int h)
{
	if (r->ram[REG_B] & B_24H)
		return encode(r, h);
	int h12 = h % 12 ? h % 12 : 12;
	return (uint8_t)(encode(r, h12) | (h >= 12 ? 0x80 : 0));
}

static int decode_hour(const struct rtc *r, uint8_t v)
{
	if (r->ram[REG_B] & B_24H)
		return decode(r, v);
	int h = decode(r, v & 0x7f) % 12;
	return (v & 0x80) ? h + 12 : h;
}

static void broken_down(const struct rtc *r, struct tm *tm)
{
	time_t t = (time_t)shown_seconds(r);
	gmtime_r(&t, tm);
}

static bool is_clock_reg(unsigned i)
{
	return i == REG_SEC || i == REG_MIN || i == REG_HOUR || i == REG_WDAY || i == REG_MDAY ||
	       i == REG_MON || i == REG_YEAR || i == RTC_CENTURY_REG;
}

static uint8_t read_clock(const struct rtc *r, unsigned i)
{
	struct tm tm;
	broken_down(r, &tm);
	int year = tm.tm_year + 1900;
	switch (i) {
	case REG_SEC:  return encode(r, tm.tm_sec);
	case REG_MIN:  return encode(r, tm.tm_min);
	case REG_HOUR: return encode_hour(r, tm.tm_hour);
	case REG_WDAY: return encode(r, tm.tm_wday + 1);   /* Sunday = 1 */
	case REG_MDAY: return encode(r, tm.tm_mday);
	case REG_MON:  return encode(r, tm.tm_mon + 1);
	case REG_YEAR: return encode(r, year % 100);
	default:       return encode(r, year / 100);       /* century */
	}
}

static void write_clock(struct rtc *r, unsigned i, uint8_t v)
{
	struct tm tm;
	broken_down(r, &tm);
	int year = tm.tm_year + 1900;
	switch (i) {
	case REG_SEC:  tm.tm_sec = decode(r, v); break;
	case REG_MIN:  tm.tm_min = decode(r, v); break;
	case REG_HOUR: tm.tm_hour = decode_hour(r, v); break;
	case REG_WDAY: return;   /* derived from the date */
	case REG_MDAY: tm.tm_mday = decode(r, v); break;
	case REG_MON:  tm.tm_mon = decode(r, v) - 1; break;
	case REG_YEAR: year = year / 100 * 100 + decode(r, v) % 100; break;
	default:       year = decode(r, v) * 100 + year % 100; break;
	}
	tm.tm_year = year - 1900;
	tm.tm_isdst = 0;
	/* out-of-range fields are normalised (the 61st second is the next minute) */
	int64_t secs = (int64_t)timegm(&tm);
	if (r->ram[REG_B] & B_SET) {
		r->frozen_s = secs;
	} else {
		/* keep the phase within the second: only the counted value moves */
		int64_t s, ns;
		guest_now(r, &s, &ns);
		set_guest_now(r, secs, ns);
	}
}

static uint8_t reg_read(struct rtc *r, unsigned i)
{
	if (is_clock_reg(i))
		return read_clock(r, i);
	switch (i) {
	case REG_A: {
		uint8_t v = r->ram[REG_A] & 0x7f;
		if (!(r->ram[REG_B] & B_SET)) {
			int64_t s, ns;
			guest_now(r, &s, &ns);
			if (ns >= NSEC - UIP_NS)
				v |= A_UIP;
		}
		return v;
	}
	case REG_C:
		return 0;   /* no interrupt flags are generated */
	case REG_D:
		return D_VRT;
	default:
		return r->ram[i];
	}
}

static void reg_write(struct rtc *r, unsigned i, uint8_t v)
{
	if (is_clock_reg(i)) {
		write_clock(r, i, v);
		return;
	}
	switch (i) {
	case REG_A:
		r->ram[REG_A] = v & 0x7f;   /* UIP is read-only */
		break;
	case REG_B: {
		uint8_t old = r->ram[REG_B];
		if (v & B_SET)
			v &= (uint8_t)~B_UIE;   /* SET clears UIE */
		if ((v & B_SET) && !(old & B_SET)) {
			r->frozen_s = shown_seconds(r);
		} else if (!(v & B_SET) && (old & B_SET)) {
			/* the divider restarts: the next second begins a full second later */
			set_guest_now(r, r->frozen_s, 0);
		}
		r->ram[REG_B] = v;
		break;
	}
	case REG_C:
	case REG_D:
		break;   /* read-only */
	default:
		r->ram[i] = v;
		break;
	}
}

static void rtc_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct rtc *r = opaque;
	uint8_t v;
	memset(data, 0xff, size);
	pthread_mutex_lock(&r->lock);
	v = off == 0 ? 0xff : reg_read(r, r->index);   /* the index port is write-only */
	pthread_mutex_unlock(&r->lock);
	((uint8_t *)data)[0] = v;
}

static void rtc_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct rtc *r = opaque;
	uint8_t v = ((const uint8_t *)data)[0];
	(void)size;
	pthread_mutex_lock(&r->lock);
	if (off == 0)
		r->index = v & 0x7f;   /* bit 7 masks NMIs on a PC: ignored */
	else
		reg_write(r, r->index, v);
	pthread_mutex_unlock(&r->lock);
}

int64_t rtc_cmos_guest_time(struct device *d)
{
	struct rtc *r = to_rtc(d);
	pthread_mutex_lock(&r->lock);
	int64_t s = shown_seconds(r);
	pthread_mutex_unlock(&r->lock);
	return s;
}

/* A guest reset does not touch a battery-backed clock or its RAM; it clears
 * the interrupt enables and the square-wave output, as the RESET pin does. */
static void rtc_reset(struct device *d)
{
	struct rtc *r = to_rtc(d);
	pthread_mutex_lock(&r->lock);
	r->ram[REG_B] &= (uint8_t)~(B_PIE | B_AIE | B_UIE | B_SQWE);
	pthread_mutex_unlock(&r->lock);
}

static int rtc_save(struct device *d, struct state_writer *w)
{
	struct rtc *r = to_rtc(d);
	pthread_mutex_lock(&r->lock);
	sw_uint(w, "index", r->index);
	sw_bytes(w, "ram", r->ram, sizeof(r->ram));
	sw_uint(w, "offset_s", (uint64_t)r->offset_s);
	sw_uint(w, "offset_ns", (uint64_t)r->offset_ns);
	sw_uint(w, "frozen_s", (uint64_t)r->frozen_s);
	pthread_mutex_unlock(&r->lock);
	return w->err;
}

static int rtc_load(struct device *d, const struct state_reader *rd, struct terr *err)
{
	struct rtc *r = to_rtc(d);
	uint64_t index, off_s, off_ns, frozen;
	uint8_t ram[128];
	int ret;

	pthread_mutex_lock(&r->lock);
	memcpy(ram, r->ram, sizeof(ram));
	uint64_t cur_s = (uint64_t)r->offset_s, cur_ns = (uint64_t)r->offset_ns;
	uint64_t cur_frozen = (uint64_t)r->frozen_s;
	pthread_mutex_unlock(&r->lock);
	if ((ret = sr_uint_max(rd, "index", 0, 0x7f, &index, err)) ||
	    (ret = sr_bytes_exact(rd, "ram", ram, sizeof(ram), err)) ||
	    (ret = sr_uint(rd, "offset_s", cur_s, &off_s, err)) ||
	    (ret = sr_uint_max(rd, "offset_ns", cur_ns, NSEC - 1, &off_ns, err)) ||
	    (ret = sr_uint(rd, "frozen_s", cur_frozen, &frozen, err)))
		return ret;
	/* the registers reach year 25599 at most (binary century 255) */
	const int64_t limit = 1000000000000LL;
	if ((int64_t)off_s > limit || (int64_t)off_s < -limit)
		return terr_set(err, EINVAL, "%s: clock offset %lld s is out of range", d->id,
				(long long)(int64_t)off_s);
	if ((int64_t)frozen > limit || (int64_t)frozen < -limit)
		return terr_set(err, EINVAL, "%s: stopped clock time %lld is out of range", d->id,
				(long long)(int64_t)frozen);
	pthread_mutex_lock(&r->lock);
	r->index = (uint8_t)index;
	memcpy(r->ram, ram, sizeof(ram));
	r->ram[REG_A] &= 0x7f;
	r->offset_s = (int64_t)off_s;
	r->offset_ns = (int64_t)off_ns;
	r->frozen_s = (int64_t)frozen;
	pthread_mutex_unlock(&r->lock);
	return 0;
}

static void rtc_destroy(struct device *d)
{
	struct rtc *r = to_rtc(d);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

const struct device_ops rtc_cmos_ops = {
	.type = "rtc-cmos",
	.state_version = 1,
	.state_min_version = 1,
	.reset = rtc_reset,
	.save = rtc_save,
	.load = rtc_load,
	.destroy = rtc_destroy,
};

int rtc_cmos_create(struct vm *vm, const char *id, struct device **out, struct terr *err)
{
	if (!id)
		id = "rtc.0";
	struct rtc *r = calloc(1, sizeof(*r));
	if (!r)
		return terr_set(err, ENOMEM, "%s: out of memory", id);
	r->dev.ops = &rtc_cmos_ops;
	snprintf(r->dev.id, sizeof(r->dev.id), "%s", id);
	r->dev.priv = r;
	pthread_mutex_init(&r->lock, NULL);
	r->ram[REG_A] = RESET_A;
	r->ram[REG_B] = RESET_B;
	r->ram[REG_D] = D_VRT;
	vm_add_device(vm, &r->dev);
	int ret = bus_register(&vm->pio, RTC_INDEX_PORT, 2, rtc_read, rtc_write, r, r->dev.id, err);
	if (ret)
		return ret;
	*out = &r->dev;
	return 0;
}

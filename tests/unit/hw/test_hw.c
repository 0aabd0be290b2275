/* Platform devices on a real /dev/kvm VM, driven through the port I/O bus
 * as a vCPU would: the ACPI PM block (S5 power-off, reset register, SCI
 * status/enable, the PM timer's rate), the i8042 (self test, configuration
 * byte, keyboard identify, reset line) and the CMOS RTC (host time in BCD,
 * binary and 12-hour modes, setting the time, save/load keeping the clock). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "arch/x86/acpi.h"
#include "core/kvm.h"
#include "core/vm.h"
#include "hw/acpi_pm.h"
#include "hw/i8042.h"
#include "hw/rtc_cmos.h"

struct fixture {
	struct kvm_sys kvm;
	struct vm vm;
};

static int setup(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct terr err = { 0 };
	if (kvm_sys_open(&f->kvm, "/dev/kvm", &err) ||
	    vm_create(&f->vm, &f->kvm, 4 << 20, 1, NULL, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		free(f);
		return -1;
	}
	*ctx = f;
	return 0;
}

static int teardown(void **ctx)
{
	struct fixture *f = *ctx;
	vm_destroy(&f->vm);
	kvm_sys_close(&f->kvm);
	free(f);
	return 0;
}

static uint32_t in(struct vm *vm, uint16_t port, unsigned size)
{
	uint32_t v = 0;
	assert_int_equal(bus_read(&vm->pio, port, &v, size), 0);
	return v;
}

static void out(struct vm *vm, uint16_t port, uint32_t v, unsigned size)
{
	assert_int_equal(bus_write(&vm->pio, port, &v, size), 0);
}

static void msleep(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- ACPI PM ---- */

static struct device *make_pm(struct fixture *f)
{
	struct terr err = { 0 };
	struct device *d = NULL;
	if (acpi_pm_create(&f->vm, NULL, &d, &err))
		fail_msg("%s", err.msg);
	return d;
}

/* The FADT the ACPI code writes points at these very ports. */
static void test_pm_ports_match_fadt(void **ctx)
{
	struct fixture *f = *ctx;
	struct acpi_config c;
	acpi_config_defaults(&c, &f->vm.mem, 1);
	assert_int_equal(c.pm1a_evt_port, ACPI_PM1A_EVT_PORT);
	assert_int_equal(c.pm1a_cnt_port, ACPI_PM1A_CNT_PORT);
	assert_int_equal(c.pm_tmr_port, ACPI_PM_TMR_PORT);
	assert_int_equal(c.reset_port, ACPI_RESET_PORT);
	assert_int_equal(c.reset_value, ACPI_RESET_VALUE);
	assert_int_equal(c.sci_irq, ACPI_SCI_IRQ);
}

static void test_pm_s5_powers_off(void **ctx)
{
	struct fixture *f = *ctx;
	make_pm(f);
	/* SCI_EN reads set: the OS finds ACPI mode on */
	assert_int_equal(in(&f->vm, ACPI_PM1A_CNT_PORT, 2) & ACPI_PM1_CNT_SCI_EN, ACPI_PM1_CNT_SCI_EN);
	/* SLP_TYP alone does not sleep; another type with SLP_EN is ignored */
	out(&f->vm, ACPI_PM1A_CNT_PORT, ACPI_S5_SLP_TYP << ACPI_PM1_CNT_SLP_TYP_SHIFT, 2);
	assert_false(f->vm.exit_req);
	out(&f->vm, ACPI_PM1A_CNT_PORT, (1u << ACPI_PM1_CNT_SLP_TYP_SHIFT) | ACPI_PM1_CNT_SLP_EN, 2);
	assert_false(f->vm.exit_req);
	/* SLP_EN is write-only */
	assert_int_equal(in(&f->vm, ACPI_PM1A_CNT_PORT, 2) & ACPI_PM1_CNT_SLP_EN, 0);
	out(&f->vm, ACPI_PM1A_CNT_PORT,
	    (ACPI_S5_SLP_TYP << ACPI_PM1_CNT_SLP_TYP_SHIFT) | ACPI_PM1_CNT_SLP_EN, 2);
	assert_true(f->vm.exit_req);
	assert_int_equal(f->vm.exit_reason, VM_EXIT_POWEROFF);
	assert_int_equal(f->vm.exit_status, 0);
}

/* Linux writes the high byte of PM1_CNT on its own too (8-bit accesses). */
static void test_pm_s5_byte_write(void **ctx)
{
	struct fixture *f = *ctx;
	make_pm(f);
	uint16_t v = (ACPI_S5_SLP_TYP << ACPI_PM1_CNT_SLP_TYP_SHIFT) | ACPI_PM1_CNT_SLP_EN;
	out(&f->vm, ACPI_PM1A_CNT_PORT + 1, v >> 8, 1);
	assert_true(f->vm.exit_req);
	assert_int_equal(f->vm.exit_reason, VM_EXIT_POWEROFF);
}

static void test_pm_reset_register(void **ctx)
{
	struct fixture *f = *ctx;
	make_pm(f);
	out(&f->vm, ACPI_RESET_PORT, ACPI_RESET_VALUE + 1, 1);
	assert_false(f->vm.exit_req);
	out(&f->vm, ACPI_RESET_PORT, ACPI_RESET_VALUE, 1);
	assert_true(f->vm.exit_req);
	assert_int_equal(f->vm.exit_reason, VM_EXIT_RESET);
}

static void test_pm_power_button_status(void **ctx)
{
	struct fixture *f = *ctx;
	struct device *d = make_pm(f);
	assert_int_equal(in(&f->vm, ACPI_PM1A_EVT_PORT, 4), 0);
	out(&f->vm, ACPI_PM1A_EVT_PORT + 2, ACPI_PM1_PWRBTN, 2);   /* enable */
	acpi_pm_power_button(d);
	uint32_t v = in(&f->vm, ACPI_PM1A_EVT_PORT, 4);
	assert_int_equal(v & 0xffff, ACPI_PM1_PWRBTN);
	assert_int_equal(v >> 16, ACPI_PM1_PWRBTN);
	/* writing 0 leaves the status, writing 1 clears it (RW1C) */
	out(&f->vm, ACPI_PM1A_EVT_PORT, 0, 2);
	assert_int_equal(in(&f->vm, ACPI_PM1A_EVT_PORT, 2), ACPI_PM1_PWRBTN);
	out(&f->vm, ACPI_PM1A_EVT_PORT + 1, ACPI_PM1_PWRBTN >> 8, 1);
	assert_int_equal(in(&f->vm, ACPI_PM1A_EVT_PORT, 2), 0);
	assert_int_equal(in(&f->vm, ACPI_PM1A_EVT_PORT + 2, 2), ACPI_PM1_PWRBTN);
	/* status survives save/load */
	acpi_pm_power_button(d);
	struct state_writer w;
	sw_init(&w);
	assert_int_equal(d->ops->save(d, &w), 0);
	out(&f->vm, ACPI_PM1A_EVT_PORT, 0xffff, 2);
	assert_int_equal(in(&f->vm, ACPI_PM1A_EVT_PORT, 2), 0);
	struct state_reader r;
	struct terr err = { 0 };
	assert_int_equal(sr_init(&r, w.buf, w.len, d->id, &err), 0);
	assert_int_equal(d->ops->load(d, &r, &err), 0);
	assert_int_equal(in(&f->vm, ACPI_PM1A_EVT_PORT, 2), ACPI_PM1_PWRBTN);
	sr_free(&r);
	sw_free(&w);
}

static void test_pm_timer_rate(void **ctx)
{
	struct fixture *f = *ctx;
	struct device *d = make_pm(f);
	double t0 = mono_s();
	uint32_t a = in(&f->vm, ACPI_PM_TMR_PORT, 4);
	msleep(300);
	uint32_t b = in(&f->vm, ACPI_PM_TMR_PORT, 4);
	double t1 = mono_s();
	double rate = (double)(uint32_t)(b - a) / (t1 - t0);
	if (rate < ACPI_PM_TMR_HZ * 0.99 || rate > ACPI_PM_TMR_HZ * 1.01)
		fail_msg("PM timer counts at %.0f Hz, expected %llu", rate, ACPI_PM_TMR_HZ);
	/* the counter is 32 bits wide (FADT TMR_VAL_EXT): the high byte moves
	 * by 3.58 MHz / 2^24 = 0.21 per second, so read it around a full turn
	 * of the low 24 bits is too slow; check the width through the byte
	 * lanes instead: byte 3 equals bits 31-24 of a dword read */
	uint32_t dw = in(&f->vm, ACPI_PM_TMR_PORT, 4);
	uint32_t hi = in(&f->vm, ACPI_PM_TMR_PORT + 3, 1);
	assert_true(hi == (dw >> 24) || hi == ((dw >> 24) + 1) % 256);
	/* paused, the timer stands still; resumed, it goes on from there */
	d->ops->pause(d);
	uint32_t p0 = acpi_pm_timer(d);
	msleep(50);
	assert_int_equal(acpi_pm_timer(d), p0);
	d->ops->resume(d);
	uint32_t p1 = acpi_pm_timer(d);
	assert_true((uint32_t)(p1 - p0) < ACPI_PM_TMR_HZ / 100);   /* well under the 50 ms pause */
}

/* ---- i8042 ---- */

static struct device *make_kbc(struct fixture *f)
{
	struct terr err = { 0 };
	struct device *d = NULL;
	if (i8042_create(&f->vm, NULL, &d, &err))
		fail_msg("%s", err.msg);
	return d;
}

static uint8_t kbc_read_data(struct vm *vm)
{
	assert_true(in(vm, I8042_CMD_PORT, 1) & 0x01);   /* output buffer full */
	return (uint8_t)in(vm, I8042_DATA_PORT, 1);
}

static void test_i8042_probe(void **ctx)
{
	struct fixture *f = *ctx;
	make_kbc(f);
	assert_int_equal(in(&f->vm, I8042_CMD_PORT, 1) & 0x01, 0);
	out(&f->vm, I8042_CMD_PORT, 0xaa, 1);          /* self test */
	assert_int_equal(kbc_read_data(&f->vm), 0x55);
	assert_int_equal(in(&f->vm, I8042_CMD_PORT, 1) & 0x05, 0x04);   /* SYS set, buffer empty */
	out(&f->vm, I8042_CMD_PORT, 0xab, 1);          /* keyboard interface test */
	assert_int_equal(kbc_read_data(&f->vm), 0x00);
	/* configuration byte round trip */
	out(&f->vm, I8042_CMD_PORT, 0x60, 1);
	out(&f->vm, I8042_DATA_PORT, 0x47, 1);
	out(&f->vm, I8042_CMD_PORT, 0x20, 1);
	assert_int_equal(kbc_read_data(&f->vm), 0x47);
	/* the keyboard identifies itself (translated, as CTR bit 6 asks) */
	out(&f->vm, I8042_DATA_PORT, 0xf2, 1);
	assert_int_equal(kbc_read_data(&f->vm), 0xfa);
	assert_int_equal(kbc_read_data(&f->vm), 0xab);
	assert_int_equal(kbc_read_data(&f->vm), 0x41);
	assert_int_equal(in(&f->vm, I8042_CMD_PORT, 1) & 0x01, 0);
	/* auxiliary loopback comes back flagged as auxiliary data; a byte for
	 * the (absent) mouse times out */
	out(&f->vm, I8042_CMD_PORT, 0xd3, 1);
	out(&f->vm, I8042_DATA_PORT, 0x5a, 1);
	assert_int_equal(in(&f->vm, I8042_CMD_PORT, 1) & 0x21, 0x21);
	assert_int_equal(in(&f->vm, I8042_DATA_PORT, 1), 0x5a);
	out(&f->vm, I8042_CMD_PORT, 0xd4, 1);
	out(&f->vm, I8042_DATA_PORT, 0xf2, 1);
	assert_int_equal(in(&f->vm, I8042_CMD_PORT, 1) & 0x61, 0x61);
	assert_int_equal(in(&f->vm, I8042_DATA_PORT, 1), 0xfe);
	assert_false(f->vm.exit_req);
}

static void test_i8042_reset_line(void **ctx)
{
	struct fixture *f = *ctx;
	make_kbc(f);
	out(&f->vm, I8042_CMD_PORT, 0xff, 1);   /* pulse no line */
	assert_false(f->vm.exit_req);
	out(&f->vm, I8042_CMD_PORT, 0xfe, 1);
	assert_true(f->vm.exit_req);
	assert_int_equal(f->vm.exit_reason, VM_EXIT_RESET);
}

static void test_i8042_outport_reset(void **ctx)
{
	struct fixture *f = *ctx;
	make_kbc(f);
	out(&f->vm, I8042_CMD_PORT, 0xd0, 1);
	uint8_t op = kbc_read_data(&f->vm);
	assert_int_equal(op & 0x03, 0x03);
	out(&f->vm, I8042_CMD_PORT, 0xd1, 1);
	out(&f->vm, I8042_DATA_PORT, 0x03, 1);   /* A20 on, not in reset */
	assert_false(f->vm.exit_req);
	out(&f->vm, I8042_CMD_PORT, 0xd1, 1);
	out(&f->vm, I8042_DATA_PORT, 0x02, 1);
	assert_true(f->vm.exit_req);
	assert_int_equal(f->vm.exit_reason, VM_EXIT_RESET);
}

/* ---- RTC ---- */

static struct device *make_rtc(struct fixture *f)
{
	struct terr err = { 0 };
	struct device *d = NULL;
	if (rtc_cmos_create(&f->vm, NULL, &d, &err))
		fail_msg("%s", err.msg);
	return d;
}

static uint8_t cmos(struct vm *vm, uint8_t reg)
{
	out(vm, RTC_INDEX_PORT, reg | 0x80, 1);   /* with the NMI-disable bit, ignored */
	return (uint8_t)in(vm, RTC_DATA_PORT, 1);
}

static void cmos_set(struct vm *vm, uint8_t reg, uint8_t v)
{
	out(vm, RTC_INDEX_PORT, reg, 1);
	out(vm, RTC_DATA_PORT, v, 1);
}

static int bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 15);
}

/* Reads the clock the way Linux does (wait for UIP clear, read, check the
 * seconds did not move) and returns it as seconds since the epoch. */
static int64_t read_rtc(struct vm *vm)
{
	for (int tries = 0; tries < 100; tries++) {
		while (cmos(vm, 0x0a) & 0x80)
			;
		uint8_t sec = cmos(vm, 0), min = cmos(vm, 2), hour = cmos(vm, 4);
		uint8_t mday = cmos(vm, 7), mon = cmos(vm, 8), year = cmos(vm, 9), cent = cmos(vm, 0x32);
		if (cmos(vm, 0x0a) & 0x80 || cmos(vm, 0) != sec)
			continue;
		uint8_t b = cmos(vm, 0x0b);
		int (*dec)(uint8_t) = (b & 0x04) ? NULL : bcd;
#define D(x) (dec ? dec(x) : (x))
		struct tm tm = { 0 };
		tm.tm_sec = D(sec);
		tm.tm_min = D(min);
		if (b & 0x02) {
			tm.tm_hour = D(hour);
		} else {
			tm.tm_hour = D(hour & 0x7f) % 12 + ((hour & 0x80) ? 12 : 0);
		}
		tm.tm_mday = D(mday);
		tm.tm_mon = D(mon) - 1;
		tm.tm_year = D(cent) * 100 + D(year) - 1900;
#undef D
		return (int64_t)timegm(&tm);
	}
	fail_msg("RTC never gave a stable reading");
	return 0;
}

static void assert_near(int64_t got, int64_t want, int64_t slack)
{
	if (got < want - slack || got > want + slack)
		fail_msg("RTC reads %lld, expected %lld (+-%lld)", (long long)got, (long long)want,
			 (long long)slack);
}

static void test_rtc_host_time_bcd_binary_12h(void **ctx)
{
	struct fixture *f = *ctx;
	make_rtc(f);
	assert_int_equal(cmos(&f->vm, 0x0b), 0x02);   /* BCD, 24-hour */
	assert_int_equal(cmos(&f->vm, 0x0d), 0x80);   /* valid RAM and time */
	assert_near(read_rtc(&f->vm), time(NULL), 1);
	/* the registers really are BCD: no nibble above 9 */
	for (uint8_t reg = 0; reg <= 9; reg++)
		if (reg != 1 && reg != 3 && reg != 5)
			assert_true((cmos(&f->vm, reg) & 0x0f) <= 9);
	assert_int_equal(cmos(&f->vm, 0x32), 0x20);
	/* the day of the week follows the date (Sunday = 1) */
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	if (tm.tm_hour != 23 || tm.tm_min != 59)
		assert_int_equal(bcd(cmos(&f->vm, 6)), tm.tm_wday + 1);

	cmos_set(&f->vm, 0x0b, 0x06);   /* binary, 24-hour */
	assert_near(read_rtc(&f->vm), time(NULL), 1);
	assert_int_equal(cmos(&f->vm, 0x32), 20);
	cmos_set(&f->vm, 0x0b, 0x04);   /* binary, 12-hour */
	assert_near(read_rtc(&f->vm), time(NULL), 1);
	uint8_t h = cmos(&f->vm, 4);
	assert_true((h & 0x7f) >= 1 && (h & 0x7f) <= 12);
	cmos_set(&f->vm, 0x0b, 0x00);   /* BCD, 12-hour */
	assert_near(read_rtc(&f->vm), time(NULL), 1);
}

/* Setting the time: SET stops the clock, the registers take the new date,
 * clearing SET starts it again from there. */
static void test_rtc_set_time(void **ctx)
{
	struct fixture *f = *ctx;
	struct device *d = make_rtc(f);
	cmos_set(&f->vm, 0x0b, 0x82);   /* SET, BCD, 24h */
	cmos_set(&f->vm, 0x32, 0x20);
	cmos_set(&f->vm, 0x09, 0x31);   /* 2031-02-03 04:05:06 */
	cmos_set(&f->vm, 0x08, 0x02);
	cmos_set(&f->vm, 0x07, 0x03);
	cmos_set(&f->vm, 0x04, 0x04);
	cmos_set(&f->vm, 0x02, 0x05);
	cmos_set(&f->vm, 0x00, 0x06);
	const int64_t set = 1927857906;   /* 2031-02-03T04:05:06Z */
	assert_int_equal(rtc_cmos_guest_time(d), set);
	msleep(1100);
	assert_int_equal(rtc_cmos_guest_time(d), set);   /* stopped */
	cmos_set(&f->vm, 0x0b, 0x02);
	assert_int_equal(read_rtc(&f->vm), set);
	msleep(1100);
	assert_int_equal(read_rtc(&f->vm), set + 1);
	/* a single register written while running moves only that field */
	cmos_set(&f->vm, 0x02, 0x35);   /* minutes 05 -> 35 */
	assert_near(read_rtc(&f->vm), set + 1 + 30 * 60, 1);
}

/* The offset to the host's clock is what is saved: a restored clock shows
 * the guest's time, still running. */
static void test_rtc_save_load(void **ctx)
{
	struct fixture *f = *ctx;
	struct device *d = make_rtc(f);
	struct terr err = { 0 };
	cmos_set(&f->vm, 0x0b, 0x82);
	cmos_set(&f->vm, 0x09, 0x40);   /* year 2040 */
	cmos_set(&f->vm, 0x0b, 0x06);   /* run, binary 24h */
	cmos_set(&f->vm, 0x40, 0xa5);   /* a byte of CMOS RAM */
	int64_t shift = read_rtc(&f->vm) - time(NULL);
	assert_true(shift > 365LL * 86400 * 10);
	struct state_writer w;
	sw_init(&w);
	assert_int_equal(d->ops->save(d, &w), 0);

	/* a fresh RTC in a fresh VM (the restore side) */
	struct fixture *g = NULL;
	assert_int_equal(setup((void **)&g), 0);
	struct device *d2 = make_rtc(g);
	assert_near(read_rtc(&g->vm) - time(NULL), 0, 1);
	msleep(1100);   /* time passes between save and restore */
	struct state_reader r;
	assert_int_equal(sr_init(&r, w.buf, w.len, d2->id, &err), 0);
	assert_int_equal(d2->ops->load(d2, &r, &err), 0);
	sr_free(&r);
	assert_near(read_rtc(&g->vm) - time(NULL), shift, 1);
	assert_int_equal(cmos(&g->vm, 0x0b), 0x06);
	assert_int_equal(cmos(&g->vm, 0x40), 0xa5);
	assert_int_equal(cmos(&g->vm, 0x09), 40);
	/* and it runs */
	int64_t t0 = rtc_cmos_guest_time(d2);
	msleep(1100);
	assert_true(rtc_cmos_guest_time(d2) > t0);

	/* a bad saved offset is refused with the device named */
	struct state_writer bad;
	sw_init(&bad);
	sw_uint(&bad, "offset_ns", 2000000000u);
	assert_int_equal(sr_init(&r, bad.buf, bad.len, d2->id, &err), 0);
	assert_true(d2->ops->load(d2, &r, &err) < 0);
	assert_non_null(strstr(err.msg, "rtc.0"));
	sr_free(&r);
	sw_free(&bad);
	sw_free(&w);
	teardown((void **)&g);
}

/* UIP is set only in the last 244 us before the seconds change. The RTC
 * starts on the host's clock, so every sample is checked against the host
 * time read just before and after it; samples are concentrated around the
 * end of each second until enough have landed inside the window (a loaded
 * host may preempt us through a few of them). */
static void test_rtc_uip(void **ctx)
{
	struct fixture *f = *ctx;
	make_rtc(f);
	assert_int_equal(cmos(&f->vm, 0x0a) & 0x7f, 0x26);
	unsigned inside = 0, outside = 0;
	double t0 = mono_s();
	while (inside < 3 && mono_s() - t0 < 10) {
		struct timespec a, b;
		clock_gettime(CLOCK_REALTIME, &a);
		if (a.tv_nsec < 999000000L && outside > 50) {
			/* sleep to just before the end of the second */
			struct timespec ts = { 0, 999000000L - a.tv_nsec };
			nanosleep(&ts, NULL);
			continue;
		}
		uint8_t v = cmos(&f->vm, 0x0a);
		clock_gettime(CLOCK_REALTIME, &b);
		if (a.tv_sec != b.tv_sec)
			continue;
		if (a.tv_nsec >= 999756000L) {
			if (!(v & 0x80))
				fail_msg("UIP clear at %ld ns into the second", a.tv_nsec);
			inside++;
		} else if (b.tv_nsec < 999756000L) {
			if (v & 0x80)
				fail_msg("UIP set at %ld-%ld ns into the second", a.tv_nsec, b.tv_nsec);
			outside++;
		}
	}
	assert_true(inside >= 3);
	assert_true(outside > 50);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pm_ports_match_fadt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pm_s5_powers_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pm_s5_byte_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pm_reset_register, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pm_power_button_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pm_timer_rate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_i8042_probe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_i8042_reset_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_i8042_outport_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rtc_host_time_bcd_binary_12h, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rtc_set_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rtc_save_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rtc_uip, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

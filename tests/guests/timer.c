/* timer: LAPIC timer interrupts taken while running at CPL3.
 *
 * A periodic LAPIC timer (vector 0x40, divide by 1) interrupts main(),
 * which spins at CPL3 with interrupts enabled; the CPL0 handler counts
 * ticks (through the IDT and the TSS's RSP0) and the runtime sends EOI.
 *
 * Command line: ticks=N [100], hz=F [1000] (assumes the 1 GHz APIC bus
 * clock of KVM and QEMU), timeout_ms=MS [10000 + 4x the expected time].
 * Output:
 *   timer: N ticks                 exit 0
 *   timer: only K ticks            exit 1 */
#include "rt.h"

#define TIMER_VECTOR 0x40

static volatile u64 ticks;

static void tick(void)
{
	ticks++;
}

void guest_kinit(void)
{
	u64 hz = rt_arg("hz", 1000);
	if (hz < 1 || hz > 1000000)
		rt_fatal("timer: hz=%lu outside 1..1000000\n", (unsigned long)hz);
	rt_set_irq(TIMER_VECTOR, tick);
	rt_lapic_enable();
	lapic_write(LAPIC_TIMER_DCR, 0xb);                       /* divide by 1 */
	lapic_write(LAPIC_LVT_TIMER, TIMER_VECTOR | 1u << 17);  /* periodic */
	lapic_write(LAPIC_TIMER_ICR, (u32)(1000000000ull / hz));
	rt_user_irqs = true;
}

int main(void)
{
	u64 want = rt_arg("ticks", 100), hz = rt_arg("hz", 1000);
	u64 ms = rt_arg("timeout_ms", 10000 + 4 * want * 1000 / hz);
	u64 end = rdtsc() + rt_ms_to_tsc(ms);
	while (ticks < want && rdtsc() < end)
		cpu_relax();
	u64 got = ticks;
	if (got < want) {
		rt_printf("timer: only %lu ticks\n", (unsigned long)got);
		return RT_EXIT_BAD;
	}
	rt_printf("timer: %lu ticks\n", (unsigned long)want);
	return RT_EXIT_OK;
}

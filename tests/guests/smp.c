/* smp: start every other CPU and wait for all of them to report.
 *
 * The boot CPU reports itself, then sends INIT-SIPI-SIPI to all other CPUs
 * (real-mode trampoline at 0x90000); each AP enters long mode, prints its
 * line and halts. The boot CPU waits at CPL3, bounded by timeout_ms.
 *
 * Command line: cpus=N [1] (how many CPUs the VM has), timeout_ms=MS [5000].
 * Output:
 *   smp: cpu ID up                 one line per CPU (ID = APIC id)
 *   smp: N cpus OK                 exit 0
 *   smp: only K of N cpus          exit 1 */
#include "rt.h"

static volatile u32 cpus_up;
static u64 want;

void guest_ap_main(unsigned apic_id)
{
	rt_printf("smp: cpu %u up\n", apic_id);
	__atomic_fetch_add(&cpus_up, 1, __ATOMIC_SEQ_CST);
}

void guest_kinit(void)
{
	want = rt_arg("cpus", 1);
	if (want < 1 || want > RT_MAX_CPUS)
		rt_fatal("smp: cpus=%lu outside 1..%u\n", (unsigned long)want, RT_MAX_CPUS);
	rt_printf("smp: cpu %u up\n", rt_apic_id());
	cpus_up = 1;
	if (want > 1)
		rt_start_aps();
}

int main(void)
{
	u64 end = rdtsc() + rt_ms_to_tsc(rt_arg("timeout_ms", 5000));
	while (cpus_up < want && rdtsc() < end)
		cpu_relax();
	u32 up = cpus_up;
	if (up < want) {
		rt_printf("smp: only %u of %lu cpus\n", up, (unsigned long)want);
		return RT_EXIT_BAD;
	}
	rt_printf("smp: %lu cpus OK\n", (unsigned long)want);
	return RT_EXIT_OK;
}

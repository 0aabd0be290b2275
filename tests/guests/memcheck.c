/* memcheck: fill all RAM above 16 MiB with a function of the address,
 * read it all back, report.
 *
 *   memcheck: testing N MiB
 *   memcheck: N MiB OK                                  exit 0
 *   memcheck: BAD at 0xADDR expected 0x.. got 0x..      exit 1
 *
 * Command line: seed=N (pattern seed, default 0). */
#include "rt.h"

#define MAX_RANGES 64

int main(void)
{
	struct rt_range r[MAX_RANGES];
	unsigned n = rt_ram_above(RT_RESERVED_TOP, r, MAX_RANGES);
	u64 seed = rt_arg("seed", 0), total = 0;

	for (unsigned i = 0; i < n; i++)
		total += r[i].size;
	if (!total)
		rt_fatal("memcheck: no RAM above 16 MiB\n");
	rt_printf("memcheck: testing %lu MiB\n", (unsigned long)(total / MiB));
	for (unsigned i = 0; i < n; i++)
		rt_fill_pattern(r[i].base, r[i].size, seed);
	for (unsigned i = 0; i < n; i++) {
		u64 a = rt_check_pattern(r[i].base, r[i].size, seed);
		if (a) {
			rt_printf("memcheck: BAD at 0x%lx expected 0x%lx got 0x%lx\n",
				  (unsigned long)a, (unsigned long)rt_pattern(a, seed),
				  (unsigned long)*(const u64 *)(uintptr_t)a);
			return RT_EXIT_BAD;
		}
	}
	rt_printf("memcheck: %lu MiB OK\n", (unsigned long)(total / MiB));
	return RT_EXIT_OK;
}

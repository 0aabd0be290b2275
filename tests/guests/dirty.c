/* dirty: fill RAM, keep dirtying a window of it, then check every page.
 *
 * All RAM above 16 MiB is filled with rt_pattern(address). The first
 * `window` bytes of it are the window: word 0 of each window page is a
 * counter, word 1 a check word derived from the page address and the
 * counter. Each pass increments every window page's counter (read, add,
 * write) and then the global passes_done, which lives in the guest image.
 * Verification wants every window counter equal to passes_done and every
 * other word intact, so a page that was lost, corrupted or restored from an
 * older copy shows up as BAD, however the guest was paused, saved, restored
 * or migrated in between.
 *
 * Command line (defaults in brackets):
 *   passes=N        passes to run [20]; 0 = forever (until the VM is stopped)
 *   window=SIZE     bytes dirtied per pass, K/M/G suffix [64M], clamped to RAM
 *   verify_every=K  also verify all RAM every K passes [0 = only at the end]
 *   progress=K      print "dirty: pass N" every K passes [1; 0 when passes=0]
 *   seed=N          fill pattern seed [0]
 *   inject=stale|lost  before the final check, roll the first window page
 *                   back one pass (stale) or
 *                   zero the last page of RAM (lost), to prove the check
 *                   catches it: the run must end BAD
 *
 * Output:
 *   dirty: start ram=1024M window=64M passes=20
 *   dirty: filled 1008M
 *   dirty: pass 1 ... dirty: pass 20
 *   dirty: verify OK                    (every verify_every passes)
 *   dirty: OK                           exit 0
 *   dirty: BAD page 0x... offset 0x... expected 0x... got 0x... (pass N)   exit 1 */
#include "rt.h"

#define MAX_RANGES 64

static struct rt_range ram[MAX_RANGES];
static unsigned nram;
static u64 seed, window;
static volatile u64 passes_done;

static u64 check_word(u64 page, u64 count)
{
	return rt_pattern(page + 8, seed + count + 1);
}

static void fill(void)
{
	for (unsigned i = 0; i < nram; i++)
		rt_fill_pattern(ram[i].base, ram[i].size, seed);
	u64 left = window;
	for (unsigned i = 0; i < nram && left; i++) {
		u64 n = ram[i].size < left ? ram[i].size : left;
		for (u64 a = ram[i].base; a < ram[i].base + n; a += PAGE_SIZE) {
			u64 *p = (u64 *)(uintptr_t)a;
			p[0] = 0;
			p[1] = check_word(a, 0);
		}
		left -= n;
	}
}

static void pass(void)
{
	u64 left = window;
	for (unsigned i = 0; i < nram && left; i++) {
		u64 n = ram[i].size < left ? ram[i].size : left;
		for (u64 a = ram[i].base; a < ram[i].base + n; a += PAGE_SIZE) {
			volatile u64 *p = (volatile u64 *)(uintptr_t)a;
			u64 c = p[0] + 1;
			p[0] = c;
			p[1] = check_word(a, c);
		}
		left -= n;
	}
	passes_done++;
}

static bool bad(u64 addr, u64 want)
{
	u64 page = addr & ~(PAGE_SIZE - 1);
	rt_printf("dirty: BAD page 0x%lx offset 0x%lx expected 0x%lx got 0x%lx (pass %lu)\n",
		  (unsigned long)page, (unsigned long)(addr - page), (unsigned long)want,
		  (unsigned long)*(const u64 *)(uintptr_t)addr, (unsigned long)passes_done);
	return false;
}

static bool verify(void)
{
	u64 left = window, count = passes_done;
	for (unsigned i = 0; i < nram; i++) {
		u64 a = ram[i].base, end = a + ram[i].size;
		for (; a < end && left; a += PAGE_SIZE, left -= PAGE_SIZE) {
			const u64 *p = (const u64 *)(uintptr_t)a;
			if (p[0] != count)
				return bad(a, count);
			if (p[1] != check_word(a, count))
				return bad(a + 8, check_word(a, count));
			u64 b = rt_check_pattern(a + 16, PAGE_SIZE - 16, seed);
			if (b)
				return bad(b, rt_pattern(b, seed));
		}
		u64 b = rt_check_pattern(a, end - a, seed);
		if (b)
			return bad(b, rt_pattern(b, seed));
	}
	return true;
}

enum damage { DAMAGE_NONE, DAMAGE_STALE, DAMAGE_LOST };

static enum damage parse_inject(void)
{
	if (!rt_arg_str("inject"))
		return DAMAGE_NONE;
	if (rt_arg_is("inject", "stale"))
		return DAMAGE_STALE;
	if (rt_arg_is("inject", "lost"))
		return DAMAGE_LOST;
	rt_fatal("dirty: inject= must be stale or lost\n");
}

/* Damage memory the way a broken save/restore or migration would. */
static void inject(enum damage d)
{
	if (d == DAMAGE_STALE) {
		u64 a = ram[0].base, c = passes_done - 1;
		rt_printf("dirty: inject stale page 0x%lx\n", (unsigned long)a);
		((u64 *)(uintptr_t)a)[0] = c;
		((u64 *)(uintptr_t)a)[1] = check_word(a, c);
	} else if (d == DAMAGE_LOST) {
		u64 a = ram[nram - 1].base + ram[nram - 1].size - PAGE_SIZE;
		rt_printf("dirty: inject lost page 0x%lx\n", (unsigned long)a);
		memset((void *)(uintptr_t)a, 0, PAGE_SIZE);
	}
}

int main(void)
{
	u64 passes = rt_arg("passes", 20);
	u64 verify_every = rt_arg("verify_every", 0);
	u64 progress = rt_arg("progress", passes ? 1 : 0);
	enum damage damage = parse_inject();
	u64 tested = 0;

	seed = rt_arg("seed", 0);
	nram = rt_ram_above(RT_RESERVED_TOP, ram, MAX_RANGES);
	for (unsigned i = 0; i < nram; i++)
		tested += ram[i].size;
	if (!tested)
		rt_fatal("dirty: no RAM above 16 MiB\n");
	window = rt_arg("window", 64 * MiB) & ~(PAGE_SIZE - 1);
	if (window > tested)
		window = tested;
	if (damage == DAMAGE_STALE && !window)
		rt_fatal("dirty: inject=stale needs a window\n");
	if (damage == DAMAGE_STALE && !passes)
		rt_fatal("dirty: inject=stale needs passes > 0\n");

	bool kib = window % MiB;
	rt_printf("dirty: start ram=%luM window=%lu%c passes=%lu\n",
		  (unsigned long)((rt_ram_total() + MiB - 1) / MiB),
		  (unsigned long)(window / (kib ? KiB : MiB)), kib ? 'K' : 'M', (unsigned long)passes);
	fill();
	rt_printf("dirty: filled %luM\n", (unsigned long)(tested / MiB));

	while (!passes || passes_done < passes) {
		pass();
		if (progress && passes_done % progress == 0)
			rt_printf("dirty: pass %lu\n", (unsigned long)passes_done);
		if (verify_every && passes_done % verify_every == 0) {
			if (!verify())
				return RT_EXIT_BAD;
			rt_puts("dirty: verify OK\n");
		}
	}
	inject(damage);
	if (!verify())
		return RT_EXIT_BAD;
	rt_puts("dirty: OK\n");
	return RT_EXIT_OK;
}

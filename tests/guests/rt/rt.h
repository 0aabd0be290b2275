/* Runtime for tern's freestanding test guests (see tests/guests/README.md).
 *
 * A guest is one .c file defining main(), which runs at CPL3 (user mode)
 * with IOPL=3, so it can use port I/O directly. Optional hooks run at CPL0
 * before that: guest_kinit() on the boot CPU, guest_ap_main() on each
 * application processor started by rt_start_aps(). CPL0 code should stay
 * short: on nested KVM hosts it may run through a slow instruction emulator,
 * while CPL3 code runs natively.
 *
 * Everything from 0 to the top of RAM is identity mapped, user accessible.
 * The image, its stacks and page tables live below RT_RESERVED_TOP (16 MiB);
 * RAM above it belongs to the workload. */
#ifndef TERN_GUEST_RT_H
#define TERN_GUEST_RT_H

/* Shared with entry.S. */
#define RT_SEL_KCODE    0x08    /* 64-bit kernel code */
#define RT_SEL_KDATA    0x10
#define RT_SEL_UDATA    0x18    /* used with RPL 3 */
#define RT_SEL_UCODE    0x20    /* 64-bit user code, used with RPL 3 */
#define RT_SEL_TSS      0x28    /* 16-byte descriptor */
#define RT_SEL_KCODE32  0x38    /* 32-bit kernel code (AP start-up) */

#define RT_MAX_CPUS     64
#define RT_AP_STACK     8192
#define RT_PD_PAGES     64      /* 2 MiB-page directories: RAM up to 64 GiB without 1 GiB pages */
#define RT_TRAMPOLINE   0x90000 /* AP real-mode entry (tern leaves 0x90000-0x9efff to the guest) */
#define RT_IRQ_FIRST    0x40    /* rt_set_irq() vectors: RT_IRQ_FIRST .. RT_IRQ_FIRST+15 */
#define RT_IRQ_COUNT    16
#define RT_SPURIOUS     0xff    /* LAPIC spurious-interrupt vector */

#ifndef __ASSEMBLER__

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define PAGE_SIZE 4096ull
#define RT_RESERVED_TOP (16 * MiB)

/* Exit status written to the test-exit port. */
enum {
	RT_EXIT_OK = 0,
	RT_EXIT_BAD = 1,        /* the workload found a fault */
	RT_EXIT_EXCEPTION = 3,  /* unexpected CPU exception */
	RT_EXIT_SETUP = 4,      /* bad boot info or command line */
};

#define COM1_PORT 0x3f8
#define EXIT_PORT 0x501

/* ---- guest hooks ---- */
int main(void);                         /* CPL3; its return value is the exit status */
void guest_kinit(void);                 /* optional, CPL0, boot CPU, before main() */
void guest_ap_main(unsigned apic_id);   /* optional, CPL0, each AP; the AP halts after */

/* Set by guest_kinit() to run main() with interrupts enabled. */
extern bool rt_user_irqs;

/* ---- console (COM1) and exit ---- */
void rt_putc(char c);
void rt_puts(const char *s);
void rt_putu64(u64 v);
void rt_puthex(u64 v);
/* %s %c %d %u %x %p, l/ll modifiers, '0' flag and width. One call = one
 * uninterrupted piece of output, even with several CPUs printing. */
void rt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void rt_exit(int status);
/* Print "<msg>" and exit with RT_EXIT_SETUP. */
__attribute__((noreturn, format(printf, 1, 2))) void rt_fatal(const char *fmt, ...);

/* ---- command line: space-separated key=value ---- */
extern const char *rt_cmdline;
/* The value of key (up to the next space), or NULL if absent. */
const char *rt_arg_str(const char *key);
/* Whether the value of key is exactly word. */
bool rt_arg_is(const char *key, const char *word);
/* key as a number: decimal or 0x hex, optional binary suffix K/M/G/T.
 * Absent: def. Malformed: rt_fatal(). */
u64 rt_arg(const char *key, u64 def);

/* ---- RAM (type-1 entries of the PVH memory map, sorted, merged) ---- */
struct rt_range {
	u64 base, size;
};
extern struct rt_range rt_ram[];
extern unsigned rt_nram;
u64 rt_ram_total(void);
/* Page-aligned parts of RAM at or above floor, in address order; returns
 * how many ranges were stored in out[max]. */
unsigned rt_ram_above(u64 floor, struct rt_range *out, unsigned max);

/* The fill pattern of memcheck and dirty: a 64-bit mix of the address. */
static inline u64 rt_pattern(u64 addr, u64 seed)
{
	u64 x = (addr ^ seed) * 0x9e3779b97f4a7c15ull;
	return x ^ (x >> 29);
}

/* Fill [base, base+size) with rt_pattern() of each 8-byte word's address;
 * check it, returning the address of the first wrong word or 0. */
void rt_fill_pattern(u64 base, u64 size, u64 seed);
u64 rt_check_pattern(u64 base, u64 size, u64 seed);

/* ---- CPU helpers ---- */
static inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (u64)hi << 32 | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

static inline void cpuid(u32 leaf, u32 sub, u32 r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
			 : "a"(leaf), "c"(sub));
}

static inline unsigned rt_cpl(void)
{
	u16 cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	return cs & 3;
}

/* APIC id of the running CPU (CPUID leaf 1). */
unsigned rt_apic_id(void);
/* TSC rate in kHz: from CPUID when the CPU says, else assumed 3 GHz. Only
 * used for time-outs, which are generous. */
u64 rt_tsc_khz(void);
static inline u64 rt_ms_to_tsc(u64 ms)
{
	return ms * rt_tsc_khz();
}

/* ---- local APIC (xAPIC MMIO), CPL0 ---- */
#define LAPIC_BASE      0xfee00000ul
#define LAPIC_ID        0x020
#define LAPIC_EOI       0x0b0
#define LAPIC_SVR       0x0f0
#define LAPIC_ICR_LO    0x300
#define LAPIC_ICR_HI    0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_ICR 0x380
#define LAPIC_TIMER_CCR 0x390
#define LAPIC_TIMER_DCR 0x3e0

static inline u32 lapic_read(u32 reg)
{
	return *(volatile u32 *)(LAPIC_BASE + reg);
}

static inline void lapic_write(u32 reg, u32 v)
{
	*(volatile u32 *)(LAPIC_BASE + reg) = v;
}

/* Software-enable the LAPIC (spurious vector RT_SPURIOUS). */
void rt_lapic_enable(void);
/* Route vector (RT_IRQ_FIRST..+15) to fn, run at CPL0 with interrupts off;
 * the runtime sends the LAPIC EOI after fn returns. */
void rt_set_irq(unsigned vector, void (*fn)(void));
/* Start every other CPU (INIT-SIPI-SIPI to all-but-self); each runs
 * guest_ap_main() at CPL0. Call from guest_kinit(). */
void rt_start_aps(void);

/* ---- spin lock (xchg based) ---- */
static inline void rt_lock(volatile int *l)
{
	while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
		cpu_relax();
}

static inline void rt_unlock(volatile int *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

/* ---- freestanding libc bits (gcc may emit calls to these) ---- */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif /* __ASSEMBLER__ */
#endif

/* Runtime for the test guests: boot info, paging above 4 GiB, GDT/TSS/IDT,
 * console, command line, exit, LAPIC and SMP helpers. See rt.h. */
#include "rt.h"

/* struct hvm_start_info, version 1 (Xen public/arch-x86/hvm/start_info.h). */
#define HVM_START_MAGIC 0x336ec578u
struct hvm_start_info {
	u32 magic;
	u32 version;
	u32 flags;
	u32 nr_modules;
	u64 modlist_paddr;
	u64 cmdline_paddr;
	u64 rsdp_paddr;
	u64 memmap_paddr;
	u32 memmap_entries;
	u32 reserved;
};

struct hvm_memmap_entry {
	u64 addr;
	u64 size;
	u32 type;
	u32 reserved;
};

#define MAX_RAM_RANGES 64
#define CMDLINE_MAX 1024

/* From entry.S. */
extern u32 rt_start_info_pa, rt_have_1g;
extern u64 rt_pml4[512], rt_pdpt[512], rt_pd[RT_PD_PAGES][512];
extern u64 rt_gdt[];
extern char rt_kstack_top[], rt_exc_stubs[], rt_irq_stubs[], rt_spurious_stub[];
extern char rt_tramp_start[], rt_tramp_end[];
void rt_enter_user(void (*rip)(void), u64 rsp, u64 rflags);

__attribute__((weak)) void guest_kinit(void);
__attribute__((weak)) void guest_ap_main(unsigned apic_id);

bool rt_user_irqs;
const char *rt_cmdline = "";
struct rt_range rt_ram[MAX_RAM_RANGES];
unsigned rt_nram;

static char cmdline_buf[CMDLINE_MAX];
static volatile int console_lock;

/* ---- libc bits ---- */

void *memcpy(void *dst, const void *src, size_t n)
{
	void *d = dst;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;
	if (d <= s || d >= s + n)
		return memcpy(dst, src, n);
	while (n--)
		d[n] = s[n];
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	void *d = dst;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] - y[i];
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

/* ---- console and exit ---- */

static void uart_putc(char c)
{
	/* Wait for THR empty (LSR bit 5), bounded so a missing UART can't hang us. */
	for (unsigned i = 0; i < 100000 && !(inb(COM1_PORT + 5) & 0x20); i++)
		cpu_relax();
	outb(COM1_PORT, (u8)c);
}

static void uart_write(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		uart_putc(s[i]);
}

void rt_putc(char c)
{
	rt_lock(&console_lock);
	uart_putc(c);
	rt_unlock(&console_lock);
}

void rt_puts(const char *s)
{
	rt_lock(&console_lock);
	uart_write(s, strlen(s));
	rt_unlock(&console_lock);
}

void rt_putu64(u64 v)
{
	rt_printf("%lu", (unsigned long)v);
}

void rt_puthex(u64 v)
{
	rt_printf("0x%lx", (unsigned long)v);
}

struct outbuf {
	char buf[128];
	size_t len;
};

static void out_c(struct outbuf *o, char c)
{
	if (o->len == sizeof(o->buf)) {
		uart_write(o->buf, o->len);
		o->len = 0;
	}
	o->buf[o->len++] = c;
}

static void out_num(struct outbuf *o, u64 v, unsigned base, bool neg, unsigned width, char pad)
{
	char tmp[24];
	unsigned n = 0;
	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (neg)
		tmp[n++] = '-';
	while (width > n) {
		out_c(o, pad);
		width--;
	}
	while (n)
		out_c(o, tmp[--n]);
}

static void vformat(struct outbuf *o, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			out_c(o, *fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		unsigned width = 0, longs = 0;
		if (*fmt == '0')
			pad = '0';
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (unsigned)(*fmt++ - '0');
		while (*fmt == 'l') {
			longs++;
			fmt++;
		}
		switch (*fmt) {
		case 'd': {
			long long v = longs ? va_arg(ap, long long) : va_arg(ap, int);
			out_num(o, v < 0 ? -(u64)v : (u64)v, 10, v < 0, width, pad);
			break;
		}
		case 'u':
		case 'x': {
			u64 v = longs ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned);
			out_num(o, v, *fmt == 'u' ? 10 : 16, false, width, pad);
			break;
		}
		case 'p':
			out_c(o, '0');
			out_c(o, 'x');
			out_num(o, (uintptr_t)va_arg(ap, void *), 16, false, width, pad);
			break;
		case 's':
			for (const char *s = va_arg(ap, const char *); *s; s++)
				out_c(o, *s);
			break;
		case 'c':
			out_c(o, (char)va_arg(ap, int));
			break;
		case '%':
			out_c(o, '%');
			break;
		default:
			return;
		}
	}
}

static void vprint(bool locked, const char *fmt, va_list ap)
{
	struct outbuf o;
	o.len = 0;
	if (locked)
		rt_lock(&console_lock);
	vformat(&o, fmt, ap);
	uart_write(o.buf, o.len);
	if (locked)
		rt_unlock(&console_lock);
}

void rt_printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprint(true, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 1, 2))) static void print_unlocked(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprint(false, fmt, ap);
	va_end(ap);
}

void rt_exit(int status)
{
	outb(EXIT_PORT, (u8)status);
	/* Fallback if the port does nothing: stop here. */
	if (rt_cpl() == 0)
		for (;;)
			__asm__ volatile("cli; hlt");
	for (;;)
		cpu_relax();
}

void rt_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprint(true, fmt, ap);
	va_end(ap);
	rt_exit(RT_EXIT_SETUP);
}

/* ---- command line ---- */

const char *rt_arg_str(const char *key)
{
	size_t kl = strlen(key);
	const char *p = rt_cmdline;
	while (*p) {
		while (*p == ' ')
			p++;
		if (!memcmp(p, key, kl) && p[kl] == '=')
			return p + kl + 1;
		while (*p && *p != ' ')
			p++;
	}
	return NULL;
}

bool rt_arg_is(const char *key, const char *word)
{
	const char *v = rt_arg_str(key);
	if (!v)
		return false;
	while (*word && *v == *word) {
		v++;
		word++;
	}
	return !*word && (!*v || *v == ' ');
}

u64 rt_arg(const char *key, u64 def)
{
	const char *p = rt_arg_str(key);
	if (!p)
		return def;
	const char *start = p;
	u64 v = 0, base = 10;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	unsigned digits = 0;
	for (;; p++, digits++) {
		unsigned d;
		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A' + 10);
		else
			break;
		if (v > (~0ull - d) / base)
			goto bad;
		v = v * base + d;
	}
	if (!digits)
		goto bad;
	unsigned shift = 0;
	switch (*p) {
	case 'k': case 'K': shift = 10; p++; break;
	case 'm': case 'M': shift = 20; p++; break;
	case 'g': case 'G': shift = 30; p++; break;
	case 't': case 'T': shift = 40; p++; break;
	}
	if ((*p && *p != ' ') || (shift && v > (~0ull >> shift)))
		goto bad;
	return v << shift;
bad:;
	char tok[64];
	size_t n = 0;
	while (n < sizeof(tok) - 1 && start[n] && start[n] != ' ') {
		tok[n] = start[n];
		n++;
	}
	tok[n] = 0;
	rt_fatal("rt: bad value for %s: '%s'\n", key, tok);
}

/* ---- RAM ---- */

static void add_ram(u64 base, u64 size)
{
	if (!size || rt_nram == MAX_RAM_RANGES)
		return;
	unsigned i = rt_nram++;
	while (i && rt_ram[i - 1].base > base) {
		rt_ram[i] = rt_ram[i - 1];
		i--;
	}
	rt_ram[i] = (struct rt_range){ base, size };
}

static void merge_ram(void)
{
	unsigned n = 0;
	for (unsigned i = 0; i < rt_nram; i++) {
		if (n && rt_ram[n - 1].base + rt_ram[n - 1].size >= rt_ram[i].base) {
			u64 end = rt_ram[i].base + rt_ram[i].size;
			if (end > rt_ram[n - 1].base + rt_ram[n - 1].size)
				rt_ram[n - 1].size = end - rt_ram[n - 1].base;
		} else {
			rt_ram[n++] = rt_ram[i];
		}
	}
	rt_nram = n;
}

u64 rt_ram_total(void)
{
	u64 t = 0;
	for (unsigned i = 0; i < rt_nram; i++)
		t += rt_ram[i].size;
	return t;
}

unsigned rt_ram_above(u64 floor, struct rt_range *out, unsigned max)
{
	unsigned n = 0;
	for (unsigned i = 0; i < rt_nram && n < max; i++) {
		u64 b = rt_ram[i].base, e = b + rt_ram[i].size;
		if (b < floor)
			b = floor;
		b = (b + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
		e &= ~(PAGE_SIZE - 1);
		if (e > b)
			out[n++] = (struct rt_range){ b, e - b };
	}
	return n;
}

void rt_fill_pattern(u64 base, u64 size, u64 seed)
{
	u64 *p = (u64 *)(uintptr_t)base, n = size / 8;
	for (u64 i = 0; i < n; i++)
		p[i] = rt_pattern(base + i * 8, seed);
}

u64 rt_check_pattern(u64 base, u64 size, u64 seed)
{
	const u64 *p = (const u64 *)(uintptr_t)base, n = size / 8;
	for (u64 i = 0; i < n; i++)
		if (p[i] != rt_pattern(base + i * 8, seed))
			return base + i * 8;
	return 0;
}

/* Map RAM above the 4 GiB entry.S mapped, then keep only what is mapped. */
static void map_ram(void)
{
	u64 top = 0;
	for (unsigned i = 0; i < rt_nram; i++)
		if (rt_ram[i].base + rt_ram[i].size > top)
			top = rt_ram[i].base + rt_ram[i].size;
	u64 gib = (top + GiB - 1) / GiB;
	u64 max_gib = rt_have_1g ? 512 : RT_PD_PAGES;
	if (gib > max_gib)
		gib = max_gib;
	for (u64 g = 4; g < gib; g++) {
		if (rt_have_1g) {
			rt_pdpt[g] = g << 30 | 0x87;
		} else {
			for (u64 j = 0; j < 512; j++)
				rt_pd[g][j] = (g << 30) + (j << 21) + 0x87;
			rt_pdpt[g] = (u64)(uintptr_t)rt_pd[g] | 7;
		}
	}
	__asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" ::: "rax", "memory");

	u64 limit = (gib < 4 ? 4 : gib) * GiB;
	unsigned n = 0;
	for (unsigned i = 0; i < rt_nram; i++) {
		struct rt_range r = rt_ram[i];
		if (r.base >= limit)
			continue;
		if (r.base + r.size > limit)
			r.size = limit - r.base;
		rt_ram[n++] = r;
	}
	if (n < rt_nram || top > limit)
		rt_printf("rt: only the first %lu GiB of RAM are mapped\n", (unsigned long)(limit >> 30));
	rt_nram = n;
}

static void read_boot_info(void)
{
	const struct hvm_start_info *si = (const void *)(uintptr_t)rt_start_info_pa;
	if (si->magic != HVM_START_MAGIC)
		rt_fatal("rt: bad hvm_start_info magic 0x%x at 0x%x\n", si->magic, rt_start_info_pa);
	/* Only 0-4 GiB is mapped until map_ram(). */
	if (si->cmdline_paddr >= 4 * GiB || si->memmap_paddr >= 4 * GiB)
		rt_fatal("rt: command line or memory map above 4 GiB\n");
	if (si->cmdline_paddr) {
		const char *s = (const char *)(uintptr_t)si->cmdline_paddr;
		size_t n = 0;
		while (n < CMDLINE_MAX - 1 && s[n]) {
			cmdline_buf[n] = s[n] == '\t' || s[n] == '\n' ? ' ' : s[n];
			n++;
		}
		cmdline_buf[n] = 0;
		rt_cmdline = cmdline_buf;
	}
	if (si->version < 1 || !si->memmap_paddr || !si->memmap_entries)
		rt_fatal("rt: hvm_start_info has no memory map (version %u)\n", si->version);
	const struct hvm_memmap_entry *e = (const void *)(uintptr_t)si->memmap_paddr;
	for (u32 i = 0; i < si->memmap_entries; i++)
		if (e[i].type == 1)
			add_ram(e[i].addr, e[i].size);
	merge_ram();
}

/* ---- descriptor tables and interrupts ---- */

struct tss {
	u32 reserved0;
	u64 rsp[3];
	u64 reserved1;
	u64 ist[7];
	u64 reserved2;
	u16 reserved3;
	u16 iomap_base;
	/* All ports open to CPL3. IOPL=3 should be enough, but the nested
	 * KVM this was developed on loses IOPL on the way to user mode. */
	u8 iomap[8192 + 1];     /* + the 0xff terminator */
} __attribute__((packed));

struct idt_gate {
	u16 off0;
	u16 sel;
	u8 ist;
	u8 type;
	u16 off1;
	u32 off2;
	u32 reserved;
};

static struct tss tss;
static struct idt_gate idt[256] __attribute__((aligned(16)));
static struct {
	u16 pad[3];
	u16 limit;
	u64 base;
} idt_ptr;
static u64 df_stack[512] __attribute__((aligned(16)));
static void (*irq_fn[RT_IRQ_COUNT])(void);

static void set_gate(unsigned vec, const void *fn, unsigned ist)
{
	u64 a = (u64)(uintptr_t)fn;
	idt[vec] = (struct idt_gate){
		.off0 = (u16)a, .sel = RT_SEL_KCODE, .ist = (u8)ist,
		.type = 0x8e, /* present, DPL 0, 64-bit interrupt gate */
		.off1 = (u16)(a >> 16), .off2 = (u32)(a >> 32),
	};
}

static void load_idt(void)
{
	__asm__ volatile("lidt %0" : : "m"(idt_ptr.limit));
}

static void setup_cpu_tables(void)
{
	tss.rsp[0] = (u64)(uintptr_t)rt_kstack_top;
	tss.ist[0] = (u64)(uintptr_t)(df_stack + 512);
	tss.iomap_base = offsetof(struct tss, iomap);
	tss.iomap[8192] = 0xff;
	u64 b = (u64)(uintptr_t)&tss, lim = sizeof(tss) - 1;
	rt_gdt[RT_SEL_TSS / 8] = (lim & 0xffff) | (b & 0xffffff) << 16 | 0x89ull << 40 |
				  ((lim >> 16) & 0xf) << 48 | ((b >> 24) & 0xff) << 56;
	rt_gdt[RT_SEL_TSS / 8 + 1] = b >> 32;
	__asm__ volatile("ltr %w0" : : "r"(RT_SEL_TSS));

	for (unsigned v = 0; v < 32; v++)
		set_gate(v, rt_exc_stubs + 16 * v, v == 8 ? 1 : 0);
	for (unsigned v = 0; v < RT_IRQ_COUNT; v++)
		set_gate(RT_IRQ_FIRST + v, rt_irq_stubs + 16 * v, 0);
	set_gate(RT_SPURIOUS, rt_spurious_stub, 0);
	idt_ptr.limit = sizeof(idt) - 1;
	idt_ptr.base = (u64)(uintptr_t)idt;
	load_idt();
}

struct exc_frame {
	u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
	u64 vector, error, rip, cs, rflags, rsp, ss;
};

void rt_exception(const struct exc_frame *f)
{
	u64 cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	/* No lock: the faulting CPU may hold it. */
	print_unlocked("rt: exception %lu at rip 0x%lx err 0x%lx cs 0x%lx rflags 0x%lx rsp 0x%lx cr2 0x%lx cpu %u\n",
		       (unsigned long)f->vector, (unsigned long)f->rip, (unsigned long)f->error,
		       (unsigned long)f->cs, (unsigned long)f->rflags, (unsigned long)f->rsp,
		       (unsigned long)cr2, rt_apic_id());
	rt_exit(RT_EXIT_EXCEPTION);
}

void rt_irq(u64 vector)
{
	void (*fn)(void) = irq_fn[vector - RT_IRQ_FIRST];
	if (fn)
		fn();
	lapic_write(LAPIC_EOI, 0);
}

void rt_set_irq(unsigned vector, void (*fn)(void))
{
	if (vector < RT_IRQ_FIRST || vector >= RT_IRQ_FIRST + RT_IRQ_COUNT)
		rt_fatal("rt: vector 0x%x outside 0x%x..0x%x\n", vector, RT_IRQ_FIRST,
			 RT_IRQ_FIRST + RT_IRQ_COUNT - 1);
	irq_fn[vector - RT_IRQ_FIRST] = fn;
}

void rt_lapic_enable(void)
{
	lapic_write(LAPIC_SVR, 0x100 | RT_SPURIOUS);
}

/* ---- CPU info, time ---- */

unsigned rt_apic_id(void)
{
	u32 r[4];
	cpuid(1, 0, r);
	return r[1] >> 24;
}

u64 rt_tsc_khz(void)
{
	static u64 khz;
	if (khz)
		return khz;
	u32 r[4];
	cpuid(0x40000000, 0, r);        /* hypervisor timing leaf (KVM, VMware) */
	if (r[0] >= 0x40000010 && r[0] < 0x40000100) {
		cpuid(0x40000010, 0, r);
		khz = r[0];
	}
	if (!khz) {
		cpuid(0, 0, r);
		if (r[0] >= 0x16) {
			cpuid(0x16, 0, r);      /* processor base MHz */
			khz = (u64)(r[0] & 0xffff) * 1000;
		}
	}
	if (!khz)
		khz = 3000000;
	return khz;
}

static void delay_us(u64 us)
{
	u64 end = rdtsc() + us * rt_tsc_khz() / 1000;
	while (rdtsc() < end)
		cpu_relax();
}

/* ---- SMP ---- */

static void icr_send(u32 lo)
{
	lapic_write(LAPIC_ICR_HI, 0);
	lapic_write(LAPIC_ICR_LO, lo);
	for (unsigned i = 0; i < 100000 && (lapic_read(LAPIC_ICR_LO) & (1u << 12)); i++)
		cpu_relax();
}

void rt_start_aps(void)
{
	memcpy((void *)RT_TRAMPOLINE, rt_tramp_start, (size_t)(rt_tramp_end - rt_tramp_start));
	rt_lapic_enable();
	icr_send(0x000c4500);                           /* INIT, all but self */
	delay_us(10000);
	for (int i = 0; i < 2; i++) {
		icr_send(0x000c4600 | RT_TRAMPOLINE >> 12);     /* start-up */
		delay_us(200);
	}
}

void rt_main_ap(void)
{
	load_idt();
	if (guest_ap_main)
		guest_ap_main(rt_apic_id());
}

/* ---- boot CPU ---- */

static u64 user_stack[8192] __attribute__((aligned(16)));

static void user_start(void)
{
	rt_exit(main());
}

void rt_main_bsp(void)
{
	read_boot_info();
	map_ram();
	setup_cpu_tables();
	outb(0x21, 0xff);       /* mask the 8259s; we use the LAPIC only */
	outb(0xa1, 0xff);
	if (guest_kinit)
		guest_kinit();
	u64 rflags = 0x3002 | (rt_user_irqs ? 0x200 : 0);      /* IOPL 3 */
	rt_enter_user(user_start, (u64)(uintptr_t)(user_stack + 8192) - 8, rflags);
}

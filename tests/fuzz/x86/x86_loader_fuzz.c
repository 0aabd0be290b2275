/* libFuzzer target for the x86 kernel loaders: every input is handed to the
 * PVH ELF loader and to the bzImage loader as a kernel file. Whatever it
 * holds, they must return an error or load within guest RAM, never crash or
 * touch memory outside it (ASan watches). */
#include <stdint.h>
#include <stdlib.h>

#include "arch/x86/bzimage.h"
#include "arch/x86/elf_pvh.h"
#include "arch/x86/layout.h"

static struct guest_mem mem;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct terr err = { 0 };

	(void)argc;
	(void)argv;
	/* 32 MiB: room for a kernel at 16 MiB (Linux's pref_address) */
	if (guest_mem_create(&mem, MIB(32), &err) < 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct terr err = { 0 };
	struct pvh_image img;
	struct bzimage_info info;

	if (elf_pvh_load_buf(&mem, data, size, "fuzz", &img, &err) == 0) {
		if (img.start < LAYOUT_HIMEM_START || img.end > mem.size)
			abort();
		pvh_start_info_write(&mem, "console=ttyS0", 0, 0, 0, &err);
	}
	terr_clear(&err);
	if (bzimage_load_buf(&mem, data, size, "fuzz", &info, &err) == 0) {
		if (info.load_addr < LAYOUT_HIMEM_START || info.kernel_end > mem.size)
			abort();
		bzimage_zero_page_finish(&mem, &info, "console=ttyS0", 0, 0, 0, &err);
	}
	return 0;
}

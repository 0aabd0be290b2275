/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the qcow2 opener and reader. The input is the image
 * file; it is opened read-only without backing files, read at a few
 * offsets, mapped with block status and checked. Nothing may crash. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vdisk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("img", 0);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	struct vdisk *d;
	struct vdisk_open_opts o = { .format = "qcow2",
	                             .flags = VDISK_OPEN_NO_BACKING | VDISK_OPEN_NO_LOCK,
	                             .l2_cache_bytes = 65536 };
	struct vdisk_error e;
	if (vdisk_open(&d, path, &o, &e) == 0) {
		uint64_t sz = vdisk_size(d);
		static uint8_t buf[1 << 16];
		uint64_t offs[] = { 0, 512, 65536, sz / 2, sz > 4096 ? sz - 4096 : 0 };
		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
			uint64_t n = sz - offs[i] < sizeof(buf) ? sz - offs[i] : sizeof(buf);
			if (offs[i] < sz)
				vdisk_pread(d, buf, n, offs[i]);
		}
		uint64_t off = 0;
		for (int i = 0; i < 64 && off < sz; i++) {
			struct vdisk_extent x;
			if (vdisk_block_status(d, off, sz - off, &x) < 0 || !x.length)
				break;
			off += x.length;
		}
		struct vdisk_check_result r = { 0 };
		if (sz < (1ull << 32))
			vdisk_check(d, &r, 0);
		struct vdisk_info in;
		vdisk_info(d, &in);
		vdisk_close(d);
	}
	close(fd);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/* libFuzzer target: an image format's opener, reader and writer; the
 * format is FUZZ_FORMAT, set by meson (vdi, vpc). The input is
 * the image file; it is opened without parents, read at a few offsets,
 * mapped with block status and checked; then opened read-write, written
 * (allocating), zeroed, discarded and flushed, and read again. Nothing may
 * crash, leak or hang. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vdisk.h"

#ifndef FUZZ_FORMAT
#error "build with -DFUZZ_FORMAT=\"vdi\" (or another vdisk format name)"
#endif

static void exercise(struct vdisk *d, bool rw)
{
	static uint8_t buf[1 << 16];
	uint64_t sz = vdisk_size(d);
	uint64_t offs[] = { 0, 512, 65536, 1u << 20, sz / 2, sz > 4096 ? sz - 4096 : 0 };
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		if (offs[i] >= sz)
			continue;
		uint64_t n = sz - offs[i] < sizeof(buf) ? sz - offs[i] : sizeof(buf);
		if (rw) {
			memset(buf, (int)i + 1, n < 4096 ? n : 4096);
			vdisk_pwrite(d, buf, n < 4096 ? n : 4096, offs[i]);
		} else {
			vdisk_pread(d, buf, n, offs[i]);
		}
	}
	if (rw) {
		vdisk_write_zeroes(d, 0, sz < (4u << 20) ? sz : 4u << 20, VDISK_ZERO_MAY_UNMAP);
		vdisk_discard(d, sz / 2, sz - sz / 2);
		vdisk_pwrite(d, buf, sz < 777 ? sz : 777, 0);
		vdisk_flush(d);
	}
	uint64_t off = 0;
	for (int i = 0; i < 64 && off < sz; i++) {
		struct vdisk_extent x;
		if (vdisk_block_status(d, off, sz - off, &x) < 0 || !x.length)
			break;
		off += x.length;
	}
	struct vdisk_check_result r = { 0 };
	vdisk_check(d, &r, 0);
	struct vdisk_info in;
	vdisk_info(d, &in);
}

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
	struct vdisk_open_opts o = { .format = FUZZ_FORMAT,
	                             .flags = VDISK_OPEN_NO_BACKING | VDISK_OPEN_NO_LOCK };
	struct vdisk_error e;
	if (vdisk_open(&d, path, &o, &e) == 0) {
		exercise(d, false);
		vdisk_close(d);
		o.flags |= VDISK_OPEN_RDWR;
		if (vdisk_open(&d, path, &o, &e) == 0) {
			exercise(d, true);
			vdisk_close(d);
			/* what the writer left must open again */
			o.flags &= ~(uint32_t)VDISK_OPEN_RDWR;
			if (vdisk_open(&d, path, &o, &e) < 0) {
				fprintf(stderr, "reopen after writing failed: %s\n", e.msg);
				abort();
			}
			exercise(d, false);
			vdisk_close(d);
		}
	}
	close(fd);
	return 0;
}

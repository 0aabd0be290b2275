/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the vmdk opener, descriptor parser, reader and writer.
 * The input is the image file (a sparse extent with its descriptor, a
 * stream, or a text descriptor whose extents must stay in its folder). It
 * is opened read-only, read at a few offsets, mapped with block status and
 * checked; then opened read-write, written, zeroed and closed (grain and
 * table allocation, write-back, stream finishing). Nothing may crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vdisk.h"

static void exercise_read(struct vdisk *d)
{
	uint64_t sz = vdisk_size(d);
	static uint8_t buf[1 << 17];
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
	vdisk_check(d, &r, 0);
	struct vdisk_info in;
	vdisk_info(d, &in);
}

static void exercise_write(struct vdisk *d)
{
	uint64_t sz = vdisk_size(d);
	static uint8_t buf[65536];
	memset(buf, 0xa5, sizeof(buf));
	uint64_t offs[] = { 0, 4096 + 17, sz / 2, sz > 70000 ? sz - 70000 : 0 };
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		uint64_t n = sz - offs[i] < sizeof(buf) ? sz - offs[i] : sizeof(buf);
		if (offs[i] < sz)
			vdisk_pwrite(d, buf, n, offs[i]);
	}
	if (sz > 131072)
		vdisk_write_zeroes(d, 65536, 65536, 0);
	vdisk_flush(d);
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
	struct vdisk_open_opts o = { .format = "vmdk",
	                             .flags = VDISK_OPEN_NO_LOCK | VDISK_OPEN_NO_BACKING };
	struct vdisk_error e;
	if (vdisk_open(&d, path, &o, &e) == 0) {
		exercise_read(d);
		vdisk_close(d);
		/* the file may grow through allocations; keep them modest */
		o.flags |= VDISK_OPEN_RDWR;
		if (vdisk_open(&d, path, &o, &e) == 0) {
			if (vdisk_size(d) <= (1ull << 40))
				exercise_write(d);
			vdisk_close(d);
		}
	}
	close(fd);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/* Holes in the host file under an allocated range (used by the block
 * status of formats whose data sits at known offsets: vdi, vpc). */
#ifndef VDISK_VD_HOLE_H
#define VDISK_VD_HOLE_H

#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

/* How much of [host, host+len) is data (*hole false) or a hole (*hole
 * true), from its start. Without SEEK_DATA support: all data. */
static inline uint64_t vd_host_run(int fd, uint64_t host, uint64_t len, bool *hole)
{
	*hole = false;
	off_t data = lseek(fd, (off_t)host, SEEK_DATA);
	if (data < 0) {
		if (errno == ENXIO) { /* a hole up to the end of the file */
			*hole = true;
			return len;
		}
		return len;
	}
	if ((uint64_t)data > host) {
		*hole = true;
		return (uint64_t)data - host < len ? (uint64_t)data - host : len;
	}
	off_t h = lseek(fd, (off_t)host, SEEK_HOLE);
	if (h > (off_t)host && (uint64_t)h - host < len)
		return (uint64_t)h - host;
	return len;
}

#endif

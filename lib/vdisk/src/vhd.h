/* SPDX-License-Identifier: MIT */
/*
 * VHD (Virtual PC / Hyper-V "vpc") shared definitions.
 *
 * Every VHD ends with a 512-byte big-endian footer ("conectix"): disk
 * type (2 fixed, 3 dynamic, 4 differencing), sizes, CHS geometry, creator,
 * unique id and a ones'-complement checksum. A fixed disk is the raw data
 * followed by the footer. Dynamic and differencing disks start with a copy
 * of the footer, then a 1024-byte dynamic header ("cxsparse": BAT offset,
 * entry count, block size, the parent's id, name and locators), the Block
 * Allocation Table of 32-bit sector offsets (0xffffffff: unallocated), and
 * blocks, each a sector bitmap (bit set: the sector is in this file; clear:
 * zero, or the parent's for a differencing disk) followed by its data.
 */
#ifndef VDISK_VHD_H
#define VDISK_VHD_H

#include "vdisk_int.h"

#define VHD_FOOTER_SIZE   512u
#define VHD_DYNHDR_SIZE   1024u
#define VHD_TYPE_FIXED    2u
#define VHD_TYPE_DYNAMIC  3u
#define VHD_TYPE_DIFF     4u
#define VHD_BAT_FREE      0xffffffffu
#define VHD_DEF_BLOCK     (2u << 20)
#define VHD_MAX_BLOCK     (256u << 20)
#define VHD_EPOCH         946684800u        /* 2000-01-01T00:00:00Z */
#define VHD_MAX_GEOMETRY  (65535ull * 16 * 255)
#define VHD_MAX_SECTORS   0xff000000ull     /* 2040 GiB */
#define VHD_NLOCATORS     8

/* footer field offsets */
enum {
	VF_COOKIE = 0, VF_FEATURES = 8, VF_VERSION = 12, VF_DATA_OFFSET = 16,
	VF_TIMESTAMP = 24, VF_CREATOR_APP = 28, VF_CREATOR_VER = 32,
	VF_CREATOR_OS = 36, VF_ORIG_SIZE = 40, VF_CUR_SIZE = 48, VF_CYLS = 56,
	VF_HEADS = 58, VF_SECS = 59, VF_TYPE = 60, VF_CHECKSUM = 64, VF_UUID = 68,
	VF_SAVED = 84,
};
/* dynamic header field offsets */
enum {
	VH_COOKIE = 0, VH_DATA_OFFSET = 8, VH_TABLE_OFFSET = 16, VH_VERSION = 24,
	VH_MAX_ENTRIES = 28, VH_BLOCK_SIZE = 32, VH_CHECKSUM = 36,
	VH_PARENT_UUID = 40, VH_PARENT_TS = 56, VH_PARENT_NAME = 64,
	VH_LOCATORS = 576, VH_LOCATOR_SIZE = 24,
};

struct vhd {
	uint32_t type;
	uint8_t footer[VHD_FOOTER_SIZE];
	uint8_t dynhdr[VHD_DYNHDR_SIZE];
	/* dynamic and differencing */
	uint64_t bat_off;
	uint32_t nentries, block_size, bitmap_size;
	uint32_t *bat;            /* host order, accessed atomically */
	pthread_mutex_t alloc;    /* next_free and the footer at the end */
	uint64_t next_free;       /* where the next block (and the footer) goes */
	uint64_t file_end_at_open; /* blocks placed below it are zeroed first */
	bool footer_dirty;
	bool size_from_chs;       /* how the disk size was taken */
	char parent_name[1024];   /* the locator text that found the parent */
	struct vd_wb wb;          /* write-behind of sequential data writes */
};

static inline struct vhd *VHD(struct vdisk *d) { return d->priv; }

/* vhd_meta.c: checksums, geometry, the size rules, parent names */
uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off);
void vhd_geometry(uint64_t sectors, uint16_t *cyls, uint8_t *heads, uint8_t *secs);
/* The disk size from a footer, the way the creator's software reads it;
 * *from_chs tells whether the CHS geometry decided. */
uint64_t vhd_footer_size(const uint8_t *footer, bool *from_chs);
/* Find and open the parent of a differencing disk (locators tried in
 * order W2ru, W2ku, Mac X, then the parent's name beside the image). */
int vhd_open_parent(struct vdisk *d, const struct vdisk_open_opts *o);
/* Append utf-8 s as UTF-16 (big-endian if be) into out (cap bytes); returns bytes. */
size_t vhd_utf16(const char *s, uint8_t *out, size_t cap, bool be);

/* vhd_create.c */
int vhd_create(const char *path, const struct vdisk_create_opts *o, struct vdisk_error *err);
void vhd_uuid(uint8_t *u);

#endif

/* SPDX-License-Identifier: MIT */
/* vdisk_io: drive the vdisk library from shell tests.
 *   vdisk_io FMT IMG [OP...]    OPs applied in order:
 *     w:OFF:LEN:SEED   write a pattern      z:OFF:LEN   write zeroes
 *     d:OFF:LEN        discard              c:OFF:SEED  compressed cluster write
 *     f                flush
 *     R:N:SEED         N random writes/zeroes (≤ 256 KiB each)
 *     S:NAME           create an internal snapshot    A:NAME  apply   D:NAME  delete
 *     V:NAME:FILE      create a snapshot whose VM state is FILE's content
 *     X:NAME:FILE      write a snapshot's VM state to FILE
 *   vdisk_io crash FMT IMG LOG SLOT   random writes to distinct slots of SLOT
 *     bytes forever; after each flush append the flushed slots to LOG.
 *   vdisk_io verify FMT IMG LOG SLOT  every slot in LOG must read back.
 * Writes the same operations to IMG.ref (raw) unless the env NOREF is set. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk.h"

static void fill(uint8_t *b, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 0; i < n; i++) {
		if (!(i & 7)) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
		b[i] = (uint8_t)(x >> ((i & 7) * 8));
	}
}

static int die(struct vdisk *d, const char *what)
{
	char m[VDISK_ERRMSG_MAX];
	fprintf(stderr, "vdisk_io: %s: %s\n", what, d ? vdisk_errmsg(d, m, sizeof(m)) : "");
	exit(1);
}

static struct vdisk *op(const char *fmt, const char *img, uint32_t fl)
{
	struct vdisk *d;
	struct vdisk_open_opts o = { .format = fmt, .flags = fl };
	struct vdisk_error e;
	if (vdisk_open(&d, img, &o, &e) < 0) {
		fprintf(stderr, "vdisk_io: open %s: %s\n", img, e.msg);
		exit(1);
	}
	return d;
}

static int crash(const char *fmt, const char *img, const char *log, uint64_t slot)
{
	struct vdisk *d = op(fmt, img, VDISK_OPEN_RDWR);
	int lf = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	uint64_t nslots = vdisk_size(d) / slot, pending[64], np = 0;
	uint8_t *buf = malloc(slot);
	uint64_t x = (uint64_t)getpid();
	uint8_t *used = calloc(nslots, 1);
	for (uint64_t i = 0;; i++) {
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		uint64_t s = x % nslots;
		if (used[s])
			continue;
		used[s] = 1;
		fill(buf, slot, s + 1);
		if (vdisk_pwrite(d, buf, slot, s * slot) < 0)
			die(d, "write");
		pending[np++] = s;
		if (np == 64 || (x >> 40) % 7 == 0) {
			if (vdisk_flush(d) < 0)
				die(d, "flush");
			char line[64];
			for (uint64_t k = 0; k < np; k++) {
				int n = snprintf(line, sizeof(line), "%llu\n", (unsigned long long)pending[k]);
				if (write(lf, line, (size_t)n) != n)
					return 1;
			}
			fdatasync(lf);
			np = 0;
		}
		if (i > nslots * 4)
			break;
	}
	vdisk_close(d);
	return 0;
}

static int verify(const char *fmt, const char *img, const char *log, uint64_t slot)
{
	struct vdisk *d = op(fmt, img, 0);
	FILE *f = fopen(log, "r");
	uint8_t *want = malloc(slot), *got = malloc(slot);
	unsigned long long s;
	int bad = 0, n = 0;
	while (f && fscanf(f, "%llu", &s) == 1) {
		fill(want, slot, s + 1);
		if (vdisk_pread(d, got, slot, s * slot) < 0)
			die(d, "read");
		if (memcmp(want, got, slot)) {
			fprintf(stderr, "vdisk_io: flushed slot %llu lost\n", s);
			bad = 1;
		}
		n++;
	}
	printf("verified %d flushed slots\n", n);
	vdisk_close(d);
	return bad;
}

static void snap_op(struct vdisk *d, char k, const char *name, const char *file)
{
	int r = 0;
	if (k == 'S') {
		r = vdisk_snapshot_create(d, name, NULL, 0);
	} else if (k == 'A') {
		r = vdisk_snapshot_apply(d, name);
	} else if (k == 'D') {
		r = vdisk_snapshot_delete(d, name);
	} else if (k == 'V') {
		FILE *f = fopen(file, "rb");
		if (!f)
			die(NULL, file);
		fseek(f, 0, SEEK_END);
		long n = ftell(f);
		fseek(f, 0, SEEK_SET);
		uint8_t *b = malloc((size_t)n + 1);
		if (fread(b, 1, (size_t)n, f) != (size_t)n)
			die(NULL, file);
		fclose(f);
		r = vdisk_snapshot_create(d, name, b, (uint64_t)n);
		free(b);
	} else if (k == 'X') {
		struct vdisk_snapshot *l;
		unsigned n;
		if (vdisk_snapshot_list(d, &l, &n) < 0)
			die(d, "snapshot list");
		uint64_t len = UINT64_MAX;
		for (unsigned j = 0; j < n; j++)
			if (!strcmp(l[j].name, name) || !strcmp(l[j].id, name))
				len = l[j].vm_state_size;
		free(l);
		if (len == UINT64_MAX)
			die(NULL, "no such snapshot");
		uint8_t *b = malloc(len + 1);
		if (vdisk_snapshot_read_vmstate(d, name, b, len, 0) < 0)
			die(d, "read vmstate");
		FILE *f = fopen(file, "wb");
		if (!f || fwrite(b, 1, len, f) != len)
			die(NULL, file);
		fclose(f);
		free(b);
	}
	if (r < 0)
		die(d, "snapshot");
}

int main(int argc, char **argv)
{
	if (argc >= 6 && !strcmp(argv[1], "crash"))
		return crash(argv[2], argv[3], argv[4], strtoull(argv[5], NULL, 0));
	if (argc >= 6 && !strcmp(argv[1], "verify"))
		return verify(argv[2], argv[3], argv[4], strtoull(argv[5], NULL, 0));
	if (argc < 3) {
		fprintf(stderr, "usage: vdisk_io FMT IMG [OP...]\n");
		return 2;
	}
	struct vdisk *d = op(argv[1], argv[2], VDISK_OPEN_RDWR), *ref = NULL;
	if (!getenv("NOREF")) {
		char rp[4096];
		snprintf(rp, sizeof(rp), "%s.ref", argv[2]);
		ref = op("raw", rp, VDISK_OPEN_RDWR);
	}
	uint64_t size = vdisk_size(d);
	uint8_t *buf = malloc(4u << 20);
	for (int i = 3; i < argc; i++) {
		unsigned long long a = 0, b = 0, c = 0;
		char k = argv[i][0];
		if (strchr("SADVX", k) && argv[i][1] == ':') {
			char name[256], file[4096] = "";
			if (sscanf(argv[i] + 2, "%255[^:]:%4095s", name, file) < 1) {
				fprintf(stderr, "vdisk_io: bad op '%s'\n", argv[i]);
				return 2;
			}
			snap_op(d, k, name, file);
			continue;
		}
		sscanf(argv[i] + 1, ":%lli:%lli:%lli", &a, &b, &c);
		if (k == 'w') {
			fill(buf, b, c);
			if (vdisk_pwrite(d, buf, b, a) < 0 || (ref && vdisk_pwrite(ref, buf, b, a) < 0))
				die(d, "write");
		} else if (k == 'z') {
			if (vdisk_write_zeroes(d, a, b, 0) < 0 || (ref && vdisk_write_zeroes(ref, a, b, 0) < 0))
				die(d, "write_zeroes");
		} else if (k == 'd') {
			if (vdisk_discard(d, a, b) < 0)
				die(d, "discard");
			/* contents unspecified afterwards: mirror what the image reads */
			if (ref) {
				for (uint64_t p = a; p < a + b; p += 4u << 20) {
					uint64_t n = a + b - p < (4u << 20) ? a + b - p : (4u << 20);
					if (vdisk_pread(d, buf, n, p) < 0 || vdisk_pwrite(ref, buf, n, p) < 0)
						die(d, "mirror");
				}
			}
		} else if (k == 'c') {
			uint32_t cs = vdisk_cluster_size(d);
			fill(buf, cs / 2, b);
			memset(buf + cs / 2, (int)(b & 0xff), cs / 2);
			if (vdisk_pwrite_compressed(d, buf, cs, a) < 0 || (ref && vdisk_pwrite(ref, buf, cs, a) < 0))
				die(d, "compressed write");
		} else if (k == 'f') {
			if (vdisk_flush(d) < 0)
				die(d, "flush");
		} else if (k == 'R') {
			uint64_t x = b * 77 + 1;
			for (unsigned long long j = 0; j < a; j++) {
				x ^= x << 13; x ^= x >> 7; x ^= x << 17;
				uint64_t len = 1 + (x >> 8) % (256u << 10), off = (x >> 30) % (size - len);
				int r;
				if ((x & 7) == 0) {
					r = vdisk_write_zeroes(d, off, len, VDISK_ZERO_MAY_UNMAP);
					if (!r && ref)
						r = vdisk_write_zeroes(ref, off, len, 0);
				} else {
					fill(buf, len, x);
					r = vdisk_pwrite(d, buf, len, off);
					if (!r && ref)
						r = vdisk_pwrite(ref, buf, len, off);
				}
				if (r < 0)
					die(d, "random I/O");
			}
		} else {
			fprintf(stderr, "vdisk_io: bad op '%s'\n", argv[i]);
			return 2;
		}
	}
	if (vdisk_close(d) < 0)
		die(NULL, "close");
	if (ref)
		vdisk_close(ref);
	return 0;
}

#include "arch/x86/kernel_unpack.h"
#include "arch/x86/unpack_config.h"   /* TERN_HAVE_LZ4, TERN_HAVE_LZMA (meson) */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>
#if TERN_HAVE_LZ4
#include <lz4.h>
#endif
#if TERN_HAVE_LZMA
#include <lzma.h>
#endif

#define LZ4_LEGACY_MAGIC 0x184c2102u
#define LZ4_LEGACY_BLOCK (8u << 20)   /* uncompressed size of a full block */

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

enum kernel_codec kernel_codec_of(const uint8_t *p, size_t len)
{
	static const struct { const uint8_t *magic; size_t n; enum kernel_codec c; } tab[] = {
		{ (const uint8_t *)"\x1f\x8b", 2, KERNEL_CODEC_GZIP },
		{ (const uint8_t *)"\xfd" "7zXZ\0", 6, KERNEL_CODEC_XZ },
		{ (const uint8_t *)"\x28\xb5\x2f\xfd", 4, KERNEL_CODEC_ZSTD },
		{ (const uint8_t *)"\x02\x21\x4c\x18", 4, KERNEL_CODEC_LZ4 },
		{ (const uint8_t *)"BZh", 3, KERNEL_CODEC_BZIP2 },
		{ (const uint8_t *)"\x5d\x00\x00", 3, KERNEL_CODEC_LZMA },
		{ (const uint8_t *)"\x89LZO", 4, KERNEL_CODEC_LZO },
	};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (len >= tab[i].n && !memcmp(p, tab[i].magic, tab[i].n))
			return tab[i].c;
	return KERNEL_CODEC_UNKNOWN;
}

const char *kernel_codec_name(enum kernel_codec c)
{
	static const char *const names[] = { "gzip", "xz", "zstd", "lz4", "bzip2", "lzma", "lzo",
					     "unknown" };
	return c <= KERNEL_CODEC_UNKNOWN ? names[c] : "unknown";
}

int kernel_codec_supported(enum kernel_codec c)
{
	switch (c) {
	case KERNEL_CODEC_GZIP:
	case KERNEL_CODEC_ZSTD:
		return 1;
	case KERNEL_CODEC_LZ4:
		return TERN_HAVE_LZ4;
	case KERNEL_CODEC_XZ:
		return TERN_HAVE_LZMA;
	default:
		return 0;
	}
}

static int unpack_gzip(const uint8_t *in, size_t len, uint8_t *out, size_t out_len,
		       const char *name, struct terr *err)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
		return terr_set(err, ENOMEM, "kernel %s: cannot start the gzip decoder", name);
	int r = Z_OK;
	size_t in_done = 0, out_done = 0;
	/* zlib counts in uInt: feed at most 1 GiB at a time */
	while (r == Z_OK) {
		size_t in_n = len - in_done, out_n = out_len - out_done;
		z.next_in = (Bytef *)(uintptr_t)(in + in_done);
		z.avail_in = (uInt)(in_n > (1u << 30) ? (1u << 30) : in_n);
		z.next_out = out + out_done;
		z.avail_out = (uInt)(out_n > (1u << 30) ? (1u << 30) : out_n);
		uInt ai = z.avail_in, ao = z.avail_out;
		r = inflate(&z, Z_NO_FLUSH);
		in_done += ai - z.avail_in;
		out_done += ao - z.avail_out;
		if (r == Z_BUF_ERROR && (out_done == out_len || in_done == len))
			break;
		if (r == Z_OK && ai == z.avail_in && ao == z.avail_out)
			break;
	}
	inflateEnd(&z);
	if (r != Z_STREAM_END)
		return terr_set(err, EINVAL, "kernel %s: the gzip-compressed kernel is corrupt "
				"(%s after %zu bytes)", name, z.msg ? z.msg : "truncated", out_done);
	if (out_done != out_len)
		return terr_set(err, EINVAL, "kernel %s: the compressed kernel unpacks to %zu bytes, "
				"its trailer announces %zu", name, out_done, out_len);
	return 0;
}

static int unpack_zstd(const uint8_t *in, size_t len, uint8_t *out, size_t out_len,
		       const char *name, struct terr *err)
{
	size_t n = ZSTD_decompress(out, out_len, in, len);
	if (ZSTD_isError(n))
		return terr_set(err, EINVAL, "kernel %s: the zstd-compressed kernel is corrupt (%s)",
				name, ZSTD_getErrorName(n));
	if (n != out_len)
		return terr_set(err, EINVAL, "kernel %s: the compressed kernel unpacks to %zu bytes, "
				"its trailer announces %zu", name, n, out_len);
	return 0;
}

#if TERN_HAVE_LZ4
/* The lz4 "legacy" format the kernel uses (lz4 -l): the magic, then blocks
 * of (u32 compressed size, data), each unpacking to 8 MiB but the last.
 * Blocks are independent, so they unpack in parallel: the unpack sits on
 * the start-up path, and in the nested harness it is emulated user code
 * (about 0.8 s for Debian's cloud kernel on one thread). */
struct lz4_block {
	size_t in_off;
	uint32_t in_len;
	size_t out_off;
	int got;                     /* bytes produced, or < 0 when corrupt */
};

struct lz4_job {
	const uint8_t *in;
	uint8_t *out;
	size_t out_len;
	struct lz4_block *blocks;
	unsigned nblocks;
	unsigned next;               /* the next block to take (atomic) */
};

static void *lz4_worker(void *arg)
{
	struct lz4_job *j = arg;
	unsigned i;
	while ((i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < j->nblocks) {
		struct lz4_block *b = &j->blocks[i];
		size_t room = b->out_off < j->out_len ? j->out_len - b->out_off : 0;
		if (room > LZ4_LEGACY_BLOCK)
			room = LZ4_LEGACY_BLOCK;
		b->got = LZ4_decompress_safe((const char *)j->in + b->in_off,
					     (char *)j->out + b->out_off, (int)b->in_len, (int)room);
	}
	return NULL;
}

static int unpack_lz4(const uint8_t *in, size_t len, uint8_t *out, size_t out_len,
		      const char *name, struct terr *err)
{
	struct lz4_job j = { .in = in, .out = out, .out_len = out_len };
	unsigned cap = 0;
	size_t pos = 0;
	int r = 0;
	/* index the blocks */
	while (pos < len) {
		if (len - pos < 4) {
			r = terr_set(err, EINVAL, "kernel %s: the lz4-compressed kernel is "
				     "truncated at byte %zu", name, pos);
			goto out;
		}
		uint32_t n = le32(in + pos);
		pos += 4;
		if (n == LZ4_LEGACY_MAGIC)
			continue;
		if (n > len - pos || n > (uint32_t)LZ4_compressBound(LZ4_LEGACY_BLOCK)) {
			r = terr_set(err, EINVAL, "kernel %s: the lz4-compressed kernel is "
				     "corrupt (a block of %u bytes at byte %zu)", name, n, pos - 4);
			goto out;
		}
		if (j.nblocks == cap) {
			cap = cap ? 2 * cap : 16;
			struct lz4_block *nb = realloc(j.blocks, cap * sizeof(*nb));
			if (!nb) {
				r = terr_set(err, ENOMEM, "kernel %s: out of memory", name);
				goto out;
			}
			j.blocks = nb;
		}
		j.blocks[j.nblocks] = (struct lz4_block){
			.in_off = pos, .in_len = n, .out_off = (size_t)j.nblocks * LZ4_LEGACY_BLOCK,
		};
		j.nblocks++;
		pos += n;
	}
	/* this thread and up to 3 more, no more threads than blocks */
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned nthreads = cpus > 1 ? (unsigned)(cpus > 4 ? 4 : cpus) - 1 : 0;
	if (nthreads >= j.nblocks)
		nthreads = j.nblocks ? j.nblocks - 1 : 0;
	pthread_t th[3];
	unsigned started = 0;
	for (; started < nthreads; started++)
		if (pthread_create(&th[started], NULL, lz4_worker, &j))
			break;   /* fewer helpers: this thread does the rest */
	lz4_worker(&j);
	for (unsigned t = 0; t < started; t++)
		pthread_join(th[t], NULL);
	/* every block full but the last, and the sizes add up */
	size_t done = 0;
	for (unsigned i = 0; i < j.nblocks; i++) {
		struct lz4_block *b = &j.blocks[i];
		if (b->got < 0 || (i + 1 < j.nblocks && b->got != (int)LZ4_LEGACY_BLOCK)) {
			r = terr_set(err, EINVAL, "kernel %s: the lz4-compressed kernel is corrupt "
				     "(block at byte %zu)", name, b->in_off - 4);
			goto out;
		}
		done += (size_t)b->got;
	}
	if (done != out_len)
		r = terr_set(err, EINVAL, "kernel %s: the compressed kernel unpacks to %zu bytes, "
			     "its trailer announces %zu", name, done, out_len);
out:
	free(j.blocks);
	return r;
}
#endif

#if TERN_HAVE_LZMA
static int unpack_xz(const uint8_t *in, size_t len, uint8_t *out, size_t out_len,
		     const char *name, struct terr *err)
{
	uint64_t memlimit = 256u << 20;
	size_t in_pos = 0, out_pos = 0;
	lzma_ret r = lzma_stream_buffer_decode(&memlimit, 0, NULL, in, &in_pos, len, out,
					       &out_pos, out_len);
	if (r != LZMA_OK)
		return terr_set(err, EINVAL, "kernel %s: the xz-compressed kernel is corrupt "
				"(liblzma error %d)", name, (int)r);
	if (out_pos != out_len)
		return terr_set(err, EINVAL, "kernel %s: the compressed kernel unpacks to %zu bytes, "
				"its trailer announces %zu", name, out_pos, out_len);
	return 0;
}
#endif

int kernel_payload_size(const uint8_t *p, size_t len, const char *name, size_t *out_len,
			struct terr *err)
{
	enum kernel_codec c = kernel_codec_of(p, len);
	if (!kernel_codec_supported(c))
		return terr_set(err, ENOTSUP, "kernel %s: tern cannot unpack a %s-compressed kernel",
				name, kernel_codec_name(c));
	if (len < 8)
		return terr_set(err, EINVAL, "kernel %s: the compressed kernel is only %zu bytes",
				name, len);
	size_t n = le32(p + len - 4);
	if (n == 0 || n > KERNEL_UNPACK_MAX)
		return terr_set(err, EINVAL, "kernel %s: the compressed kernel announces %zu bytes "
				"unpacked (at most %llu)", name, n, KERNEL_UNPACK_MAX);
	*out_len = n;
	return 0;
}

int kernel_payload_unpack_into(const uint8_t *p, size_t len, const char *name, uint8_t *out,
			       size_t out_len, struct terr *err)
{
	switch (kernel_codec_of(p, len)) {
	case KERNEL_CODEC_GZIP:
		/* the gzip trailer's ISIZE is the size word itself */
		return unpack_gzip(p, len, out, out_len, name, err);
	case KERNEL_CODEC_ZSTD:
		return unpack_zstd(p, len - 4, out, out_len, name, err);
#if TERN_HAVE_LZ4
	case KERNEL_CODEC_LZ4:
		return unpack_lz4(p, len - 4, out, out_len, name, err);
#endif
#if TERN_HAVE_LZMA
	case KERNEL_CODEC_XZ:
		return unpack_xz(p, len - 4, out, out_len, name, err);
#endif
	default:
		return terr_set(err, ENOTSUP, "kernel %s: tern cannot unpack a %s-compressed kernel",
				name, kernel_codec_name(kernel_codec_of(p, len)));
	}
}

int kernel_payload_unpack(const uint8_t *p, size_t len, const char *name, uint8_t **out,
			  size_t *out_len, struct terr *err)
{
	size_t n;
	int r = kernel_payload_size(p, len, name, &n, err);
	if (r < 0)
		return r;
	uint8_t *buf = malloc(n);
	if (!buf)
		return terr_set(err, ENOMEM, "kernel %s: no memory to unpack %zu MiB", name, n >> 20);
	r = kernel_payload_unpack_into(p, len, name, buf, n, err);
	if (r < 0) {
		free(buf);
		return r;
	}
	*out = buf;
	*out_len = n;
	return 0;
}

/* ---- the first bytes only -------------------------------------------- */

static int peek_gzip(const uint8_t *in, size_t len, uint8_t *out, size_t want)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)(uintptr_t)in;
	z.avail_in = (uInt)(len > (1u << 30) ? (1u << 30) : len);
	z.next_out = out;
	z.avail_out = (uInt)want;
	int r;
	do
		r = inflate(&z, Z_SYNC_FLUSH);
	while (r == Z_OK && z.avail_out > 0 && z.avail_in > 0);
	size_t got = want - z.avail_out;
	inflateEnd(&z);
	return got == want ? 0 : -EINVAL;
}

static int peek_zstd(const uint8_t *in, size_t len, uint8_t *out, size_t want)
{
	ZSTD_DStream *d = ZSTD_createDStream();
	if (!d)
		return -ENOMEM;
	ZSTD_inBuffer ib = { in, len, 0 };
	ZSTD_outBuffer ob = { out, want, 0 };
	size_t r = 1;
	while (ob.pos < want && ib.pos < ib.size && !ZSTD_isError(r) && r != 0)
		r = ZSTD_decompressStream(d, &ob, &ib);
	ZSTD_freeDStream(d);
	return ob.pos == want ? 0 : -EINVAL;
}

#if TERN_HAVE_LZ4
static int peek_lz4(const uint8_t *in, size_t len, uint8_t *out, size_t want)
{
	/* the magic, then the first block: (u32 compressed size, data) */
	if (len < 8 || le32(in) != LZ4_LEGACY_MAGIC)
		return -EINVAL;
	uint32_t n = le32(in + 4);
	if (n > len - 8 || want > LZ4_LEGACY_BLOCK)
		return -EINVAL;
	int got = LZ4_decompress_safe_partial((const char *)in + 8, (char *)out, (int)n,
					      (int)want, (int)want);
	return got == (int)want ? 0 : -EINVAL;
}
#endif

#if TERN_HAVE_LZMA
static int peek_xz(const uint8_t *in, size_t len, uint8_t *out, size_t want)
{
	lzma_stream z = LZMA_STREAM_INIT;
	if (lzma_stream_decoder(&z, 256u << 20, 0) != LZMA_OK)
		return -ENOMEM;
	z.next_in = in;
	z.avail_in = len;
	z.next_out = out;
	z.avail_out = want;
	lzma_ret r = LZMA_OK;
	while (r == LZMA_OK && z.avail_out > 0 && z.avail_in > 0)
		r = lzma_code(&z, LZMA_RUN);
	size_t got = want - z.avail_out;
	lzma_end(&z);
	return got == want ? 0 : -EINVAL;
}
#endif

int kernel_payload_peek(const uint8_t *p, size_t len, const char *name, uint8_t *out,
			size_t want, struct terr *err)
{
	size_t n;
	int r = kernel_payload_size(p, len, name, &n, err);
	if (r < 0)
		return r;
	if (want > n)
		want = n;
	switch (kernel_codec_of(p, len)) {
	case KERNEL_CODEC_GZIP:
		r = peek_gzip(p, len, out, want);
		break;
	case KERNEL_CODEC_ZSTD:
		r = peek_zstd(p, len - 4, out, want);
		break;
#if TERN_HAVE_LZ4
	case KERNEL_CODEC_LZ4:
		r = peek_lz4(p, len - 4, out, want);
		break;
#endif
#if TERN_HAVE_LZMA
	case KERNEL_CODEC_XZ:
		r = peek_xz(p, len - 4, out, want);
		break;
#endif
	default:
		r = -ENOTSUP;
	}
	if (r == -ENOMEM)
		return terr_set(err, ENOMEM, "kernel %s: cannot start the %s decoder", name,
				kernel_codec_name(kernel_codec_of(p, len)));
	if (r < 0)
		return terr_set(err, EINVAL, "kernel %s: the %s-compressed kernel is corrupt (its "
				"first %zu bytes do not unpack)", name,
				kernel_codec_name(kernel_codec_of(p, len)), want);
	return 0;
}

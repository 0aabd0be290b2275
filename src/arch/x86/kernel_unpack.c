#include "arch/x86/kernel_unpack.h"
#include "arch/x86/unpack_config.h"   /* TERN_HAVE_LZ4, TERN_HAVE_LZMA (meson) */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
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
 * of (u32 compressed size, data), each unpacking to 8 MiB but the last. */
static int unpack_lz4(const uint8_t *in, size_t len, uint8_t *out, size_t out_len,
		      const char *name, struct terr *err)
{
	size_t pos = 0, done = 0;
	while (pos < len) {
		if (len - pos < 4)
			return terr_set(err, EINVAL, "kernel %s: the lz4-compressed kernel is "
					"truncated at byte %zu", name, pos);
		uint32_t n = le32(in + pos);
		pos += 4;
		if (n == LZ4_LEGACY_MAGIC)
			continue;
		if (n > len - pos || n > (uint32_t)LZ4_compressBound(LZ4_LEGACY_BLOCK))
			return terr_set(err, EINVAL, "kernel %s: the lz4-compressed kernel is "
					"corrupt (a block of %u bytes at byte %zu)", name, n, pos - 4);
		size_t room = out_len - done;
		int got = LZ4_decompress_safe((const char *)in + pos, (char *)out + done, (int)n,
					      room > INT32_MAX ? INT32_MAX : (int)room);
		if (got < 0)
			return terr_set(err, EINVAL, "kernel %s: the lz4-compressed kernel is "
					"corrupt (block at byte %zu)", name, pos - 4);
		done += (size_t)got;
		pos += n;
	}
	if (done != out_len)
		return terr_set(err, EINVAL, "kernel %s: the compressed kernel unpacks to %zu bytes, "
				"its trailer announces %zu", name, done, out_len);
	return 0;
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

int kernel_payload_unpack(const uint8_t *p, size_t len, const char *name, uint8_t **out,
			  size_t *out_len, struct terr *err)
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
	uint8_t *buf = malloc(n);
	if (!buf)
		return terr_set(err, ENOMEM, "kernel %s: no memory to unpack %zu MiB", name, n >> 20);
	int r;
	switch (c) {
	case KERNEL_CODEC_GZIP:
		/* the gzip trailer's ISIZE is the size word itself */
		r = unpack_gzip(p, len, buf, n, name, err);
		break;
	case KERNEL_CODEC_ZSTD:
		r = unpack_zstd(p, len - 4, buf, n, name, err);
		break;
#if TERN_HAVE_LZ4
	case KERNEL_CODEC_LZ4:
		r = unpack_lz4(p, len - 4, buf, n, name, err);
		break;
#endif
#if TERN_HAVE_LZMA
	case KERNEL_CODEC_XZ:
		r = unpack_xz(p, len - 4, buf, n, name, err);
		break;
#endif
	default:
		r = terr_set(err, ENOTSUP, "kernel %s: tern cannot unpack a %s-compressed kernel",
			     name, kernel_codec_name(c));
	}
	if (r < 0) {
		free(buf);
		return r;
	}
	*out = buf;
	*out_len = n;
	return 0;
}

/* SPDX-License-Identifier: MIT */
/* qcow2 compressed clusters: raw deflate (zlib) and zstd. */
#include "qcow2.h"

#include <zlib.h>
#include <zstd.h>

static int inflate_raw(const uint8_t *in, size_t inlen, uint8_t *out, size_t outlen)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -12) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)inlen;
	z.next_out = out;
	z.avail_out = (uInt)outlen;
	int zr = inflate(&z, Z_FINISH);
	int r = 0;
	/* the stream may be followed by padding up to the sector end */
	if (!((zr == Z_STREAM_END || zr == Z_BUF_ERROR || zr == Z_OK) && z.avail_out == 0))
		r = -EIO;
	inflateEnd(&z);
	return r;
}

static int unzstd(const uint8_t *in, size_t inlen, uint8_t *out, size_t outlen)
{
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	if (!dc)
		return -ENOMEM;
	ZSTD_inBuffer ib = { in, inlen, 0 };
	ZSTD_outBuffer ob = { out, outlen, 0 };
	int r = 0;
	while (ob.pos < ob.size) {
		size_t zr = ZSTD_decompressStream(dc, &ob, &ib);
		if (ZSTD_isError(zr)) {
			r = -EIO;
			break;
		}
		if (ib.pos == ib.size && ob.pos < ob.size) {
			r = -EIO;
			break;
		}
		if (zr == 0 && ob.pos < ob.size && ib.pos < ib.size)
			continue; /* next frame */
		if (zr == 0)
			break;
	}
	if (!r && ob.pos != ob.size)
		r = -EIO;
	ZSTD_freeDCtx(dc);
	return r;
}

int qcow2_decompress(struct qcow2 *q, const uint8_t *in, size_t inlen,
                     uint8_t *out, size_t outlen)
{
	return q->compression_type == 1 ? unzstd(in, inlen, out, outlen)
	                                 : inflate_raw(in, inlen, out, outlen);
}

/* Returns the compressed size, or -ENOSPC if it would not fit outcap. */
ssize_t qcow2_compress(struct qcow2 *q, const uint8_t *in, size_t inlen,
                       uint8_t *out, size_t outcap)
{
	if (q->compression_type == 1) {
		size_t n = ZSTD_compress(out, outcap, in, inlen, 1);
		if (ZSTD_isError(n))
			return -ENOSPC;
		return (ssize_t)n;
	}
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)inlen;
	z.next_out = out;
	z.avail_out = (uInt)outcap;
	int zr = deflate(&z, Z_FINISH);
	ssize_t n = zr == Z_STREAM_END ? (ssize_t)(outcap - z.avail_out) : -ENOSPC;
	deflateEnd(&z);
	return n;
}

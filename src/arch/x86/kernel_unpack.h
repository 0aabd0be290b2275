/* The compressed kernel inside a bzImage, unpacked on the host.
 *
 * A bzImage's protected-mode part is the kernel's own decompressor followed
 * by the real kernel: vmlinux (an ELF) and, when the kernel was built with
 * RANDOMIZE_BASE, its relocation table, compressed together with gzip, xz,
 * zstd or lz4 (or bzip2, lzma, lzo). The setup header locates that payload
 * (payload_offset and payload_length, boot protocol 2.08+) and its last four
 * bytes give the uncompressed size.
 *
 * Running the decompressor inside the guest costs the guest seconds where
 * guest kernel code is slow (tests/nested: about 2 s two levels down, most of
 * a Linux boot there); unpacking here and entering vmlinux's own 64-bit entry
 * point as the decompressor does is faster everywhere (bzimage.c). */
#ifndef TERN_ARCH_X86_KERNEL_UNPACK_H
#define TERN_ARCH_X86_KERNEL_UNPACK_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

enum kernel_codec {
	KERNEL_CODEC_GZIP,
	KERNEL_CODEC_XZ,
	KERNEL_CODEC_ZSTD,
	KERNEL_CODEC_LZ4,
	KERNEL_CODEC_BZIP2,
	KERNEL_CODEC_LZMA,
	KERNEL_CODEC_LZO,
	KERNEL_CODEC_UNKNOWN,
};

/* Largest uncompressed kernel tern unpacks (vmlinux + relocations). */
#define KERNEL_UNPACK_MAX (1ULL << 30)

/* The payload's compression, from its magic bytes. */
enum kernel_codec kernel_codec_of(const uint8_t *p, size_t len);
const char *kernel_codec_name(enum kernel_codec c);
/* Whether this build of tern can unpack codec c. */
int kernel_codec_supported(enum kernel_codec c);

/* Unpack the payload p (len bytes, the size trailer included) into a fresh
 * malloc'ed buffer of exactly the announced size: *out, *out_len. -ENOTSUP
 * (message set) when the codec is not one this build unpacks; any other
 * error means the payload is corrupt, and the message says how ("kernel
 * NAME: ..."). */
int kernel_payload_unpack(const uint8_t *p, size_t len, const char *name, uint8_t **out,
			  size_t *out_len, struct terr *err);

/* The size the payload announces (its last four bytes), checked against
 * KERNEL_UNPACK_MAX, for a codec this build unpacks. */
int kernel_payload_size(const uint8_t *p, size_t len, const char *name, size_t *out_len,
			struct terr *err);

/* Unpack into out, which holds exactly kernel_payload_size() bytes (guest
 * RAM, say: the kernel unpacks where it will run, without a copy). */
int kernel_payload_unpack_into(const uint8_t *p, size_t len, const char *name, uint8_t *out,
			       size_t out_len, struct terr *err);

/* Unpack only the first want bytes (fewer if the payload is smaller): the
 * ELF headers, to plan where the rest goes before unpacking it. */
int kernel_payload_peek(const uint8_t *p, size_t len, const char *name, uint8_t *out,
			size_t want, struct terr *err);

#endif

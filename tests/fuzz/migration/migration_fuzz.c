/* libFuzzer target for the migration receiver's parsers: the frame reader
 * (magic, sequence, limits, checksum), HELLO and its compatibility checks,
 * WELCOME, ROUND/DONE fields, REFUSE, and RAM frames written into a fake
 * 8 MiB guest RAM (runs, zero runs, zstd).
 *
 * The input is a list of pieces: u8 kind | u16 type | u16 length | bytes.
 * Kind bit 0 set: the bytes become one well-formed frame of that type (right
 * sequence number and checksum), so mutations reach the message parsers;
 * clear: the bytes go into the stream raw, to exercise the frame checks. */
#include <linux/kvm.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migration/proto.h"
#include "migration/ram.h"
#include "migration/wire.h"

#define RAM_SIZE (8u << 20)

static uint8_t *ram;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ram)
		ram = aligned_alloc(4096, RAM_SIZE);
	static uint8_t stream[1 << 20];
	size_t n = 0;
	uint32_t seq = 0;
	while (size >= 5) {
		unsigned kind = data[0], type = data[1] | data[2] << 8;
		size_t len = (size_t)(data[3] | data[4] << 8);
		data += 5;
		size -= 5;
		if (len > size)
			len = size;
		if (n + MIG_HDR_SIZE + len > sizeof(stream))
			break;
		if (kind & 1) {
			struct iovec iov = { (void *)data, type == MIG_RAM ? mig_ram_summed(data, len) : len };
			mig_hdr_encode(stream + n, type, (uint32_t)len, seq++, &iov, 1);
			n += MIG_HDR_SIZE;
		}
		memcpy(stream + n, data, len);
		n += len;
		data += len;
		size -= len;
	}

	struct guest_mem mem;
	memset(&mem, 0, sizeof(mem));
	memset(ram, 0, RAM_SIZE);
	mem.base = ram;
	guest_mem_layout(&mem, RAM_SIZE);
	struct mig_conn c;
	struct mig_ram_rx rx;
	struct terr err = { 0 };
	mig_conn_init_mem(&c, stream, n, "the fuzzer");
	if (mig_ram_rx_init(&rx, &mem, &err))
		abort();
	/* a host CPUID to check HELLOs against */
	static struct kvm_cpuid2 *host;
	if (!host) {
		host = calloc(1, sizeof(*host) + 2 * sizeof(host->entries[0]));
		host->nent = 2;
		memcpy(&host->entries[0].ebx, "Genu", 4);
		memcpy(&host->entries[0].edx, "ineI", 4);
		memcpy(&host->entries[0].ecx, "ntel", 4);
		host->entries[1].function = 1;
		host->entries[1].ecx = 0xfffffff;
	}
	for (;;) {
		unsigned type;
		uint32_t len;
		terr_clear(&err);
		if (mig_frame_begin(&c, &type, &len, &err))
			break;
		if (type == MIG_RAM) {
			if (mig_ram_rx_frame(&rx, &c, len, &err))
				break;
			continue;
		}
		uint8_t *buf = malloc(len ? len : 1);
		if (mig_frame_read(&c, buf, len, &err) || mig_frame_end(&c, &err)) {
			free(buf);
			break;
		}
		struct mig_hello h;
		uint32_t v;
		char tv[32];
		const char *const names[] = { "round", "dirty_bytes", "paused" };
		uint64_t vals[3] = { 0, 0, 0 };
		struct state_reader r;
		switch (type) {
		case MIG_HELLO:
			if (mig_hello_decode(buf, len, &h, &err) == 0) {
				mig_check_version(&h, &v, &err);
				mig_check_layout(&h, &err);
				mig_check_cpu(&h, host, &err);
				mig_hello_free(&h);
			}
			break;
		case MIG_WELCOME:
			mig_parse_welcome(buf, len, &v, tv, sizeof(tv), &err);
			break;
		case MIG_ROUND:
		case MIG_DONE:
			mig_parse_fields(buf, len, type, names, vals, 3, &err);
			break;
		case MIG_REFUSE:
			if (sr_init(&r, buf, len, "REFUSE", &err) == 0)
				sr_free(&r);
			break;
		}
		free(buf);
	}
	mig_ram_rx_free(&rx);
	mig_conn_free(&c);
	return 0;
}

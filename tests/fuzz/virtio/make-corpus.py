#!/usr/bin/env python3
"""Writes the seed corpus of virtqueue_fuzz (tests/fuzz/virtio/corpus): a few
well-formed queues (direct, indirect, event index) so the fuzzer starts from
inputs that get past the ring checks. Layout: see virtqueue_fuzz.c."""
import os
import struct

REGION = 0x1000
DESC, AVAIL, USED, BUF = 0x100, 0x200, 0x300, 0x400


def header(flags, qsize_log2, max_log2, start=0):
    return struct.pack('<BHBIIIH5x', flags, qsize_log2, max_log2, DESC, AVAIL, USED, start)


def ram(descs, heads, qsize=8, tables=()):
    mem = bytearray(2 * REGION)
    for i, (addr, ln, fl, nx) in enumerate(descs):
        struct.pack_into('<QIHH', mem, DESC + 16 * i, addr, ln, fl, nx)
    for base, entries in tables:
        for i, (addr, ln, fl, nx) in enumerate(entries):
            struct.pack_into('<QIHH', mem, base + 16 * i, addr, ln, fl, nx)
    for i, h in enumerate(heads):
        struct.pack_into('<H', mem, AVAIL + 4 + 2 * (i % qsize), h)
    struct.pack_into('<H', mem, AVAIL + 2, len(heads))
    return bytes(mem)


NEXT, WRITE, INDIRECT = 1, 2, 4
ops = bytes([0, 0, 4, 6, 0, 3, 1, 0, 5, 13, 0, 7, 3, 0])
seeds = {
    'direct': header(0, 3, 3) + ram([(BUF, 16, NEXT, 1), (BUF + 16, 32, WRITE, 0),
                                     (BUF + 64, 8, WRITE, 0)], [0, 2]) + ops,
    'indirect': header(1, 3, 3) + ram([(0x800, 48, INDIRECT, 0)], [0], tables=[
        (0x800, [(BUF, 4, NEXT, 1), (BUF + 8, 4, NEXT, 2), (BUF + 16, 64, WRITE, 0)])]) + ops,
    'event-idx': header(3, 3, 3, 65534) + ram([(BUF, 4, WRITE, 0)] * 8,
                                              [0, 1, 2, 3], 8) + ops,
    'two-regions': header(4 | 8, 3, 3) + ram([(REGION + 0x10, 16, 0, 0)], [0]) + ops,
}
# event-idx starts at 65534: its avail idx must be start + 4
ev = bytearray(seeds['event-idx'])
struct.pack_into('<H', ev, 23 + AVAIL + 2, (65534 + 4) & 0xffff)
for i in range(4):
    struct.pack_into('<H', ev, 23 + AVAIL + 4 + 2 * ((65534 + i) % 8), i)
seeds['event-idx'] = bytes(ev)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)

# virtio_dev_fuzz (corpus-dev): a driver bringing the device up, posting one
# writable buffer, kicking, then configuration accesses, save/load and reset.
ops = bytearray()
ops += bytes([0, 0x03])                                  # status ACK|DRIVER
ops += bytes([1, 1]) + struct.pack('<I', 1)              # features word 1: VERSION_1
ops += bytes([1, 0]) + struct.pack('<I', 1 << 28)        # word 0: INDIRECT_DESC
ops += bytes([0, 0x0b])                                  # FEATURES_OK
ops += bytes([2, 3]) + struct.pack('<HHH', 0x100, 0x200, 0x300)   # queue 0, size 8
ops += bytes([0, 0x0f])                                  # DRIVER_OK
ops += bytes([3, 4, 0x02, 0, 6, 3, 4 | 0x80, 0, 8, 5, 0x02, 0x02, 1, 3, 6, 7])
dev_ram = bytearray(0x800)
struct.pack_into('<QIHH', dev_ram, 0x100, 0x400, 32, WRITE, 0)
struct.pack_into('<H', dev_ram, 0x204, 0)
struct.pack_into('<H', dev_ram, 0x202, 1)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus-dev')
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, 'bring-up'), 'wb') as f:
    f.write(struct.pack('<H', len(ops)) + bytes(ops) + bytes(dev_ram))

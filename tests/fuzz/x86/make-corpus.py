#!/usr/bin/env python3
"""Writes the seed corpus of x86_loader_fuzz: a small PVH ELF64, an ELF32
and a bzImage with a valid 2.15 setup header. Run from this directory."""
import struct

def elf(is64):
    ehsize, phsize = (64, 56) if is64 else (52, 32)
    note_off = ehsize + 2 * phsize
    desc = struct.pack('<Q' if is64 else '<I', 0x1000000)
    note = struct.pack('<III', 4, len(desc), 18) + b'Xen\0' + desc
    data_off, data = 0x100, bytes(range(64))
    ident = b'\x7fELF' + bytes([2 if is64 else 1, 1, 1]) + bytes(9)
    if is64:
        eh = ident + struct.pack('<HHIQQQIHHHHHH', 2, 62, 1, 0x1000000, ehsize, 0, 0,
                                 ehsize, phsize, 2, 0, 0, 0)
        load = struct.pack('<IIQQQQQQ', 1, 5, data_off, 0x1000000, 0x1000000,
                           len(data), 0x2000, 0x1000)
        pnote = struct.pack('<IIQQQQQQ', 4, 4, note_off, 0, 0, len(note), 0, 4)
    else:
        eh = ident + struct.pack('<HHIIIIIHHHHHH', 2, 3, 1, 0x1000000, ehsize, 0, 0,
                                 ehsize, phsize, 2, 0, 0, 0)
        load = struct.pack('<IIIIIIII', 1, data_off, 0x1000000, 0x1000000, len(data),
                           0x2000, 5, 0x1000)
        pnote = struct.pack('<IIIIIIII', 4, note_off, 0, 0, len(note), 0, 4, 4)
    out = bytearray(eh + load + pnote + note)
    out += bytes(data_off - len(out))
    return bytes(out + data)

def bzimage():
    b = bytearray(5 * 512 + 0x400)
    b[0x1f1] = 4
    struct.pack_into('<I', b, 0x1f4, 0x400 // 16)
    struct.pack_into('<H', b, 0x1fe, 0xaa55)
    b[0x200:0x202] = b'\xeb\x6a'
    b[0x202:0x206] = b'HdrS'
    struct.pack_into('<H', b, 0x206, 0x020f)
    b[0x211] = 1
    struct.pack_into('<IIBBHI', b, 0x22c, 0x7fffffff, 0x200000, 1, 21, 0x7f, 2047)
    struct.pack_into('<QI', b, 0x258, 0x1000000, 0x100000)
    return bytes(b)

for name, data in (('elf64.bin', elf(True)), ('elf32.bin', elf(False)),
                   ('bzimage.bin', bzimage())):
    with open('corpus/' + name, 'wb') as f:
        f.write(data)

#include "elf_writer.h"

#include <elf.h>
#include <string.h>

/* Note area: namesz, descsz, type, "Xen\0", value (4 or 8 bytes). */
static size_t put_note(uint8_t *p, uint32_t entry, unsigned descsz)
{
	uint32_t hdr[3] = { 4, descsz, 18 };
	uint64_t v = entry;
	memcpy(p, hdr, 12);
	memcpy(p + 12, "Xen", 4);
	memcpy(p + 16, &v, descsz);
	return 16 + ((descsz + 3) & ~3u);
}

size_t elf_write(const struct elf_spec *s, uint8_t *buf, size_t cap)
{
	unsigned nload = s->nload ? s->nload : 1;
	unsigned descsz = s->descsz ? s->descsz : (s->is32 ? 4 : 8);
	unsigned nph = nload + (s->note == NOTE_PHDR);
	size_t ehsize = s->is32 ? sizeof(Elf32_Ehdr) : sizeof(Elf64_Ehdr);
	size_t phsize = s->is32 ? sizeof(Elf32_Phdr) : sizeof(Elf64_Phdr);
	size_t shsize = s->is32 ? sizeof(Elf32_Shdr) : sizeof(Elf64_Shdr);
	size_t note_off = ehsize + nph * phsize, note_len;
	size_t data_off[2], end = ELFW_DATA_OFF;
	uint8_t note[32];

	note_len = put_note(note, s->entry, descsz);
	for (unsigned i = 0; i < nload; i++) {
		data_off[i] = end;
		end += s->filesz[i];
	}
	size_t sh_off = (end + 7) & ~(size_t)7;
	if (s->note == NOTE_SECTION)
		end = sh_off + 2 * shsize;
	if (end > cap)
		return 0;
	memset(buf, 0, end);
	if (s->note != NOTE_NONE)
		memcpy(buf + note_off, note, note_len);
	for (unsigned i = 0; i < nload; i++)
		memset(buf + data_off[i], (int)((i + 1) * 0x11), s->filesz[i]);

	memcpy(buf, ELFMAG, SELFMAG);
	buf[EI_CLASS] = s->is32 ? ELFCLASS32 : ELFCLASS64;
	buf[EI_DATA] = ELFDATA2LSB;
	buf[EI_VERSION] = EV_CURRENT;
	uint16_t machine = s->machine ? s->machine : (s->is32 ? EM_386 : EM_X86_64);
	if (s->is32) {
		Elf32_Ehdr eh = { .e_type = ET_EXEC, .e_machine = machine, .e_version = EV_CURRENT,
				  .e_entry = s->entry, .e_phoff = (Elf32_Off)ehsize,
				  .e_ehsize = (Elf32_Half)ehsize, .e_phentsize = (Elf32_Half)phsize,
				  .e_phnum = (Elf32_Half)nph };
		if (s->note == NOTE_SECTION) {
			eh.e_shoff = (Elf32_Off)sh_off;
			eh.e_shentsize = (Elf32_Half)shsize;
			eh.e_shnum = 2;
		}
		memcpy(eh.e_ident, buf, EI_NIDENT);
		memcpy(buf, &eh, sizeof(eh));
		for (unsigned i = 0; i < nph; i++) {
			Elf32_Phdr ph;
			if (i < nload)
				ph = (Elf32_Phdr){ PT_LOAD, (Elf32_Off)data_off[i],
						   (Elf32_Addr)s->paddr[i], (Elf32_Addr)s->paddr[i],
						   (Elf32_Word)s->filesz[i], (Elf32_Word)s->memsz[i],
						   PF_R | PF_X, 0x1000 };
			else
				ph = (Elf32_Phdr){ .p_type = PT_NOTE, .p_offset = (Elf32_Off)note_off,
						   .p_filesz = (Elf32_Word)note_len, .p_align = 4 };
			memcpy(buf + ehsize + i * phsize, &ph, sizeof(ph));
		}
		if (s->note == NOTE_SECTION) {
			Elf32_Shdr sh = { .sh_type = SHT_NOTE, .sh_offset = (Elf32_Off)note_off,
					  .sh_size = (Elf32_Word)note_len, .sh_addralign = 4 };
			memcpy(buf + sh_off + shsize, &sh, sizeof(sh));
		}
	} else {
		Elf64_Ehdr eh = { .e_type = ET_EXEC, .e_machine = machine, .e_version = EV_CURRENT,
				  .e_entry = s->entry, .e_phoff = ehsize,
				  .e_ehsize = (Elf64_Half)ehsize, .e_phentsize = (Elf64_Half)phsize,
				  .e_phnum = (Elf64_Half)nph };
		if (s->note == NOTE_SECTION) {
			eh.e_shoff = sh_off;
			eh.e_shentsize = (Elf64_Half)shsize;
			eh.e_shnum = 2;
		}
		memcpy(eh.e_ident, buf, EI_NIDENT);
		memcpy(buf, &eh, sizeof(eh));
		for (unsigned i = 0; i < nph; i++) {
			Elf64_Phdr ph;
			if (i < nload)
				ph = (Elf64_Phdr){ PT_LOAD, PF_R | PF_X, data_off[i], s->paddr[i],
						   s->paddr[i], s->filesz[i], s->memsz[i], 0x1000 };
			else
				ph = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = note_off,
						   .p_filesz = note_len, .p_align = 4 };
			memcpy(buf + ehsize + i * phsize, &ph, sizeof(ph));
		}
		if (s->note == NOTE_SECTION) {
			Elf64_Shdr sh = { .sh_type = SHT_NOTE, .sh_offset = note_off,
					  .sh_size = note_len, .sh_addralign = 4 };
			memcpy(buf + sh_off + shsize, &sh, sizeof(sh));
		}
	}
	return end;
}

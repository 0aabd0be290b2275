/* Helpers shared by the x86 loader tests: guest RAM and scratch files. */
#ifndef TERN_TESTS_X86_TEST_UTIL_H
#define TERN_TESTS_X86_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "core/memory.h"

/* guest_mem_create(size) or fail the test. */
void tu_mem(struct guest_mem *m, uint64_t size);

/* Write buf to a fresh file in a per-process scratch directory; returns its
 * path (static storage per call slot, valid until tu_cleanup). */
const char *tu_file(const char *name, const void *buf, size_t len)
	__attribute__((returns_nonnull));

/* The scratch directory itself (created on first use). */
const char *tu_dir(void);

/* Remove the scratch directory and its files (kept if TERN_TEST_KEEP is set). */
void tu_cleanup(void);

#endif

/* The split-virtqueue walker over a fake guest RAM: normal and indirect
 * chains, every hostile layout the device must survive (each one breaks the
 * queue exactly once, calls the owner back, and touches nothing outside
 * guest RAM), notification suppression with and without event index, index
 * wrap-around, save/load in the middle of a stream, and the dirty tracking
 * of what the device writes (a live migration must send those pages). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fake_mem.h"
#include "virtio/virtqueue.h"

#define QS 8
#define F_INDIRECT (1ull << VIRTIO_F_INDIRECT_DESC)
#define F_EVENT    (1ull << VIRTIO_F_EVENT_IDX)

struct fx {
	struct fake_mem f;
	struct virtqueue vq;
	struct vq_chain c;
	unsigned broken_calls;
};

static void on_broken(void *opaque, struct virtqueue *vq)
{
	struct fx *x = opaque;
	(void)vq;
	x->broken_calls++;
}

static void fx_queue(struct fx *x, uint16_t max)
{
	assert_int_equal(vq_init(&x->vq, &x->f.m, max, "test.0 queue 0", on_broken, x), 0);
	x->vq.desc_gpa = FM_DESC;
	x->vq.avail_gpa = FM_AVAIL;
	x->vq.used_gpa = FM_USED;
}

static int setup_huge(void **ctx, int huge)
{
	struct fx *x = calloc(1, sizeof(*x));
	fm_init(&x->f, huge);
	fx_queue(x, QS);
	vq_chain_init(&x->c);
	*ctx = x;
	return 0;
}

static int setup(void **ctx)
{
	return setup_huge(ctx, 0);
}

static int setup_with_huge(void **ctx)
{
	return setup_huge(ctx, 1);
}

static int teardown(void **ctx)
{
	struct fx *x = *ctx;
	vq_chain_free(&x->c);
	fm_free(&x->f);
	free(x);
	return 0;
}

/* Expect that popping breaks the queue: -EIO, one callback, and later pops
 * and pushes keep failing without further callbacks. */
static void expect_broken_pop(struct fx *x)
{
	unsigned before = x->broken_calls;
	assert_int_equal(vq_pop(&x->vq, &x->c), -EIO);
	assert_true(x->vq.broken);
	assert_false(vq_is_ready(&x->vq));
	assert_int_equal(x->broken_calls, before + 1);
	assert_int_equal(vq_pop(&x->vq, &x->c), -EIO);
	assert_int_equal(vq_push(&x->vq, 0, 0), -EIO);
	assert_false(vq_should_notify(&x->vq));
	assert_int_equal(x->broken_calls, before + 1);
}

static void test_init_sizes(void **ctx)
{
	struct fx *x = *ctx;
	struct virtqueue q;
	assert_int_equal(vq_init(&q, &x->f.m, 0, "q", NULL, NULL), -EINVAL);
	assert_int_equal(vq_init(&q, &x->f.m, 12, "q", NULL, NULL), -EINVAL);
	assert_int_equal(vq_init(&q, &x->f.m, 1, "q", NULL, NULL), 0);
	assert_int_equal(vq_init(&q, &x->f.m, 32768, "q", NULL, NULL), 0);
	assert_int_equal(q.size, 32768);
	assert_int_equal(q.msix_vector, VIRTIO_MSI_NO_VECTOR);
	assert_false(q.enabled);
}

static void test_simple_chain(void **ctx)
{
	struct fx *x = *ctx;
	assert_int_equal(vq_enable(&x->vq, 0), 0);
	assert_true(vq_is_ready(&x->vq));
	assert_false(vq_has_avail(&x->vq));
	assert_int_equal(vq_pop(&x->vq, &x->c), 0);

	memcpy(fm_ptr(&x->f, FM_BUF), "hello", 5);
	memcpy(fm_ptr(&x->f, FM_BUF + 0x100), "world", 5);
	fm_desc(&x->f, FM_DESC, 3, FM_BUF, 5, VIRTQ_DESC_F_NEXT, 5);
	fm_desc(&x->f, FM_DESC, 5, FM_BUF + 0x100, 5, VIRTQ_DESC_F_NEXT, 0);
	fm_desc(&x->f, FM_DESC, 0, FM_BUF + 0x200, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, FM_DESC, 1, FM_BUF + 0x300, 0, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	fm_desc(&x->f, FM_DESC, 2, FM_BUF + 0x400, 16, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 3);
	assert_true(vq_has_avail(&x->vq));

	assert_int_equal(vq_pop(&x->vq, &x->c), 1);
	assert_int_equal(x->c.head, 3);
	assert_int_equal(x->c.nout, 2);
	assert_int_equal(x->c.nin, 2);   /* the zero-length one is dropped */
	assert_int_equal(x->c.out_len, 10);
	assert_int_equal(x->c.in_len, 80);
	assert_ptr_equal(x->c.iov[0].iov_base, fm_ptr(&x->f, FM_BUF));
	assert_ptr_equal(x->c.iov[1].iov_base, fm_ptr(&x->f, FM_BUF + 0x100));
	assert_ptr_equal(x->c.iov[2].iov_base, fm_ptr(&x->f, FM_BUF + 0x200));
	assert_int_equal(x->c.iov[2].iov_len, 64);
	assert_ptr_equal(x->c.iov[3].iov_base, fm_ptr(&x->f, FM_BUF + 0x400));

	char got[16] = { 0 };
	assert_int_equal(vq_chain_copy_from(&x->c, 3, got, 16), 7);
	assert_string_equal(got, "loworld");
	char big[100];
	memset(big, 'x', sizeof(big));
	assert_int_equal(vq_chain_copy_to(&x->c, 60, big, 100), 20);
	assert_int_equal(fm_ptr(&x->f, FM_BUF + 0x200)[63], 'x');
	assert_int_equal(fm_ptr(&x->f, FM_BUF + 0x200)[59], 0);
	assert_int_equal(fm_ptr(&x->f, FM_BUF + 0x400)[15], 'x');

	assert_false(vq_has_avail(&x->vq));
	assert_int_equal(vq_pop(&x->vq, &x->c), 0);
	assert_int_equal(vq_push(&x->vq, 3, 20), 0);
	assert_int_equal(fm_r16(&x->f, FM_USED + 2), 1);
	assert_int_equal(fm_r32(&x->f, FM_USED + 4), 3);
	assert_int_equal(fm_r32(&x->f, FM_USED + 8), 20);
	assert_int_equal(vq_push(&x->vq, QS, 0), -EINVAL);   /* device bug, not fatal */
	assert_false(x->vq.broken);
	assert_int_equal(x->broken_calls, 0);
}

/* Many rounds through the ring: the free-running indices wrap at 65536. */
static void test_index_wrap(void **ctx)
{
	struct fx *x = *ctx;
	fm_w16(&x->f, FM_AVAIL + 2, 65530);
	x->vq.last_avail_idx = 65530;
	x->vq.used_idx = 65530;
	assert_int_equal(vq_enable(&x->vq, 0), 0);
	for (unsigned i = 0; i < 20; i++) {
		uint16_t head = (uint16_t)(i % QS);
		fm_desc(&x->f, FM_DESC, head, FM_BUF + 16 * head, 16, VIRTQ_DESC_F_WRITE, 0);
		fm_offer(&x->f, FM_AVAIL, QS, head);
		assert_int_equal(vq_pop(&x->vq, &x->c), 1);
		assert_int_equal(x->c.head, head);
		assert_int_equal(vq_push(&x->vq, head, i), 0);
		uint16_t slot = (uint16_t)(65530 + i) % QS;
		assert_int_equal(fm_r32(&x->f, FM_USED + 4 + 8 * slot), head);
		assert_int_equal(fm_r32(&x->f, FM_USED + 8 + 8 * slot), i);
	}
	assert_int_equal(fm_r16(&x->f, FM_USED + 2), (uint16_t)(65530 + 20));
	assert_int_equal(x->vq.last_avail_idx, (uint16_t)(65530 + 20));
	/* a full ring (size entries pending) is fine */
	for (unsigned i = 0; i < QS; i++) {
		fm_desc(&x->f, FM_DESC, i, FM_BUF, 1, 0, 0);
		fm_offer(&x->f, FM_AVAIL, QS, (uint16_t)i);
	}
	for (unsigned i = 0; i < QS; i++)
		assert_int_equal(vq_pop(&x->vq, &x->c), 1);
	assert_int_equal(vq_pop(&x->vq, &x->c), 0);
}

static void test_indirect(void **ctx)
{
	struct fx *x = *ctx;
	const uint64_t tbl = 0x8000;
	assert_int_equal(vq_enable(&x->vq, F_INDIRECT), 0);
	fm_desc(&x->f, tbl, 0, FM_BUF, 4, VIRTQ_DESC_F_NEXT, 2);
	fm_desc(&x->f, tbl, 2, FM_BUF + 0x10, 8, VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, tbl, 1, FM_BUF + 0x20, 32, VIRTQ_DESC_F_WRITE, 0);
	/* WRITE on the descriptor naming the table must be ignored */
	fm_desc(&x->f, FM_DESC, 4, tbl, 3 * 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 4);
	assert_int_equal(vq_pop(&x->vq, &x->c), 1);
	assert_int_equal(x->c.head, 4);
	assert_int_equal(x->c.nout, 2);
	assert_int_equal(x->c.nin, 1);
	assert_int_equal(x->c.out_len, 12);
	assert_int_equal(x->c.in_len, 32);
	assert_ptr_equal(x->c.iov[1].iov_base, fm_ptr(&x->f, FM_BUF + 0x10));

	/* direct descriptors followed by one indirect (valid per 2.7.5.3.2),
	 * with a table that is not 16-byte aligned */
	const uint64_t tbl2 = 0x9004;
	fm_desc(&x->f, FM_DESC, 6, FM_BUF + 0x40, 2, VIRTQ_DESC_F_NEXT, 7);
	fm_desc(&x->f, FM_DESC, 7, tbl2, 2 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	fm_desc(&x->f, tbl2, 0, FM_BUF + 0x50, 3, VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, tbl2, 1, FM_BUF + 0x60, 5, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 6);
	assert_int_equal(vq_pop(&x->vq, &x->c), 1);
	assert_int_equal(x->c.nout, 2);
	assert_int_equal(x->c.nin, 1);
	assert_int_equal(x->c.out_len, 5);
	assert_int_equal(x->c.in_len, 5);
	assert_int_equal(x->broken_calls, 0);
}

/* --- hostile guests: each case breaks the queue --- */

static void enable_ok(struct fx *x, uint64_t features)
{
	assert_int_equal(vq_enable(&x->vq, features), 0);
}

static void test_bad_queue_size(void **ctx)
{
	struct fx *x = *ctx;
	x->vq.size = 6;
	assert_int_equal(vq_enable(&x->vq, 0), -EINVAL);
	assert_true(x->vq.broken);
	assert_int_equal(x->broken_calls, 1);
	assert_int_equal(vq_pop(&x->vq, &x->c), -EIO);
	/* reset and try again with too large, then zero */
	vq_reset(&x->vq);
	x->vq.desc_gpa = FM_DESC, x->vq.avail_gpa = FM_AVAIL, x->vq.used_gpa = FM_USED;
	x->vq.size = QS * 2;
	assert_int_equal(vq_enable(&x->vq, 0), -EINVAL);
	vq_reset(&x->vq);
	x->vq.size = 0;
	assert_int_equal(vq_enable(&x->vq, 0), -EINVAL);
	assert_int_equal(x->broken_calls, 3);
	assert_int_equal(x->vq.nviolations, 3);
	/* a smaller power of two is fine */
	vq_reset(&x->vq);
	x->vq.desc_gpa = FM_DESC, x->vq.avail_gpa = FM_AVAIL, x->vq.used_gpa = FM_USED;
	x->vq.size = 2;
	enable_ok(x, 0);
}

static void try_rings(struct fx *x, uint64_t d, uint64_t a, uint64_t u)
{
	vq_reset(&x->vq);
	x->vq.desc_gpa = d, x->vq.avail_gpa = a, x->vq.used_gpa = u;
	unsigned before = x->broken_calls;
	assert_int_equal(vq_enable(&x->vq, 0), -EINVAL);
	assert_true(x->vq.broken);
	assert_int_equal(x->broken_calls, before + 1);
	assert_false(vq_has_avail(&x->vq));
}

static void test_bad_rings(void **ctx)
{
	struct fx *x = *ctx;
	/* misaligned */
	try_rings(x, FM_DESC + 8, FM_AVAIL, FM_USED);
	try_rings(x, FM_DESC, FM_AVAIL + 1, FM_USED);
	try_rings(x, FM_DESC, FM_AVAIL, FM_USED + 2);
	/* across the two regions (adjacent in guest-physical space) */
	try_rings(x, FM_REGION - 64, FM_AVAIL, FM_USED);          /* 128 bytes of table */
	try_rings(x, FM_DESC, FM_REGION - 10, FM_USED);          /* 22 bytes of avail */
	try_rings(x, FM_DESC, FM_AVAIL, FM_REGION - 32);         /* 70 bytes of used */
	/* outside RAM, and wrapping the address space */
	try_rings(x, 0x40000, FM_AVAIL, FM_USED);
	try_rings(x, FM_DESC, 0xfffffffffffffffeull, FM_USED);
	try_rings(x, FM_DESC, FM_AVAIL, 0xfffffffffffffff0ull);
	/* the same rings entirely inside region 1 are fine */
	vq_reset(&x->vq);
	x->vq.desc_gpa = FM_REGION, x->vq.avail_gpa = FM_REGION + 0x1000, x->vq.used_gpa = FM_REGION + 0x2000;
	enable_ok(x, 0);
}

static void test_desc_outside_ram(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_desc(&x->f, FM_DESC, 0, 0x50000, 16, 0, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	expect_broken_pop(x);
}

static void test_desc_straddles_regions(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_desc(&x->f, FM_DESC, 0, FM_BUF, 16, VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, FM_DESC, 1, FM_REGION - 8, 16, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	expect_broken_pop(x);
	assert_int_equal(x->vq.last_avail_idx, 0);
}

static void test_desc_wraps_address(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_desc(&x->f, FM_DESC, 0, 0xfffffffffffff000ull, 0x2000, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	expect_broken_pop(x);
}

static void test_loop_direct(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_desc(&x->f, FM_DESC, 0, FM_BUF, 1, VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, FM_DESC, 1, FM_BUF, 1, VIRTQ_DESC_F_NEXT, 2);
	fm_desc(&x->f, FM_DESC, 2, FM_BUF, 1, VIRTQ_DESC_F_NEXT, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 1);
	expect_broken_pop(x);
}

static void test_loop_self(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_desc(&x->f, FM_DESC, 5, FM_BUF, 0, VIRTQ_DESC_F_NEXT, 5);
	fm_offer(&x->f, FM_AVAIL, QS, 5);
	expect_broken_pop(x);
}

/* Exactly QS descriptors is the longest legal chain. */
static void test_longest_chain(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	for (unsigned i = 0; i < QS; i++)
		fm_desc(&x->f, FM_DESC, i, FM_BUF + i, 1, i + 1 < QS ? VIRTQ_DESC_F_NEXT : 0,
			(uint16_t)(i + 1));
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	assert_int_equal(vq_pop(&x->vq, &x->c), 1);
	assert_int_equal(x->c.nout, QS);
	assert_int_equal(x->c.out_len, QS);
}

static void test_next_out_of_table(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_desc(&x->f, FM_DESC, 0, FM_BUF, 1, VIRTQ_DESC_F_NEXT, QS);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	expect_broken_pop(x);
}

static void test_head_out_of_table(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0xffff);
	expect_broken_pop(x);
}

static void test_avail_idx_jump(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_w16(&x->f, FM_AVAIL + 2, QS + 1);
	expect_broken_pop(x);
}

static void test_avail_idx_backwards(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_desc(&x->f, FM_DESC, 0, FM_BUF, 1, 0, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	assert_int_equal(vq_pop(&x->vq, &x->c), 1);
	fm_w16(&x->f, FM_AVAIL + 2, 0);   /* "unexposes" a buffer: 65535 ahead */
	expect_broken_pop(x);
}

static void test_read_after_write(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_desc(&x->f, FM_DESC, 0, FM_BUF, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, FM_DESC, 1, FM_BUF + 4, 4, VIRTQ_DESC_F_NEXT, 2);
	fm_desc(&x->f, FM_DESC, 2, FM_BUF + 8, 4, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	expect_broken_pop(x);
}

static void test_read_after_zero_len_write(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_desc(&x->f, FM_DESC, 0, FM_BUF, 0, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, FM_DESC, 1, FM_BUF + 4, 4, 0, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	expect_broken_pop(x);
}

static void test_length_overflow(void **ctx)
{
	struct fx *x = *ctx;
	if (!x->f.huge)
		skip();
	enable_ok(x, 0);
	/* each one is inside RAM; together they are 4.5 GiB */
	fm_desc(&x->f, FM_DESC, 0, FM_HUGE_GPA, 0x90000000u, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, FM_DESC, 1, FM_HUGE_GPA, 0x90000000u, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	expect_broken_pop(x);
}

static void test_length_just_fits(void **ctx)
{
	struct fx *x = *ctx;
	if (!x->f.huge)
		skip();
	enable_ok(x, 0);
	fm_desc(&x->f, FM_DESC, 0, FM_HUGE_GPA, 0x80000000u, VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, FM_DESC, 1, FM_HUGE_GPA, 0x7fffffffu, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	assert_int_equal(vq_pop(&x->vq, &x->c), 1);
	assert_int_equal(x->c.out_len, 0x80000000u);
	assert_int_equal(x->c.in_len, 0x7fffffffu);
}

static void put_indirect(struct fx *x, uint64_t tbl, uint32_t len, uint16_t flags)
{
	fm_desc(&x->f, FM_DESC, 0, tbl, len, VIRTQ_DESC_F_INDIRECT | flags, 1);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
}

static void test_indirect_not_negotiated(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_desc(&x->f, 0x8000, 0, FM_BUF, 4, 0, 0);
	put_indirect(x, 0x8000, 16, 0);
	expect_broken_pop(x);
}

static void test_indirect_nested(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, F_INDIRECT);
	fm_desc(&x->f, 0x8000, 0, FM_BUF, 4, VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, 0x8000, 1, 0x8000, 32, VIRTQ_DESC_F_INDIRECT, 0);
	put_indirect(x, 0x8000, 32, 0);
	expect_broken_pop(x);
}

static void test_indirect_with_next(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, F_INDIRECT);
	fm_desc(&x->f, 0x8000, 0, FM_BUF, 4, 0, 0);
	fm_desc(&x->f, FM_DESC, 1, FM_BUF, 4, 0, 0);
	put_indirect(x, 0x8000, 16, VIRTQ_DESC_F_NEXT);
	expect_broken_pop(x);
}

static void test_indirect_bad_len(void **ctx)
{
	struct fx *x = *ctx;
	static const uint32_t lens[] = { 0, 17, 8, (QS + 1) * 16 };
	for (unsigned i = 0; i < 4; i++) {
		vq_reset(&x->vq);
		x->vq.desc_gpa = FM_DESC, x->vq.avail_gpa = FM_AVAIL, x->vq.used_gpa = FM_USED;
		fm_w16(&x->f, FM_AVAIL + 2, 0);
		enable_ok(x, F_INDIRECT);
		put_indirect(x, 0x8000, lens[i], 0);
		expect_broken_pop(x);
	}
}

static void test_indirect_outside_ram(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, F_INDIRECT);
	put_indirect(x, FM_REGION - 16, 32, 0);   /* straddles the regions */
	expect_broken_pop(x);
}

static void test_indirect_loop(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, F_INDIRECT);
	fm_desc(&x->f, 0x8000, 0, FM_BUF, 4, VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, 0x8000, 1, FM_BUF, 4, VIRTQ_DESC_F_NEXT, 0);
	put_indirect(x, 0x8000, 32, 0);
	expect_broken_pop(x);
}

static void test_indirect_next_out_of_table(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, F_INDIRECT);
	/* next = 2 is a valid index of the main table but not of this table */
	fm_desc(&x->f, 0x8000, 0, FM_BUF, 4, VIRTQ_DESC_F_NEXT, 2);
	put_indirect(x, 0x8000, 32, 0);
	expect_broken_pop(x);
}

static void test_indirect_desc_outside_ram(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, F_INDIRECT);
	fm_desc(&x->f, 0x8000, 0, 0x1000000, 4, 0, 0);
	put_indirect(x, 0x8000, 16, 0);
	expect_broken_pop(x);
}

static void test_indirect_read_after_write(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, F_INDIRECT);
	fm_desc(&x->f, FM_DESC, 2, FM_BUF, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3);
	fm_desc(&x->f, FM_DESC, 3, 0x8000, 16, VIRTQ_DESC_F_INDIRECT, 0);
	fm_desc(&x->f, 0x8000, 0, FM_BUF, 4, 0, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 2);
	expect_broken_pop(x);
}

/* After a violation, a device reset and a clean re-setup work again, and the
 * log line is not repeated (logged stays set). */
static void test_reset_recovers(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0xffff);
	expect_broken_pop(x);
	assert_true(x->vq.logged);
	vq_reset(&x->vq);
	assert_false(x->vq.broken);
	assert_true(x->vq.logged);
	memset(fm_ptr(&x->f, FM_AVAIL), 0, 64);
	memset(fm_ptr(&x->f, FM_USED), 0, 128);
	x->vq.desc_gpa = FM_DESC, x->vq.avail_gpa = FM_AVAIL, x->vq.used_gpa = FM_USED;
	enable_ok(x, 0);
	fm_desc(&x->f, FM_DESC, 0, FM_BUF, 4, 0, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	assert_int_equal(vq_pop(&x->vq, &x->c), 1);
	/* a device model can report a content violation too */
	vq_fail(&x->vq, "request header of %u bytes is too short", 4u);
	assert_true(x->vq.broken);
	assert_int_equal(x->broken_calls, 2);
}

/* --- notifications --- */

static void push_one(struct fx *x, uint16_t head)
{
	fm_desc(&x->f, FM_DESC, head, FM_BUF, 4, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&x->f, FM_AVAIL, QS, head);
	assert_int_equal(vq_pop(&x->vq, &x->c), 1);
	assert_int_equal(vq_push(&x->vq, head, 4), 0);
}

static void test_notify_flags(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	push_one(x, 0);
	assert_true(vq_should_notify(&x->vq));
	fm_w16(&x->f, FM_AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
	push_one(x, 1);
	assert_false(vq_should_notify(&x->vq));
	fm_w16(&x->f, FM_AVAIL, 0);
	push_one(x, 2);
	assert_true(vq_should_notify(&x->vq));

	/* device side suppression through used->flags */
	vq_notify_disable(&x->vq);
	assert_int_equal(fm_r16(&x->f, FM_USED), VIRTQ_USED_F_NO_NOTIFY);
	assert_false(vq_notify_enable(&x->vq));
	assert_int_equal(fm_r16(&x->f, FM_USED), 0);
	vq_notify_disable(&x->vq);
	fm_desc(&x->f, FM_DESC, 3, FM_BUF, 4, 0, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 3);
	assert_true(vq_notify_enable(&x->vq));   /* arrived while disabled */
}

static void test_event_idx(void **ctx)
{
	struct fx *x = *ctx;
	const uint64_t used_event = FM_AVAIL + 4 + 2 * QS, avail_event = FM_USED + 4 + 8 * QS;
	enable_ok(x, F_EVENT);
	/* NO_INTERRUPT is ignored with event index */
	fm_w16(&x->f, FM_AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
	fm_w16(&x->f, used_event, 0);
	push_one(x, 0);                    /* used idx 0 -> 1 */
	assert_int_equal(fm_r16(&x->f, avail_event), 1);   /* pop moved avail_event */
	assert_true(vq_should_notify(&x->vq));   /* first one always */
	push_one(x, 1);                    /* 1 -> 2: event 0 already passed */
	assert_false(vq_should_notify(&x->vq));
	fm_w16(&x->f, used_event, 3);
	push_one(x, 2);                    /* 2 -> 3: not yet */
	assert_false(vq_should_notify(&x->vq));
	push_one(x, 3);                    /* 3 -> 4: crossed 3 */
	assert_true(vq_should_notify(&x->vq));
	/* nothing new since the last decision */
	assert_false(vq_should_notify(&x->vq));
	/* several pushes, one decision: crossed inside the batch */
	fm_w16(&x->f, used_event, 5);
	push_one(x, 4);
	push_one(x, 5);
	push_one(x, 6);                    /* 4 -> 7 */
	assert_true(vq_should_notify(&x->vq));

	/* avail_event: disabled stops it moving; enable publishes avail idx */
	vq_notify_disable(&x->vq);
	assert_int_equal(fm_r16(&x->f, FM_USED), 0);   /* flags untouched */
	push_one(x, 7);
	assert_int_equal(fm_r16(&x->f, avail_event), 7);
	assert_false(vq_notify_enable(&x->vq));
	assert_int_equal(fm_r16(&x->f, avail_event), 8);
	fm_desc(&x->f, FM_DESC, 0, FM_BUF, 4, 0, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	vq_notify_disable(&x->vq);
	assert_true(vq_notify_enable(&x->vq));
}

/* used_event far behind after >32K suppressed pushes must not make the
 * device go quiet forever. */
static void test_event_idx_wrap(void **ctx)
{
	struct fx *x = *ctx;
	const uint64_t used_event = FM_AVAIL + 4 + 2 * QS;
	enable_ok(x, F_EVENT);
	push_one(x, 0);
	assert_true(vq_should_notify(&x->vq));
	fm_w16(&x->f, used_event, 0);
	for (unsigned i = 0; i < 40000; i++) {
		uint16_t h = (uint16_t)(i % QS);
		push_one(x, h);
	}
	assert_false(x->vq.signalled_used_valid);
	assert_true(vq_should_notify(&x->vq));
}

/* --- save / load --- */

static void save_q(const struct virtqueue *vq, struct state_writer *w)
{
	sw_init(w);
	vq_save(vq, w);
	assert_int_equal(w->err, 0);
}

static void load_q(struct virtqueue *vq, const struct state_writer *w)
{
	struct state_reader r;
	struct terr err = { 0 };
	assert_int_equal(sr_init(&r, w->buf, w->len, "test.0", &err), 0);
	assert_int_equal(vq_load(vq, &r, &err), 0);
	sr_free(&r);
}

static void test_save_load_mid_stream(void **ctx)
{
	struct fx *x = *ctx;
	x->vq.msix_vector = 3;
	enable_ok(x, F_EVENT | F_INDIRECT);
	for (unsigned i = 0; i < 6; i++) {
		fm_desc(&x->f, FM_DESC, i, FM_BUF + 0x100 * i, 0x10 + i, VIRTQ_DESC_F_WRITE, 0);
		fm_offer(&x->f, FM_AVAIL, QS, (uint16_t)i);
	}
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(vq_pop(&x->vq, &x->c), 1);
		assert_int_equal(vq_push(&x->vq, x->c.head, i), 0);
	}
	assert_true(vq_should_notify(&x->vq));
	struct state_writer a;
	save_q(&x->vq, &a);

	/* a fresh queue, loaded, continues exactly where the first one is */
	struct virtqueue q2;
	struct vq_chain c2;
	vq_chain_init(&c2);
	assert_int_equal(vq_init(&q2, &x->f.m, QS, "test.0 queue 0 (restored)", on_broken, x), 0);
	load_q(&q2, &a);
	assert_true(vq_is_ready(&q2));
	assert_int_equal(q2.msix_vector, 3);
	assert_int_equal(q2.features, F_EVENT | F_INDIRECT);
	struct state_writer b;
	save_q(&q2, &b);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.buf, b.buf, a.len);

	for (unsigned i = 3; i < 6; i++) {
		int r1 = vq_pop(&x->vq, &x->c), r2 = vq_pop(&q2, &c2);
		assert_int_equal(r1, 1);
		assert_int_equal(r2, 1);
		assert_int_equal(x->c.head, c2.head);
		assert_int_equal(x->c.in_len, c2.in_len);
		assert_ptr_equal(x->c.iov[0].iov_base, c2.iov[0].iov_base);
	}
	/* pushes from the restored queue land where the original's would */
	assert_int_equal(vq_push(&q2, 3, 33), 0);
	assert_int_equal(fm_r16(&x->f, FM_USED + 2), 4);
	assert_int_equal(fm_r32(&x->f, FM_USED + 4 + 8 * 3), 3);
	assert_int_equal(fm_r32(&x->f, FM_USED + 8 + 8 * 3), 33);
	assert_int_equal(vq_pop(&q2, &c2), 0);
	vq_chain_free(&c2);
	sw_free(&a);
	sw_free(&b);
}

static void test_load_revalidates(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, 0);
	struct state_writer a;
	save_q(&x->vq, &a);

	/* restore onto a guest with only region 1: the rings are gone */
	struct guest_mem small = x->f.m;
	small.regions[0] = small.regions[1];
	small.nregions = 1;
	struct virtqueue q2;
	unsigned before = x->broken_calls;
	assert_int_equal(vq_init(&q2, &small, QS, "q2", on_broken, x), 0);
	load_q(&q2, &a);
	assert_true(q2.broken);
	assert_false(vq_is_ready(&q2));
	assert_int_equal(x->broken_calls, before);   /* no call-back in the middle of a load */
	assert_int_equal(vq_pop(&q2, &x->c), -EIO);

	/* a broken queue stays broken across save/load, without re-validation */
	struct state_writer b;
	save_q(&q2, &b);
	struct virtqueue q3;
	assert_int_equal(vq_init(&q3, &x->f.m, QS, "q3", on_broken, x), 0);
	load_q(&q3, &b);
	assert_true(q3.broken);
	assert_false(vq_is_ready(&q3));
	sw_free(&a);
	sw_free(&b);
}

static void test_load_malformed(void **ctx)
{
	struct fx *x = *ctx;
	struct state_writer w;
	struct state_reader r;
	struct terr err = { 0 };
	sw_init(&w);
	sw_uint(&w, "last_avail_idx", 70000);
	assert_int_equal(sr_init(&r, w.buf, w.len, "test.0", &err), 0);
	assert_true(vq_load(&x->vq, &r, &err) < 0);
	assert_non_null(strstr(err.msg, "last_avail_idx"));
	sr_free(&r);
	sw_free(&w);
	sw_init(&w);
	sw_str(&w, "size", "eight");
	terr_clear(&err);
	assert_int_equal(sr_init(&r, w.buf, w.len, "test.0", &err), 0);
	assert_true(vq_load(&x->vq, &r, &err) < 0);
	sr_free(&r);
	sw_free(&w);
	/* an empty blob is the reset state */
	sw_init(&w);
	assert_int_equal(sr_init(&r, w.buf, w.len, "test.0", &err), 0);
	assert_int_equal(vq_load(&x->vq, &r, &err), 0);
	assert_int_equal(x->vq.size, QS);
	assert_false(x->vq.enabled);
	assert_true(x->vq.notify_enabled);
	sr_free(&r);
	sw_free(&w);
}

/* --- dirty tracking for live migration (guest_mem_note_write) --- */

/* The pages recorded since the last call (RAM is 32 pages: one word). */
static uint64_t dirty_pages(struct fx *x)
{
	uint64_t w = 0;
	guest_mem_take_host_writes(&x->f.m, 0, &w, 1);
	return w;
}

#define PG(gpa) (1ull << ((gpa) / 4096))

/* One chain: a readable header on page 4, a writable buffer across pages 5
 * and 6, a writable buffer on page 0x11 (region 1). */
static void offer_rw_chain(struct fx *x)
{
	fm_desc(&x->f, FM_DESC, 0, FM_BUF, 16, VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, FM_DESC, 1, 0x5f00, 0x200, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	fm_desc(&x->f, FM_DESC, 2, 0x11000, 0x1000, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 0);
	assert_int_equal(vq_pop(&x->vq, &x->c), 1);
}

static void test_dirty_completion(void **ctx)
{
	struct fx *x = *ctx;
	uint8_t data[0x300];
	memset(data, 0xab, sizeof(data));
	enable_ok(x, 0);

	/* tracking off (after having been on: the bitmap exists): nothing */
	assert_int_equal(guest_mem_track_host_writes(&x->f.m, true), 0);
	assert_int_equal(guest_mem_track_host_writes(&x->f.m, false), 0);
	offer_rw_chain(x);
	assert_int_equal(vq_chain_copy_to(&x->c, 0, data, sizeof(data)), sizeof(data));
	vq_chain_note_in(&x->c, 0, x->c.in_len);
	assert_int_equal(vq_push(&x->vq, 0, sizeof(data)), 0);
	assert_int_equal(dirty_pages(x), 0);

	/* on: exactly the pages written (0x5f00..0x60ff: pages 5 and 6; the
	 * first 0x100 bytes at 0x11000) and the used ring's page */
	assert_int_equal(guest_mem_track_host_writes(&x->f.m, true), 0);
	offer_rw_chain(x);
	assert_int_equal(dirty_pages(x), 0);   /* popping writes nothing here */
	assert_int_equal(vq_chain_copy_to(&x->c, 0, data, sizeof(data)), sizeof(data));
	assert_int_equal(vq_push(&x->vq, 0, sizeof(data)), 0);
	assert_int_equal(dirty_pages(x), PG(0x5000) | PG(0x6000) | PG(0x11000) | PG(FM_USED));

	/* a write inside one page marks that page only */
	offer_rw_chain(x);
	assert_int_equal(vq_chain_copy_to(&x->c, 0, data, 0x100), 0x100);
	assert_int_equal(dirty_pages(x), PG(0x5000));
	assert_int_equal(vq_push(&x->vq, 0, 0x100), 0);
	assert_int_equal(dirty_pages(x), PG(FM_USED));

	/* a device writing through the iovecs says what it wrote: the last
	 * writable byte (a status byte) is on page 0x11 */
	offer_rw_chain(x);
	vq_chain_note_in(&x->c, x->c.in_len - 1, 1);
	assert_int_equal(dirty_pages(x), PG(0x11000));
	vq_chain_note_in(&x->c, 0x1ff, 2);   /* the end of one buffer, the start of the next */
	assert_int_equal(dirty_pages(x), PG(0x6000) | PG(0x11000));
	vq_chain_note_in(&x->c, 0, x->c.in_len);
	assert_int_equal(dirty_pages(x), PG(0x5000) | PG(0x6000) | PG(0x11000));
	vq_chain_note_in(&x->c, x->c.in_len, 10);   /* past the end: nothing */
	assert_int_equal(dirty_pages(x), 0);
	assert_int_equal(vq_push(&x->vq, 0, 1), 0);
	assert_int_equal(dirty_pages(x), PG(FM_USED));

	/* a batch, and notification suppression, write the used ring only */
	offer_rw_chain(x);
	uint16_t heads[1] = { 0 };
	uint32_t lens[1] = { 0 };
	assert_int_equal(vq_push_batch(&x->vq, heads, lens, 1), 0);
	assert_int_equal(dirty_pages(x), PG(FM_USED));
	vq_notify_disable(&x->vq);
	assert_int_equal(dirty_pages(x), PG(FM_USED));
	vq_notify_enable(&x->vq);
	assert_int_equal(dirty_pages(x), PG(FM_USED));

	assert_int_equal(guest_mem_track_host_writes(&x->f.m, false), 0);
	offer_rw_chain(x);
	assert_int_equal(vq_chain_copy_to(&x->c, 0, data, sizeof(data)), sizeof(data));
	assert_int_equal(vq_push(&x->vq, 0, sizeof(data)), 0);
	assert_int_equal(dirty_pages(x), 0);
	free(x->f.m.host_dirty);
	x->f.m.host_dirty = NULL;
}

/* With event index, popping moves avail_event, in the used ring; buffers in
 * an indirect table are marked like direct ones. */
static void test_dirty_event_idx_indirect(void **ctx)
{
	struct fx *x = *ctx;
	enable_ok(x, F_EVENT | F_INDIRECT);
	assert_int_equal(guest_mem_track_host_writes(&x->f.m, true), 0);
	const uint64_t tbl = 0x8000;
	fm_desc(&x->f, tbl, 0, FM_BUF, 16, VIRTQ_DESC_F_NEXT, 1);
	fm_desc(&x->f, tbl, 1, 0x12ff0, 0x20, VIRTQ_DESC_F_WRITE, 0);   /* pages 0x12, 0x13 */
	fm_desc(&x->f, FM_DESC, 4, tbl, 32, VIRTQ_DESC_F_INDIRECT, 0);
	fm_offer(&x->f, FM_AVAIL, QS, 4);
	assert_int_equal(vq_pop(&x->vq, &x->c), 1);
	assert_int_equal(dirty_pages(x), PG(FM_USED));   /* avail_event */
	uint8_t v[0x20] = { 1 };
	assert_int_equal(vq_chain_copy_to(&x->c, 0, v, sizeof(v)), sizeof(v));
	assert_int_equal(vq_push(&x->vq, 4, sizeof(v)), 0);
	assert_int_equal(dirty_pages(x), PG(0x12000) | PG(0x13000) | PG(FM_USED));
	assert_int_equal(guest_mem_track_host_writes(&x->f.m, false), 0);
	free(x->f.m.host_dirty);
	x->f.m.host_dirty = NULL;
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
#define TH(f) cmocka_unit_test_setup_teardown(f, setup_with_huge, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_init_sizes),
		T(test_simple_chain),
		T(test_index_wrap),
		T(test_indirect),
		T(test_bad_queue_size),
		T(test_bad_rings),
		T(test_desc_outside_ram),
		T(test_desc_straddles_regions),
		T(test_desc_wraps_address),
		T(test_loop_direct),
		T(test_loop_self),
		T(test_longest_chain),
		T(test_next_out_of_table),
		T(test_head_out_of_table),
		T(test_avail_idx_jump),
		T(test_avail_idx_backwards),
		T(test_read_after_write),
		T(test_read_after_zero_len_write),
		TH(test_length_overflow),
		TH(test_length_just_fits),
		T(test_indirect_not_negotiated),
		T(test_indirect_nested),
		T(test_indirect_with_next),
		T(test_indirect_bad_len),
		T(test_indirect_outside_ram),
		T(test_indirect_loop),
		T(test_indirect_next_out_of_table),
		T(test_indirect_desc_outside_ram),
		T(test_indirect_read_after_write),
		T(test_reset_recovers),
		T(test_notify_flags),
		T(test_event_idx),
		T(test_event_idx_wrap),
		T(test_save_load_mid_stream),
		T(test_load_revalidates),
		T(test_load_malformed),
		T(test_dirty_completion),
		T(test_dirty_event_idx_indirect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The device-independent virtio core: feature negotiation, the status state
 * machine, configuration space bounds, queue kicks and interrupts through a
 * fake transport, NEEDS_RESET on a broken queue, and save/load. */
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
#include "virtio/virtio_dev.h"

#define QS 8
#define DEV_FEATURE_BIT 3

struct fake_model {
	struct virtio_dev vdev;
	struct fake_mem f;
	uint8_t config[12];
	unsigned notified[2], resets, driver_oks;
	unsigned queue_irqs[2], config_irqs;
	uint64_t counter;             /* device-specific state, saved */
};

static void get_config(struct virtio_dev *d, uint32_t off, void *buf, uint32_t len)
{
	struct fake_model *m = d->priv;
	memcpy(buf, m->config + off, len);
}

static void set_config(struct virtio_dev *d, uint32_t off, const void *buf, uint32_t len)
{
	struct fake_model *m = d->priv;
	memcpy(m->config + off, buf, len);
}

/* Completes every chain with its writable length. */
static void queue_notify(struct virtio_dev *d, unsigned q)
{
	struct fake_model *m = d->priv;
	struct vq_chain c;
	m->notified[q]++;
	vq_chain_init(&c);
	while (vq_pop(&d->vqs[q], &c) == 1) {
		vq_push(&d->vqs[q], c.head, c.in_len);
		m->counter++;
	}
	vq_chain_free(&c);
	virtio_dev_notify(d, q);
}

static void model_reset(struct virtio_dev *d)
{
	struct fake_model *m = d->priv;
	m->resets++;
	m->counter = 0;
}

static void driver_ok(struct virtio_dev *d)
{
	((struct fake_model *)d->priv)->driver_oks++;
}

static int model_save(struct virtio_dev *d, struct state_writer *w)
{
	sw_uint(w, "counter", ((struct fake_model *)d->priv)->counter);
	return w->err;
}

static int model_load(struct virtio_dev *d, const struct state_reader *r, struct terr *err)
{
	struct fake_model *m = d->priv;
	return sr_uint(r, "counter", 0, &m->counter, err);
}

static const struct virtio_dev_ops fake_ops = {
	.get_config = get_config,
	.set_config = set_config,
	.queue_notify = queue_notify,
	.reset = model_reset,
	.driver_ok = driver_ok,
	.save = model_save,
	.load = model_load,
};

static void t_notify_queue(struct virtio_dev *d, unsigned q)
{
	((struct fake_model *)d->priv)->queue_irqs[q]++;
}

static void t_notify_config(struct virtio_dev *d)
{
	((struct fake_model *)d->priv)->config_irqs++;
}

static const struct virtio_transport_ops fake_transport = {
	.notify_queue = t_notify_queue,
	.notify_config = t_notify_config,
};

static void model_init(struct fake_model *m)
{
	struct terr err = { 0 };
	struct virtio_dev_params p = {
		.ops = &fake_ops, .priv = m, .mem = &m->f.m, .id = "fake.0",
		.device_id = VIRTIO_ID_RNG, .features = 1ull << DEV_FEATURE_BIT,
		.nqueues = 2, .queue_size = QS, .config_size = sizeof(m->config),
	};
	assert_int_equal(virtio_dev_init(&m->vdev, &p, &err), 0);
	virtio_dev_set_transport(&m->vdev, &fake_transport, NULL);
	memcpy(m->config, "config-bytes", 12);
}

static int setup(void **ctx)
{
	struct fake_model *m = calloc(1, sizeof(*m));
	fm_init(&m->f, 0);
	model_init(m);
	*ctx = m;
	return 0;
}

static int teardown(void **ctx)
{
	struct fake_model *m = *ctx;
	virtio_dev_destroy(&m->vdev);
	fm_free(&m->f);
	free(m);
	return 0;
}

static const uint64_t all_features = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_EVENT_IDX) |
				     (1ull << VIRTIO_F_INDIRECT_DESC) | (1ull << DEV_FEATURE_BIT);

static void write_features(struct virtio_dev *d, uint64_t f)
{
	virtio_dev_set_driver_features(d, 0, (uint32_t)f);
	virtio_dev_set_driver_features(d, 1, (uint32_t)(f >> 32));
}

/* What Linux's virtio_pci_modern does, up to DRIVER_OK. */
static void bring_up(struct fake_model *m, uint64_t features)
{
	struct virtio_dev *d = &m->vdev;
	virtio_dev_set_status(d, 0);
	virtio_dev_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
	virtio_dev_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	write_features(d, features);
	virtio_dev_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			      VIRTIO_STATUS_FEATURES_OK);
	assert_true(d->status & VIRTIO_STATUS_FEATURES_OK);
	struct virtqueue *q = virtio_dev_queue(d, 0);
	q->desc_gpa = FM_DESC, q->avail_gpa = FM_AVAIL, q->used_gpa = FM_USED;
	assert_int_equal(virtio_dev_queue_enable(d, 0), 0);
	virtio_dev_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			      VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	assert_true(d->status & VIRTIO_STATUS_DRIVER_OK);
}

static void test_feature_words(void **ctx)
{
	struct fake_model *m = *ctx;
	struct virtio_dev *d = &m->vdev;
	assert_int_equal(virtio_dev_get_device_features(d, 0),
			 (1u << VIRTIO_F_INDIRECT_DESC) | (1u << VIRTIO_F_EVENT_IDX) | (1u << DEV_FEATURE_BIT));
	assert_int_equal(virtio_dev_get_device_features(d, 1), 1u << (VIRTIO_F_VERSION_1 - 32));
	assert_int_equal(virtio_dev_get_device_features(d, 2), 0);
	assert_int_equal(virtio_dev_get_device_features(d, 0xffffffff), 0);
	write_features(d, all_features);
	assert_int_equal(virtio_dev_get_driver_features(d, 0), (uint32_t)all_features);
	assert_int_equal(virtio_dev_get_driver_features(d, 1), 1);
	virtio_dev_set_driver_features(d, 7, 0xffffffff);   /* ignored */
	assert_int_equal(d->guest_features, all_features);
}

static void test_negotiation(void **ctx)
{
	struct fake_model *m = *ctx;
	struct virtio_dev *d = &m->vdev;
	bring_up(m, all_features);
	assert_int_equal(m->driver_oks, 1);
	assert_true(virtio_dev_has_feature(d, VIRTIO_F_EVENT_IDX));
	assert_int_equal(d->vqs[0].features, (1ull << VIRTIO_F_EVENT_IDX) | (1ull << VIRTIO_F_INDIRECT_DESC));
	/* features are frozen after FEATURES_OK */
	write_features(d, 1ull << VIRTIO_F_VERSION_1);
	assert_int_equal(d->guest_features, all_features);
	/* setting DRIVER_OK again does not call driver_ok twice */
	virtio_dev_set_status(d, d->status);
	assert_int_equal(m->driver_oks, 1);
	/* FAILED may be added */
	virtio_dev_set_status(d, d->status | VIRTIO_STATUS_FAILED);
	assert_true(d->status & VIRTIO_STATUS_FAILED);
}

static void test_features_refused(void **ctx)
{
	struct fake_model *m = *ctx;
	struct virtio_dev *d = &m->vdev;
	const uint8_t drv = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	/* a feature that was not offered */
	virtio_dev_set_status(d, drv);
	write_features(d, all_features | (1ull << 5));
	virtio_dev_set_status(d, drv | VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(d->status, drv);
	/* the driver may fix its features and try again */
	write_features(d, all_features);
	virtio_dev_set_status(d, drv | VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(d->status, drv | VIRTIO_STATUS_FEATURES_OK);

	/* legacy driver: no VERSION_1 */
	virtio_dev_set_status(d, 0);
	virtio_dev_set_status(d, drv);
	write_features(d, 1ull << DEV_FEATURE_BIT);
	virtio_dev_set_status(d, drv | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(d->status, drv);
	assert_int_equal(m->driver_oks, 0);
}

static void test_status_machine(void **ctx)
{
	struct fake_model *m = *ctx;
	struct virtio_dev *d = &m->vdev;
	const uint8_t drv = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	/* DRIVER_OK without FEATURES_OK */
	virtio_dev_set_status(d, drv | VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(d->status, drv);
	/* clearing a bit without a reset is ignored */
	virtio_dev_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
	assert_int_equal(d->status, drv);
	/* the driver cannot set NEEDS_RESET */
	virtio_dev_set_status(d, drv | VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(d->status, drv);
	/* reset */
	unsigned resets = m->resets;
	write_features(d, all_features);
	d->vqs[1].size = 4;
	d->vqs[1].msix_vector = 2;
	virtio_dev_set_status(d, 0);
	assert_int_equal(d->status, 0);
	assert_int_equal(d->guest_features, 0);
	assert_int_equal(d->vqs[1].size, QS);
	assert_int_equal(d->vqs[1].msix_vector, VIRTIO_MSI_NO_VECTOR);
	assert_int_equal(m->resets, resets + 1);
}

static void test_config_space(void **ctx)
{
	struct fake_model *m = *ctx;
	struct virtio_dev *d = &m->vdev;
	char buf[16];
	virtio_dev_read_config(d, 7, buf, 5);
	assert_memory_equal(buf, "bytes", 5);
	memset(buf, 'x', sizeof(buf));
	virtio_dev_read_config(d, 10, buf, 4);    /* runs past the end: zeros */
	assert_memory_equal(buf, "\0\0\0\0", 4);
	virtio_dev_read_config(d, 0xfffffffe, buf, 4);
	assert_memory_equal(buf, "\0\0\0\0", 4);
	virtio_dev_write_config(d, 0, "CON", 3);
	virtio_dev_write_config(d, 11, "zz", 2);  /* ignored */
	virtio_dev_write_config(d, 0xffffffff, "zz", 2);
	assert_memory_equal(m->config, "CONfig-bytes", 12);
	uint8_t gen = d->config_generation;
	virtio_dev_config_changed(d);            /* not DRIVER_OK: no interrupt */
	assert_int_equal(d->config_generation, (uint8_t)(gen + 1));
	assert_int_equal(m->config_irqs, 0);
	bring_up(m, all_features);
	virtio_dev_config_changed(d);
	assert_int_equal(m->config_irqs, 1);
}

static void test_kick_and_interrupt(void **ctx)
{
	struct fake_model *m = *ctx;
	struct virtio_dev *d = &m->vdev;
	/* queue 1 was never enabled, queue 5 does not exist */
	virtio_dev_queue_kick(d, 1);
	virtio_dev_queue_kick(d, 5);
	assert_int_equal(m->notified[1], 0);
	bring_up(m, (1ull << VIRTIO_F_VERSION_1));
	fm_desc(&m->f, FM_DESC, 0, FM_BUF, 32, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&m->f, FM_AVAIL, QS, 0);
	virtio_dev_queue_kick(d, 0);
	assert_int_equal(m->notified[0], 1);
	assert_int_equal(m->queue_irqs[0], 1);
	assert_int_equal(fm_r32(&m->f, FM_USED + 8), 32);
	/* driver suppresses interrupts */
	fm_w16(&m->f, FM_AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
	fm_offer(&m->f, FM_AVAIL, QS, 0);
	virtio_dev_queue_kick(d, 0);
	assert_int_equal(m->notified[0], 2);
	assert_int_equal(m->queue_irqs[0], 1);
}

static void test_broken_queue_needs_reset(void **ctx)
{
	struct fake_model *m = *ctx;
	struct virtio_dev *d = &m->vdev;
	bring_up(m, all_features);
	fm_desc(&m->f, FM_DESC, 0, FM_BUF, 4, VIRTQ_DESC_F_NEXT, 0);   /* self loop */
	fm_offer(&m->f, FM_AVAIL, QS, 0);
	virtio_dev_queue_kick(d, 0);
	assert_true(d->status & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(m->config_irqs, 1);
	/* further kicks do nothing, no second interrupt */
	virtio_dev_queue_kick(d, 0);
	assert_int_equal(m->notified[0], 1);
	assert_int_equal(m->config_irqs, 1);
	/* the driver sees NEEDS_RESET in status and writes back what it read */
	virtio_dev_set_status(d, d->status);
	assert_true(d->status & VIRTIO_STATUS_NEEDS_RESET);
	/* reset clears it, the device works again */
	memset(fm_ptr(&m->f, FM_AVAIL), 0, 64);
	memset(fm_ptr(&m->f, FM_USED), 0, 128);
	bring_up(m, all_features);
	assert_false(d->status & VIRTIO_STATUS_NEEDS_RESET);
	fm_desc(&m->f, FM_DESC, 0, FM_BUF, 4, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&m->f, FM_AVAIL, QS, 0);
	virtio_dev_queue_kick(d, 0);
	assert_int_equal(fm_r16(&m->f, FM_USED + 2), 1);

	/* a bad ring layout at enable time: NEEDS_RESET before DRIVER_OK, so
	 * no interrupt yet */
	virtio_dev_set_status(d, 0);
	virtio_dev_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	write_features(d, all_features);
	virtio_dev_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	d->vqs[1].size = 3;
	unsigned irqs = m->config_irqs;
	assert_int_equal(virtio_dev_queue_enable(d, 1), -EINVAL);
	assert_true(d->status & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(m->config_irqs, irqs);
}

static void save_dev(struct virtio_dev *d, struct state_writer *w)
{
	sw_init(w);
	assert_int_equal(virtio_dev_save(d, w), 0);
}

static int load_dev(struct virtio_dev *d, const struct state_writer *w, struct terr *err)
{
	struct state_reader r;
	assert_int_equal(sr_init(&r, w->buf, w->len, d->id, err), 0);
	int ret = virtio_dev_load(d, &r, err);
	sr_free(&r);
	return ret;
}

static void test_save_load(void **ctx)
{
	struct fake_model *m = *ctx;
	struct virtio_dev *d = &m->vdev;
	struct terr err = { 0 };
	bring_up(m, all_features);
	d->vqs[0].msix_vector = 1;
	for (unsigned i = 0; i < 4; i++) {
		fm_desc(&m->f, FM_DESC, i, FM_BUF + 64 * i, 8 + i, VIRTQ_DESC_F_WRITE, 0);
		fm_offer(&m->f, FM_AVAIL, QS, (uint16_t)i);
	}
	virtio_dev_queue_kick(d, 0);     /* consumes the 4 */
	assert_int_equal(m->counter, 4);
	struct state_writer a, b;
	save_dev(d, &a);

	/* mutate, load, save again: identical */
	virtio_dev_set_status(d, 0);
	assert_int_equal(m->counter, 0);
	assert_int_equal(load_dev(d, &a, &err), 0);
	assert_int_equal(m->counter, 4);
	save_dev(d, &b);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.buf, b.buf, a.len);
	sw_free(&b);

	/* a fresh device loaded from it continues the stream */
	struct fake_model *m2 = calloc(1, sizeof(*m2));
	m2->f = m->f;                     /* same guest RAM */
	model_init(m2);
	assert_int_equal(load_dev(&m2->vdev, &a, &err), 0);
	assert_int_equal(m2->vdev.status, d->status);
	assert_int_equal(m2->vdev.guest_features, all_features);
	assert_int_equal(m2->vdev.vqs[0].msix_vector, 1);
	assert_true(vq_is_ready(&m2->vdev.vqs[0]));
	fm_desc(&m->f, FM_DESC, 4, FM_BUF, 77, VIRTQ_DESC_F_WRITE, 0);
	fm_offer(&m->f, FM_AVAIL, QS, 4);
	virtio_dev_queue_kick(&m2->vdev, 0);
	assert_int_equal(m2->counter, 5);
	assert_int_equal(fm_r16(&m->f, FM_USED + 2), 5);
	assert_int_equal(fm_r32(&m->f, FM_USED + 4 + 8 * 4), 4);
	assert_int_equal(fm_r32(&m->f, FM_USED + 8 + 8 * 4), 77);
	virtio_dev_destroy(&m2->vdev);
	free(m2);
	sw_free(&a);
}

static void test_load_errors(void **ctx)
{
	struct fake_model *m = *ctx;
	struct virtio_dev *d = &m->vdev;
	struct terr err = { 0 };
	struct state_writer w;

	sw_init(&w);
	sw_uint(&w, "status", VIRTIO_STATUS_FEATURES_OK);
	sw_uint(&w, "driver_features", 1ull << 40);
	assert_true(load_dev(d, &w, &err) < 0);
	assert_non_null(strstr(err.msg, "fake.0"));
	assert_non_null(strstr(err.msg, "does not offer"));
	sw_free(&w);

	sw_init(&w);
	sw_uint(&w, "queues", 3);
	terr_clear(&err);
	assert_true(load_dev(d, &w, &err) < 0);
	assert_string_equal(err.msg, "fake.0: saved with 3 queues, this device has 2");
	sw_free(&w);

	sw_init(&w);
	sw_uint(&w, "vq.0", 3);
	terr_clear(&err);
	assert_true(load_dev(d, &w, &err) < 0);
	sw_free(&w);

	/* a queue blob with a bad field names the device */
	struct state_writer q;
	sw_init(&q);
	sw_uint(&q, "used_idx", 1 << 20);
	sw_init(&w);
	sw_blob(&w, "vq.1", &q);
	terr_clear(&err);
	assert_true(load_dev(d, &w, &err) < 0);
	assert_non_null(strstr(err.msg, "fake.0"));
	assert_non_null(strstr(err.msg, "used_idx"));
	sw_free(&w);
	sw_free(&q);

	/* empty: the reset state */
	sw_init(&w);
	bring_up(m, all_features);
	assert_int_equal(load_dev(d, &w, &err), 0);
	assert_int_equal(d->status, 0);
	assert_false(d->vqs[0].enabled);
	sw_free(&w);
}

/* Restoring onto a guest whose RAM no longer holds the rings: the device
 * comes back needing a reset instead of failing or crashing later. */
static void test_load_onto_smaller_ram(void **ctx)
{
	struct fake_model *m = *ctx;
	struct terr err = { 0 };
	bring_up(m, all_features);
	struct state_writer a;
	save_dev(&m->vdev, &a);
	struct fake_model *m2 = calloc(1, sizeof(*m2));
	m2->f = m->f;
	m2->f.m.regions[0] = m2->f.m.regions[1];
	m2->f.m.nregions = 1;
	model_init(m2);
	assert_int_equal(load_dev(&m2->vdev, &a, &err), 0);
	assert_true(m2->vdev.status & VIRTIO_STATUS_NEEDS_RESET);
	assert_false(vq_is_ready(&m2->vdev.vqs[0]));
	virtio_dev_destroy(&m2->vdev);
	free(m2);
	sw_free(&a);
}

static void test_init_errors(void **ctx)
{
	struct fake_model *m = *ctx;
	struct virtio_dev d;
	struct terr err = { 0 };
	struct virtio_dev_params p = {
		.ops = &fake_ops, .mem = &m->f.m, .id = "bad.0", .nqueues = 1, .queue_size = 100,
	};
	assert_int_equal(virtio_dev_init(&d, &p, &err), -EINVAL);
	p.queue_size = 64;
	p.nqueues = 0;
	assert_int_equal(virtio_dev_init(&d, &p, &err), -EINVAL);
	p.nqueues = VIRTIO_MAX_QUEUES + 1;
	assert_int_equal(virtio_dev_init(&d, &p, &err), -EINVAL);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_feature_words),
		T(test_negotiation),
		T(test_features_refused),
		T(test_status_machine),
		T(test_config_space),
		T(test_kick_and_interrupt),
		T(test_broken_queue_needs_reset),
		T(test_save_load),
		T(test_load_errors),
		T(test_load_onto_smaller_ram),
		T(test_init_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

#include "hw/i8042.h"
#include "core/vm.h"
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* status register */
#define STS_OBF       0x01
#define STS_SYS       0x04
#define STS_CMD       0x08   /* last write went to the command port */
#define STS_UNLOCKED  0x10   /* keyboard not inhibited */
#define STS_AUXDATA   0x20
#define STS_TIMEOUT   0x40

/* controller configuration byte ("command byte", CTR) */
#define CTR_KBDINT    0x01
#define CTR_AUXINT    0x02
#define CTR_SYS       0x04
#define CTR_KBDDIS    0x10
#define CTR_AUXDIS    0x20
#define CTR_XLATE     0x40

/* output port */
#define OUT_RESET     0x01   /* 0 holds the CPU in reset */
#define OUT_A20       0x02

#define AUX_IRQ       12
#define QUEUE_SIZE    16

struct i8042 {
	struct device dev;
	pthread_mutex_t lock;
	int irq_kbd, irq_aux;          /* current line levels, derived */
	/* guest-visible state, saved */
	uint8_t status;                /* SYS, CMD, TIMEOUT (OBF/AUXDATA derive from the queue) */
	uint8_t ctr;
	uint8_t outport;
	uint8_t ctl_cmd;               /* controller command waiting for its data byte */
	uint8_t kbd_cmd;               /* keyboard command waiting for its argument */
	uint8_t kbd_set;               /* scan-code set 1-3 */
	uint8_t kbd_leds;
	uint8_t kbd_enabled;
	uint8_t q[QUEUE_SIZE], q_aux[QUEUE_SIZE];   /* output bytes, oldest first */
	unsigned q_len;
};

static struct i8042 *to_kbc(struct device *d)
{
	return (struct i8042 *)d;
}

static void update_irq(struct i8042 *k)
{
	int kbd = k->q_len && !k->q_aux[0] && (k->ctr & CTR_KBDINT);
	int aux = k->q_len && k->q_aux[0] && (k->ctr & CTR_AUXINT);
	if (kbd != k->irq_kbd) {
		k->irq_kbd = kbd;
		if (k->dev.vm)
			vm_irq_line(k->dev.vm, I8042_KBD_IRQ, kbd);
	}
	if (aux != k->irq_aux) {
		k->irq_aux = aux;
		if (k->dev.vm)
			vm_irq_line(k->dev.vm, AUX_IRQ, aux);
	}
}

static void push(struct i8042 *k, uint8_t v, bool aux)
{
	if (k->q_len == QUEUE_SIZE)
		return;   /* the guest is not reading: drop, as a full keyboard buffer does */
	k->q[k->q_len] = v;
	k->q_aux[k->q_len] = aux;
	k->q_len++;
}

static uint8_t pop(struct i8042 *k)
{
	if (!k->q_len)
		return k->q[0];   /* an empty buffer reads its last byte again */
	uint8_t v = k->q[0];
	memmove(k->q, k->q + 1, k->q_len - 1);
	memmove(k->q_aux, k->q_aux + 1, k->q_len - 1);
	k->q_len--;
	k->q[k->q_len] = v;
	return v;
}

static void request_reset(struct i8042 *k)
{
	log_info(k->dev.id, "guest pulsed the keyboard controller's reset line");
	vm_request_exit(k->dev.vm, VM_EXIT_RESET, 0);
}

/* A byte the keyboard sends back; with translation on, the controller maps
 * identification bytes the way a real one does (set 2 -> set 1). */
static void kbd_reply(struct i8042 *k, uint8_t v)
{
	push(k, v, false);
}

static void kbd_write(struct i8042 *k, uint8_t v)
{
	if (k->kbd_cmd) {
		uint8_t cmd = k->kbd_cmd;
		k->kbd_cmd = 0;
		switch (cmd) {
		case 0xed:   /* set LEDs */
			k->kbd_leds = v & 7;
			kbd_reply(k, 0xfa);
			return;
		case 0xf0:   /* scan-code set */
			if (v == 0) {
				kbd_reply(k, 0xfa);
				kbd_reply(k, (k->ctr & CTR_XLATE) ? (uint8_t[]){ 0, 0x43, 0x41, 0x3f }[k->kbd_set]
								  : k->kbd_set);
			} else if (v <= 3) {
				k->kbd_set = v;
				kbd_reply(k, 0xfa);
			} else {
				kbd_reply(k, 0xfe);
			}
			return;
		case 0xf3:   /* typematic rate */
			kbd_reply(k, 0xfa);
			return;
		}
	}
	switch (v) {
	case 0xed: case 0xf0: case 0xf3:
		k->kbd_cmd = v;
		kbd_reply(k, 0xfa);
		break;
	case 0xee:   /* echo */
		kbd_reply(k, 0xee);
		break;
	case 0xf2:   /* identify: MF2 keyboard */
		kbd_reply(k, 0xfa);
		kbd_reply(k, 0xab);
		kbd_reply(k, (k->ctr & CTR_XLATE) ? 0x41 : 0x83);
		break;
	case 0xf4:
		k->kbd_enabled = 1;
		kbd_reply(k, 0xfa);
		break;
	case 0xf5:   /* disable and restore defaults */
		k->kbd_enabled = 0;
		k->kbd_set = 2;
		kbd_reply(k, 0xfa);
		break;
	case 0xf6:   /* restore defaults */
		k->kbd_set = 2;
		kbd_reply(k, 0xfa);
		break;
	case 0xff:   /* reset: ack, then basic assurance test passed */
		k->kbd_set = 2;
		k->kbd_leds = 0;
		k->kbd_enabled = 1;
		kbd_reply(k, 0xfa);
		kbd_reply(k, 0xaa);
		break;
	default:     /* typematic/make-break modes of set 3 and the rest: ack */
		kbd_reply(k, 0xfa);
		break;
	}
}

static void data_write(struct i8042 *k, uint8_t v)
{
	uint8_t cmd = k->ctl_cmd;
	k->ctl_cmd = 0;
	k->status &= (uint8_t)~STS_CMD;
	switch (cmd) {
	case 0x60:   /* write configuration byte */
		k->ctr = v;
		k->status = (uint8_t)((k->status & ~STS_SYS) | (v & CTR_SYS));
		break;
	case 0xd1:   /* write output port */
		k->outport = v;
		if (!(v & OUT_RESET))
			request_reset(k);
		break;
	case 0xd2:   /* write keyboard output buffer */
		push(k, v, false);
		break;
	case 0xd3:   /* write auxiliary output buffer (loopback) */
		push(k, v, true);
		break;
	case 0xd4:   /* write to the auxiliary device: none is attached */
		k->status |= STS_TIMEOUT;
		push(k, 0xfe, true);
		break;
	default:
		k->status &= (uint8_t)~STS_TIMEOUT;
		kbd_write(k, v);
		break;
	}
}

static void command(struct i8042 *k, uint8_t c)
{
	k->status |= STS_CMD;
	k->ctl_cmd = 0;
	switch (c) {
	case 0x20:   /* read configuration byte */
		push(k, k->ctr, false);
		break;
	case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4:
		k->ctl_cmd = c;
		break;
	case 0xa7:
		k->ctr |= CTR_AUXDIS;
		break;
	case 0xa8:
		k->ctr &= (uint8_t)~CTR_AUXDIS;
		break;
	case 0xa9:   /* auxiliary interface test: no error */
	case 0xab:   /* keyboard interface test: no error */
		push(k, 0x00, false);
		break;
	case 0xaa:   /* self test */
		k->status |= STS_SYS;
		k->ctr |= CTR_SYS;
		push(k, 0x55, false);
		break;
	case 0xad:
		k->ctr |= CTR_KBDDIS;
		break;
	case 0xae:
		k->ctr &= (uint8_t)~CTR_KBDDIS;
		break;
	case 0xc0:   /* read input port: keyboard not inhibited */
		push(k, 0x80, false);
		break;
	case 0xd0:   /* read output port */
		push(k, (uint8_t)(k->outport | (k->q_len && !k->q_aux[0] ? 0x10 : 0) |
				  (k->q_len && k->q_aux[0] ? 0x20 : 0)), false);
		break;
	default:
		if (c >= 0xf0) {   /* pulse output lines; bit 0 low pulses reset */
			if (!(c & 1))
				request_reset(k);
		} else {
			log_debug(k->dev.id, "unhandled controller command 0x%02x", c);
		}
		break;
	}
}

static uint8_t status_byte(const struct i8042 *k)
{
	uint8_t s = (uint8_t)(k->status | STS_UNLOCKED);
	if (k->q_len) {
		s |= STS_OBF;
		if (k->q_aux[0])
			s |= STS_AUXDATA;
	}
	return s;
}

static void data_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct i8042 *k = opaque;
	(void)off;
	memset(data, 0xff, size);
	pthread_mutex_lock(&k->lock);
	uint8_t v = pop(k);
	if (!k->q_len)
		k->status &= (uint8_t)~STS_TIMEOUT;
	update_irq(k);
	pthread_mutex_unlock(&k->lock);
	((uint8_t *)data)[0] = v;
}

static void status_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct i8042 *k = opaque;
	(void)off;
	memset(data, 0xff, size);
	pthread_mutex_lock(&k->lock);
	uint8_t v = status_byte(k);
	pthread_mutex_unlock(&k->lock);
	((uint8_t *)data)[0] = v;
}

static void data_port_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct i8042 *k = opaque;
	(void)off;
	(void)size;
	pthread_mutex_lock(&k->lock);
	data_write(k, ((const uint8_t *)data)[0]);
	update_irq(k);
	pthread_mutex_unlock(&k->lock);
}

static void cmd_port_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct i8042 *k = opaque;
	(void)off;
	(void)size;
	pthread_mutex_lock(&k->lock);
	command(k, ((const uint8_t *)data)[0]);
	update_irq(k);
	pthread_mutex_unlock(&k->lock);
}

static void kbc_reset(struct device *d)
{
	struct i8042 *k = to_kbc(d);
	pthread_mutex_lock(&k->lock);
	k->status = 0;
	k->ctr = CTR_KBDINT | CTR_XLATE | CTR_AUXDIS;
	k->outport = OUT_RESET | OUT_A20;
	k->ctl_cmd = k->kbd_cmd = 0;
	k->kbd_set = 2;
	k->kbd_leds = 0;
	k->kbd_enabled = 1;
	k->q_len = 0;
	memset(k->q, 0, sizeof(k->q));
	memset(k->q_aux, 0, sizeof(k->q_aux));
	update_irq(k);
	pthread_mutex_unlock(&k->lock);
}

static int kbc_save(struct device *d, struct state_writer *w)
{
	struct i8042 *k = to_kbc(d);
	pthread_mutex_lock(&k->lock);
	sw_uint(w, "status", k->status);
	sw_uint(w, "ctr", k->ctr);
	sw_uint(w, "outport", k->outport);
	sw_uint(w, "ctl_cmd", k->ctl_cmd);
	sw_uint(w, "kbd_cmd", k->kbd_cmd);
	sw_uint(w, "kbd_set", k->kbd_set);
	sw_uint(w, "kbd_leds", k->kbd_leds);
	sw_uint(w, "kbd_enabled", k->kbd_enabled);
	sw_bytes(w, "queue", k->q, k->q_len);
	sw_bytes(w, "queue_aux", k->q_aux, k->q_len);
	pthread_mutex_unlock(&k->lock);
	return w->err;
}

static int kbc_load(struct device *d, const struct state_reader *r, struct terr *err)
{
	struct i8042 *k = to_kbc(d);
	static const char *const names[] = { "status", "ctr", "outport", "ctl_cmd", "kbd_cmd",
					     "kbd_set", "kbd_leds", "kbd_enabled" };
	const uint64_t defaults[] = { 0, CTR_KBDINT | CTR_XLATE | CTR_AUXDIS, OUT_RESET | OUT_A20,
				      0, 0, 2, 0, 1 };
	const uint64_t max[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 3, 7, 1 };
	uint64_t v[8];
	int ret;

	for (int i = 0; i < 8; i++)
		if ((ret = sr_uint_max(r, names[i], defaults[i], max[i], &v[i], err)))
			return ret;
	if (v[5] == 0)
		return terr_set(err, EINVAL, "%s: scan-code set 0 does not exist", d->id);
	static const uint8_t ctl_cmds[] = { 0, 0x60, 0xd1, 0xd2, 0xd3, 0xd4 };
	static const uint8_t kbd_cmds[] = { 0, 0xed, 0xf0, 0xf3 };
	if (!memchr(ctl_cmds, (int)v[3], sizeof(ctl_cmds)))
		return terr_set(err, EINVAL, "%s: controller command 0x%02x takes no data byte", d->id,
				(unsigned)v[3]);
	if (!memchr(kbd_cmds, (int)v[4], sizeof(kbd_cmds)))
		return terr_set(err, EINVAL, "%s: keyboard command 0x%02x takes no argument", d->id,
				(unsigned)v[4]);
	const void *q, *qa;
	size_t n, na;
	if ((ret = sr_bytes(r, "queue", &q, &n, err)) || (ret = sr_bytes(r, "queue_aux", &qa, &na, err)))
		return ret;
	if (n > QUEUE_SIZE)
		return terr_set(err, EINVAL, "%s: output queue holds %zu bytes, at most %d fit", d->id,
				n, QUEUE_SIZE);
	if (na != n)
		return terr_set(err, EINVAL, "%s: output queue has %zu bytes but %zu source flags",
				d->id, n, na);
	pthread_mutex_lock(&k->lock);
	k->status = (uint8_t)(v[0] & (STS_SYS | STS_CMD | STS_TIMEOUT));
	k->ctr = (uint8_t)v[1];
	k->outport = (uint8_t)v[2];
	k->ctl_cmd = (uint8_t)v[3];
	k->kbd_cmd = (uint8_t)v[4];
	k->kbd_set = (uint8_t)v[5];
	k->kbd_leds = (uint8_t)v[6];
	k->kbd_enabled = (uint8_t)v[7];
	k->q_len = (unsigned)n;
	if (n) {
		memcpy(k->q, q, n);
		for (size_t i = 0; i < n; i++)
			k->q_aux[i] = ((const uint8_t *)qa)[i] != 0;
	}
	k->irq_kbd = k->irq_aux = -1;   /* derived: recomputed */
	update_irq(k);
	pthread_mutex_unlock(&k->lock);
	return 0;
}

static void kbc_destroy(struct device *d)
{
	struct i8042 *k = to_kbc(d);
	pthread_mutex_destroy(&k->lock);
	free(k);
}

const struct device_ops i8042_ops = {
	.type = "i8042",
	.state_version = 1,
	.state_min_version = 1,
	.reset = kbc_reset,
	.save = kbc_save,
	.load = kbc_load,
	.destroy = kbc_destroy,
};

int i8042_create(struct vm *vm, const char *id, struct device **out, struct terr *err)
{
	if (!id)
		id = "i8042.0";
	struct i8042 *k = calloc(1, sizeof(*k));
	if (!k)
		return terr_set(err, ENOMEM, "%s: out of memory", id);
	k->dev.ops = &i8042_ops;
	snprintf(k->dev.id, sizeof(k->dev.id), "%s", id);
	k->dev.priv = k;
	pthread_mutex_init(&k->lock, NULL);
	vm_add_device(vm, &k->dev);
	kbc_reset(&k->dev);
	int r;
	if ((r = bus_register(&vm->pio, I8042_DATA_PORT, 1, data_read, data_port_write, k, k->dev.id,
			      err)) ||
	    (r = bus_register(&vm->pio, I8042_CMD_PORT, 1, status_read, cmd_port_write, k, k->dev.id,
			      err)))
		return r;
	*out = &k->dev;
	return 0;
}

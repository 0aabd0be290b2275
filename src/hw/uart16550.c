#include "hw/uart16550.h"
#include "core/vm.h"
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* register offsets */
enum { RBR_THR = 0, IER = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

#define IER_RDA   0x01    /* received data available */
#define IER_THRE  0x02    /* transmitter holding register empty */
#define IER_RLS   0x04    /* receiver line status */
#define IER_MS    0x08    /* modem status */

#define IIR_NONE  0x01
#define IIR_THRE  0x02
#define IIR_RDA   0x04
#define IIR_RLS   0x06
#define IIR_MS    0x00
#define IIR_FIFO  0xc0    /* FIFOs enabled */

#define FCR_ENABLE   0x01
#define FCR_CLR_RX   0x02
#define FCR_CLR_TX   0x04

#define LCR_DLAB  0x80

#define MCR_DTR   0x01
#define MCR_RTS   0x02
#define MCR_OUT1  0x04
#define MCR_OUT2  0x08
#define MCR_LOOP  0x10

#define LSR_DR    0x01
#define LSR_OE    0x02
#define LSR_THRE  0x20
#define LSR_TEMT  0x40

#define MSR_DCTS  0x01
#define MSR_DDSR  0x02
#define MSR_TERI  0x04
#define MSR_DDCD  0x08
#define MSR_CTS   0x10
#define MSR_DSR   0x20
#define MSR_RI    0x40
#define MSR_DCD   0x80

#define RX_FIFO_SIZE 16

struct uart {
	struct device dev;
	pthread_mutex_t lock;
	uint16_t port;
	unsigned irq;
	int out_fd, in_fd;
	bool in_watched;
	/* guest-visible state: everything below is saved */
	uint8_t ier, iir_fifo, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
	bool thre_pending;     /* THRE interrupt pending (cleared by reading IIR) */
	uint8_t rx[RX_FIFO_SIZE];
	unsigned rx_head, rx_count;
	int irq_level;
};

static struct uart *to_uart(struct device *d)
{
	return (struct uart *)d;
}

/* Highest-priority pending interrupt, as IIR bits 3:0. */
static uint8_t pending_iir(const struct uart *u)
{
	if ((u->ier & IER_RLS) && (u->lsr & LSR_OE))
		return IIR_RLS;
	if ((u->ier & IER_RDA) && u->rx_count)
		return IIR_RDA;
	if ((u->ier & IER_THRE) && u->thre_pending)
		return IIR_THRE;
	if ((u->ier & IER_MS) && (u->msr & 0x0f))
		return IIR_MS;
	return IIR_NONE;
}

static void update_irq(struct uart *u)
{
	/* OUT2 gates the interrupt line to the PIC on a PC */
	int level = pending_iir(u) != IIR_NONE && (u->mcr & MCR_OUT2) && !(u->mcr & MCR_LOOP);
	if (level != u->irq_level) {
		u->irq_level = level;
		if (u->dev.vm)
			vm_irq_line(u->dev.vm, u->irq, level);
	}
}

static unsigned rx_push(struct uart *u, const uint8_t *buf, unsigned len)
{
	unsigned n = 0;
	while (n < len && u->rx_count < RX_FIFO_SIZE) {
		u->rx[(u->rx_head + u->rx_count) % RX_FIFO_SIZE] = buf[n++];
		u->rx_count++;
	}
	if (n < len)
		u->lsr |= LSR_OE;
	if (u->rx_count)
		u->lsr |= LSR_DR;
	return n;
}

static uint8_t rx_pop(struct uart *u)
{
	if (!u->rx_count)
		return 0;
	uint8_t c = u->rx[u->rx_head];
	u->rx_head = (u->rx_head + 1) % RX_FIFO_SIZE;
	if (--u->rx_count == 0)
		u->lsr &= ~LSR_DR;
	return c;
}

static void transmit(struct uart *u, uint8_t c)
{
	if (u->mcr & MCR_LOOP) {
		rx_push(u, &c, 1);
	} else if (u->out_fd >= 0) {
		/* the console is slow compared to the guest; a blocking write keeps
		 * every byte and ordering, which is what a serial log needs */
		for (;;) {
			ssize_t w = write(u->out_fd, &c, 1);
			if (w == 1 || (w < 0 && errno != EINTR))
				break;
		}
	}
	u->thre_pending = true;
}

/* In loopback the modem inputs follow the modem outputs. */
static uint8_t modem_status(const struct uart *u)
{
	if (!(u->mcr & MCR_LOOP))
		return u->msr;
	uint8_t m = u->msr & 0x0f;
	if (u->mcr & MCR_RTS) m |= MSR_CTS;
	if (u->mcr & MCR_DTR) m |= MSR_DSR;
	if (u->mcr & MCR_OUT1) m |= MSR_RI;
	if (u->mcr & MCR_OUT2) m |= MSR_DCD;
	return m;
}

static void uart_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct uart *u = opaque;
	uint8_t v = 0xff;

	memset(data, 0xff, size);
	pthread_mutex_lock(&u->lock);
	switch (off) {
	case RBR_THR:
		v = (u->lcr & LCR_DLAB) ? u->dll : rx_pop(u);
		break;
	case IER:
		v = (u->lcr & LCR_DLAB) ? u->dlm : u->ier;
		break;
	case IIR_FCR:
		v = pending_iir(u) | u->iir_fifo;
		if ((v & 0x0f) == IIR_THRE)
			u->thre_pending = false;   /* reading IIR acknowledges THRE */
		break;
	case LCR: v = u->lcr; break;
	case MCR: v = u->mcr; break;
	case LSR:
		v = u->lsr;
		u->lsr &= ~LSR_OE;
		break;
	case MSR:
		v = modem_status(u);
		u->msr &= 0xf0;   /* reading clears the delta bits */
		break;
	case SCR: v = u->scr; break;
	}
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
	((uint8_t *)data)[0] = v;
}

static void uart_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct uart *u = opaque;
	uint8_t v = ((const uint8_t *)data)[0];
	(void)size;

	pthread_mutex_lock(&u->lock);
	switch (off) {
	case RBR_THR:
		if (u->lcr & LCR_DLAB)
			u->dll = v;
		else
			transmit(u, v);
		break;
	case IER:
		if (u->lcr & LCR_DLAB) {
			u->dlm = v;
		} else {
			/* enabling THRE with an empty transmitter raises it at once */
			if ((v & IER_THRE) && !(u->ier & IER_THRE))
				u->thre_pending = true;
			u->ier = v & 0x0f;
		}
		break;
	case IIR_FCR:
		u->fcr = v;
		if (v & FCR_CLR_RX) {
			u->rx_head = u->rx_count = 0;
			u->lsr &= ~LSR_DR;
		}
		u->iir_fifo = (v & FCR_ENABLE) ? IIR_FIFO : 0;
		break;
	case LCR: u->lcr = v; break;
	case MCR: u->mcr = v & 0x1f; break;
	case LSR: break;   /* read-only on a 16550A */
	case MSR: break;
	case SCR: u->scr = v; break;
	}
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
}

unsigned uart16550_receive(struct device *d, const uint8_t *buf, unsigned len)
{
	struct uart *u = to_uart(d);
	pthread_mutex_lock(&u->lock);
	unsigned n = (u->mcr & MCR_LOOP) ? 0 : rx_push(u, buf, len);
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return n;
}

/* stdin -> receiver. Only what fits in the FIFO is read; the rest stays in
 * the pipe until the guest drains the FIFO (level-triggered epoll retries). */
static void uart_input(void *opaque, uint32_t events)
{
	struct uart *u = opaque;
	uint8_t buf[RX_FIFO_SIZE];

	pthread_mutex_lock(&u->lock);
	unsigned room = RX_FIFO_SIZE - u->rx_count;
	pthread_mutex_unlock(&u->lock);
	if (room == 0) {
		usleep(1000);   /* guest not reading yet; do not spin */
		return;
	}
	ssize_t n = read(u->in_fd, buf, room);
	if (n > 0) {
		uart16550_receive(&u->dev, buf, (unsigned)n);
	} else if (n == 0 || (errno != EAGAIN && errno != EINTR) || (events & (EPOLLHUP | EPOLLERR))) {
		evloop_del(&u->dev.vm->loop, u->in_fd);   /* end of input */
		u->in_watched = false;
	}
}

static void uart_reset(struct device *d)
{
	struct uart *u = to_uart(d);
	pthread_mutex_lock(&u->lock);
	u->ier = u->lcr = u->mcr = u->scr = u->fcr = u->iir_fifo = 0;
	u->dll = 0x0c;   /* 9600 baud */
	u->dlm = 0;
	u->lsr = LSR_THRE | LSR_TEMT;
	u->msr = MSR_DCD | MSR_DSR | MSR_CTS;
	u->thre_pending = false;
	u->rx_head = u->rx_count = 0;
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
}

static int uart_save(struct device *d, struct state_writer *w)
{
	struct uart *u = to_uart(d);
	uint8_t fifo[RX_FIFO_SIZE];

	pthread_mutex_lock(&u->lock);
	for (unsigned i = 0; i < u->rx_count; i++)
		fifo[i] = u->rx[(u->rx_head + i) % RX_FIFO_SIZE];
	sw_uint(w, "ier", u->ier);
	sw_uint(w, "lcr", u->lcr);
	sw_uint(w, "mcr", u->mcr);
	sw_uint(w, "lsr", u->lsr);
	sw_uint(w, "msr", u->msr);
	sw_uint(w, "scr", u->scr);
	sw_uint(w, "dll", u->dll);
	sw_uint(w, "dlm", u->dlm);
	sw_uint(w, "fcr", u->fcr);
	sw_uint(w, "thre_pending", u->thre_pending);
	sw_bytes(w, "rx_fifo", fifo, u->rx_count);
	pthread_mutex_unlock(&u->lock);
	return w->err;
}

static int uart_load(struct device *d, const struct state_reader *r, struct terr *err)
{
	struct uart *u = to_uart(d);
	uint64_t v[10];
	static const char *const names[10] = { "ier", "lcr", "mcr", "lsr", "msr", "scr",
					       "dll", "dlm", "fcr", "thre_pending" };
	const uint64_t defaults[10] = { 0, 0, 0, LSR_THRE | LSR_TEMT, MSR_DCD | MSR_DSR | MSR_CTS,
					0, 0x0c, 0, 0, 0 };
	int ret;

	for (int i = 0; i < 10; i++) {
		ret = sr_uint_max(r, names[i], defaults[i], 0xff, &v[i], err);
		if (ret)
			return ret;
	}
	size_t n;
	const void *fifo;
	ret = sr_bytes(r, "rx_fifo", &fifo, &n, err);
	if (ret)
		return ret;
	if (n > RX_FIFO_SIZE)
		return terr_set(err, EINVAL, "%s: receive FIFO holds %zu bytes, at most %d fit",
				d->id, n, RX_FIFO_SIZE);
	pthread_mutex_lock(&u->lock);
	u->ier = v[0] & 0x0f;
	u->lcr = v[1];
	u->mcr = v[2] & 0x1f;
	u->lsr = v[3];
	u->msr = v[4];
	u->scr = v[5];
	u->dll = v[6];
	u->dlm = v[7];
	u->fcr = v[8];
	u->iir_fifo = (u->fcr & FCR_ENABLE) ? IIR_FIFO : 0;
	u->thre_pending = v[9] != 0;
	u->rx_head = 0;
	u->rx_count = (unsigned)n;
	if (n)
		memcpy(u->rx, fifo, n);
	u->lsr = (u->lsr & ~LSR_DR) | (n ? LSR_DR : 0);
	/* the line level is derived, so it is recomputed rather than saved */
	u->irq_level = -1;
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return 0;
}

static void uart_destroy(struct device *d)
{
	struct uart *u = to_uart(d);
	if (u->in_watched && d->vm)
		evloop_del(&d->vm->loop, u->in_fd);
	pthread_mutex_destroy(&u->lock);
	free(u);
}

const struct device_ops uart16550_ops = {
	.type = "uart16550",
	.state_version = 1,
	.state_min_version = 1,
	.reset = uart_reset,
	.save = uart_save,
	.load = uart_load,
	.destroy = uart_destroy,
};

int uart16550_create(struct vm *vm, const struct uart_params *p, struct device **out,
		     struct terr *err)
{
	struct uart *u = calloc(1, sizeof(*u));
	if (!u)
		return terr_set(err, ENOMEM, "%s: out of memory", p->id);
	u->dev.ops = &uart16550_ops;
	snprintf(u->dev.id, sizeof(u->dev.id), "%s", p->id);
	u->dev.priv = u;
	u->port = p->port;
	u->irq = p->irq;
	u->out_fd = p->out_fd;
	u->in_fd = p->in_fd;
	pthread_mutex_init(&u->lock, NULL);
	vm_add_device(vm, &u->dev);
	uart_reset(&u->dev);
	int r = bus_register(&vm->pio, p->port, 8, uart_read, uart_write, u, u->dev.id, err);
	if (r)
		return r;   /* the VM owns the device now and frees it */
	if (u->in_fd >= 0) {
		r = evloop_add(&vm->loop, u->in_fd, EPOLLIN, uart_input, u);
		if (r == -EPERM) {
			/* a regular file or /dev/null cannot be polled: no input */
			r = 0;
		} else if (r) {
			return terr_set(err, -r, "%s: cannot watch its input: %s", p->id, strerror(-r));
		} else {
			u->in_watched = true;
		}
	}
	*out = &u->dev;
	return 0;
}

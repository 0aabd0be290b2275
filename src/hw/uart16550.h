/* 16550A UART (COM1 at 0x3f8, IRQ 4 by default): transmit to an output fd,
 * receive from an input fd watched by the event loop, interrupts for
 * received data and an empty transmitter, loopback, a 16-byte receive FIFO. */
#ifndef TERN_HW_UART16550_H
#define TERN_HW_UART16550_H

#include <stdint.h>

#include "core/device.h"
#include "util/error.h"

struct vm;

struct uart_params {
	const char *id;       /* "uart.0" */
	uint16_t port;        /* 0x3f8 */
	unsigned irq;         /* 4 */
	int out_fd;           /* where the guest's output goes; -1 discards */
	int in_fd;            /* read for guest input; -1 for none */
};

int uart16550_create(struct vm *vm, const struct uart_params *p, struct device **out,
		     struct terr *err);
/* Feed bytes to the receiver as if they arrived on the wire (tests, the
 * control socket). Returns how many fit in the FIFO. */
unsigned uart16550_receive(struct device *d, const uint8_t *buf, unsigned len);

extern const struct device_ops uart16550_ops;

#endif

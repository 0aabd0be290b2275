#include "hw/test_exit.h"
#include "core/vm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct test_exit {
	struct device dev;
	uint16_t port;
};

static void test_exit_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct test_exit *t = opaque;
	(void)off;
	(void)size;
	vm_request_exit(t->dev.vm, VM_EXIT_TEST, ((const uint8_t *)data)[0]);
}

static void test_exit_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	(void)opaque;
	(void)off;
	for (unsigned i = 0; i < size; i++)
		((uint8_t *)data)[i] = 0xff;
}

/* The port has no state of its own; its section records where it sits so a
 * restore onto a differently configured VM is caught. */
static int test_exit_save(struct device *d, struct state_writer *w)
{
	sw_uint(w, "port", ((struct test_exit *)d)->port);
	return w->err;
}

static int test_exit_load(struct device *d, const struct state_reader *r, struct terr *err)
{
	struct test_exit *t = (struct test_exit *)d;
	uint64_t port;
	int ret = sr_uint(r, "port", t->port, &port, err);
	if (ret)
		return ret;
	if (port != t->port)
		return terr_set(err, EINVAL, "%s: saved at port 0x%llx, configured at 0x%x", d->id,
				(unsigned long long)port, t->port);
	return 0;
}

static void test_exit_destroy(struct device *d)
{
	free(d);
}

const struct device_ops test_exit_ops = {
	.type = "test-exit",
	.state_version = 1,
	.state_min_version = 1,
	.save = test_exit_save,
	.load = test_exit_load,
	.destroy = test_exit_destroy,
};

int test_exit_create(struct vm *vm, const char *id, uint16_t port, struct device **out,
		     struct terr *err)
{
	struct test_exit *t = calloc(1, sizeof(*t));
	if (!t)
		return terr_set(err, ENOMEM, "%s: out of memory", id);
	t->dev.ops = &test_exit_ops;
	snprintf(t->dev.id, sizeof(t->dev.id), "%s", id);
	t->dev.priv = t;
	t->port = port;
	vm_add_device(vm, &t->dev);
	int r = bus_register(&vm->pio, port, 1, test_exit_read, test_exit_write, t, t->dev.id, err);
	if (r)
		return r;
	*out = &t->dev;
	return 0;
}

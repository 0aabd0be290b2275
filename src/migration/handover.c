#include "migration/handover.h"
#include "core/device.h"
#include "core/vm.h"

int mig_release_all(struct vm *vm, struct terr *err)
{
	for (struct device *d = vm->devices; d; d = d->next) {
		if (!d->ops->release)
			continue;
		int r = d->ops->release(d, err);
		if (r)
			return r;
	}
	return 0;
}

int mig_acquire_all(struct vm *vm, unsigned timeout_ms, struct terr *err)
{
	int first = 0;
	for (struct device *d = vm->devices; d; d = d->next) {
		if (!d->ops->acquire)
			continue;
		struct terr e = { 0 };
		int r = d->ops->acquire(d, timeout_ms, &e);
		if (r && !first) {
			first = r;
			terr_set(err, -r, "%s", e.msg);
		}
	}
	return first;
}

#include "util/error.h"

#include <stdio.h>
#include <string.h>

int terr_vset(struct terr *err, int errnum, const char *fmt, va_list ap)
{
	if (errnum <= 0)
		errnum = errnum ? -errnum : 5 /* EIO */;
	if (err && err->code == 0) {
		err->code = -errnum;
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	}
	return -errnum;
}

int terr_set(struct terr *err, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = terr_vset(err, errnum, fmt, ap);
	va_end(ap);
	return r;
}

void terr_prefix(struct terr *err, const char *fmt, ...)
{
	char pre[256], old[sizeof(err->msg)];
	va_list ap;

	if (!err || !err->code)
		return;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof(pre), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	size_t n = strlen(pre);
	if (n >= sizeof(err->msg))
		n = sizeof(err->msg) - 1;
	memcpy(err->msg, pre, n);
	size_t m = strnlen(old, sizeof(old));
	if (m > sizeof(err->msg) - 1 - n)
		m = sizeof(err->msg) - 1 - n;
	memcpy(err->msg + n, old, m);
	err->msg[n + m] = '\0';
}

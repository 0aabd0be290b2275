/* Error reporting: functions return 0 or a negative errno, and when they fail
 * they fill a caller-provided struct terr with one human sentence naming what
 * is wrong and where. No global error state, so two VMs in one process never
 * see each other's messages. */
#ifndef TERN_UTIL_ERROR_H
#define TERN_UTIL_ERROR_H

#include <stdarg.h>

struct terr {
	int code;        /* negative errno of the first failure, 0 if none */
	char msg[512];   /* "memory.size: \"12X\" is not a size (examples: 512M, 2G)" */
};

/* Record an error (if err is not NULL and holds none yet) and return -errnum.
 * errnum is a positive errno value. */
int terr_set(struct terr *err, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int terr_vset(struct terr *err, int errnum, const char *fmt, va_list ap);

/* Prefix an already recorded message: "kernel hello.elf: " + old message. */
void terr_prefix(struct terr *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static inline void terr_clear(struct terr *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
}

#endif

#include "util/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Atomic int log_level = -1;

void log_set_level(enum log_level lvl)
{
	atomic_store(&log_level, (int)lvl);
}

static int current_level(void)
{
	int lvl = atomic_load(&log_level);
	if (lvl >= 0)
		return lvl;
	const char *e = getenv("TERN_LOG");
	lvl = LOG_WARN;
	if (e) {
		if (!strcmp(e, "error")) lvl = LOG_ERROR;
		else if (!strcmp(e, "info")) lvl = LOG_INFO;
		else if (!strcmp(e, "debug")) lvl = LOG_DEBUG;
	}
	atomic_store(&log_level, lvl);
	return lvl;
}

void log_msg(enum log_level lvl, const char *tag, const char *fmt, ...)
{
	static const char *names[] = { "error", "warning", "info", "debug" };
	char line[1024];
	va_list ap;

	if ((int)lvl > current_level())
		return;
	va_start(ap, fmt);
	int n = snprintf(line, sizeof(line), "tern: %s: %s: ", tag, names[lvl]);
	if (n > 0 && (size_t)n < sizeof(line))
		vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	/* one write per line so lines from several threads do not interleave */
	fprintf(stderr, "%s\n", line);
}

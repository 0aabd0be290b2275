#include "util/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Debug lines carry the time since the process started (this runs before
 * main): where start-up time goes, with TERN_LOG=debug. */
static struct timespec log_start;

__attribute__((constructor)) static void log_clock_start(void)
{
	clock_gettime(CLOCK_MONOTONIC, &log_start);
}

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
	int n;
	if (current_level() == LOG_DEBUG) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		double ms = (double)(now.tv_sec - log_start.tv_sec) * 1e3 +
			    (double)(now.tv_nsec - log_start.tv_nsec) / 1e6;
		n = snprintf(line, sizeof(line), "tern: %.1f ms: %s: %s: ", ms, tag, names[lvl]);
	} else {
		n = snprintf(line, sizeof(line), "tern: %s: %s: ", tag, names[lvl]);
	}
	if (n > 0 && (size_t)n < sizeof(line))
		vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	/* one write per line so lines from several threads do not interleave */
	fprintf(stderr, "%s\n", line);
}

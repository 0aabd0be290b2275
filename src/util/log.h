/* Logging to stderr with a level and a component tag. The level is a
 * process-wide setting read from TERN_LOG (error|warn|info|debug); it only
 * filters output, so VMs sharing a process still behave independently.
 * At debug, each line also gives the milliseconds since tern started. */
#ifndef TERN_UTIL_LOG_H
#define TERN_UTIL_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_msg(enum log_level lvl, const char *tag, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void log_set_level(enum log_level lvl);

#define log_err(tag, ...)   log_msg(LOG_ERROR, tag, __VA_ARGS__)
#define log_warn(tag, ...)  log_msg(LOG_WARN, tag, __VA_ARGS__)
#define log_info(tag, ...)  log_msg(LOG_INFO, tag, __VA_ARGS__)
#define log_debug(tag, ...) log_msg(LOG_DEBUG, tag, __VA_ARGS__)

#endif

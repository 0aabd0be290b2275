/* -o name=value and -k FILE. */
#include "config/config_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FILE (4 * 1024 * 1024)

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* Trim s[0..len) in place and NUL-terminate; returns the start. */
static char *trim(char *s, size_t len)
{
	while (len && is_space(*s))
		s++, len--;
	while (len && is_space(s[len - 1]))
		len--;
	s[len] = '\0';
	return s;
}

/* Split "name = value" (modified in place). */
static bool split(char *line, char **name, char **value)
{
	char *eq = strchr(line, '=');
	if (!eq)
		return false;
	*name = trim(line, (size_t)(eq - line));
	*value = trim(eq + 1, strlen(eq + 1));
	return **name != '\0';
}

int config_set_option(struct config *cfg, const char *opt, struct terr *err)
{
	char *copy = strdup(opt), *name, *value;
	int r;

	if (!copy)
		return terr_set(err, ENOMEM, "out of memory");
	if (!split(copy, &name, &value))
		r = terr_set(err, EINVAL, "-o \"%.200s\": expected name=value", opt);
	else
		r = config_set(cfg, name, value, err);
	free(copy);
	return r;
}

int config_load_string(struct config *cfg, const char *text, size_t len,
		       const char *origin, struct terr *err)
{
	struct config *tmp = config_clone(cfg);
	char *line = malloc(len + 1);
	unsigned lineno = 0;
	int r = 0;

	if (!tmp || !line) {
		r = terr_set(err, ENOMEM, "%s: out of memory", origin);
		goto out;
	}
	for (size_t pos = 0; pos < len; ) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t ll = nl ? (size_t)(nl - text - pos) : len - pos;
		char *name, *value;

		lineno++;
		memcpy(line, text + pos, ll);
		pos += ll + 1;
		if (memchr(line, '\0', ll)) {
			r = terr_set(err, EINVAL, "%s:%u: line contains a NUL byte", origin, lineno);
			goto out;
		}
		char *s = trim(line, ll);
		if (!*s || *s == '#')
			continue;
		if (!split(s, &name, &value)) {
			r = terr_set(err, EINVAL, "%s:%u: expected name=value, got \"%.200s\"",
				     origin, lineno, s);
			goto out;
		}
		r = config_set(tmp, name, value, err);
		if (r < 0) {
			terr_prefix(err, "%s:%u: ", origin, lineno);
			goto out;
		}
	}
	/* all lines good: take the new tree */
	struct config swap = *cfg;
	*cfg = *tmp;
	*tmp = swap;
out:
	config_free(tmp);
	free(line);
	return r;
}

int config_load_file(struct config *cfg, const char *path, struct terr *err)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int r, fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return terr_set(err, errno, "%s: %s", path, strerror(errno));
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			if (cap > MAX_FILE + 1) {
				r = terr_set(err, EFBIG, "%s: larger than %d bytes", path, MAX_FILE);
				goto out;
			}
			char *nb = realloc(buf, cap);
			if (!nb) {
				r = terr_set(err, ENOMEM, "%s: out of memory", path);
				goto out;
			}
			buf = nb;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = terr_set(err, errno, "%s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	r = config_load_string(cfg, buf ? buf : "", len, path, err);
out:
	free(buf);
	close(fd);
	return r;
}

#include "docs_table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

char *docs_read(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t cap = 0;

	*len = 0;
	if (!f)
		return NULL;
	for (;;) {
		if (*len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			char *nb = realloc(buf, cap);
			if (!nb)
				break;
			buf = nb;
		}
		size_t n = fread(buf + *len, 1, cap - *len - 1, f);
		*len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	if (buf)
		buf[*len] = '\0';
	return buf;
}

char *docs_generate(void)
{
	char *s = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&s, &len);

	if (!f)
		return NULL;
	config_print_markdown(f);
	fclose(f);
	return s;
}

int docs_find(const char *text, size_t *start, size_t *end)
{
	const char *b = strstr(text, DOCS_TABLE_BEGIN);
	if (!b)
		return -1;
	b += strlen(DOCS_TABLE_BEGIN);
	const char *e = strstr(b, DOCS_TABLE_END);
	if (!e)
		return -1;
	*start = (size_t)(b - text);
	*end = (size_t)(e - text);
	return 0;
}

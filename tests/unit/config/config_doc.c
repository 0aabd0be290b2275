/* config-doc: print the settings table of docs/config.md, or with
 * --update FILE rewrite the table between its markers in FILE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "docs_table.h"

int main(int argc, char **argv)
{
	char *table = docs_generate();
	if (!table)
		return 1;
	if (argc == 1) {
		fputs(table, stdout);
		free(table);
		return 0;
	}
	if (argc != 3 || strcmp(argv[1], "--update")) {
		fprintf(stderr, "usage: config-doc [--update docs/config.md]\n");
		return 2;
	}
	size_t len, start, end;
	char *text = docs_read(argv[2], &len);
	if (!text || docs_find(text, &start, &end) < 0) {
		fprintf(stderr, "%s: cannot read it or it lacks the table markers\n", argv[2]);
		return 1;
	}
	FILE *f = fopen(argv[2], "w");
	if (!f || fwrite(text, 1, start, f) != start || fputs(table, f) < 0 ||
	    fwrite(text + end, 1, len - end, f) != len - end || fclose(f) != 0) {
		perror(argv[2]);
		return 1;
	}
	free(text);
	free(table);
	return 0;
}

/* A JSON view of a snapshot file, without starting a VM ("ternctl snapshot
 * inspect"): header, sections with their fields, the embedded configuration
 * and RAM statistics. docs/snapshot-format.md describes the object. */
#ifndef TERN_SNAPSHOT_INSPECT_H
#define TERN_SNAPSHOT_INSPECT_H

#include <jansson.h>
#include <stdbool.h>

#include "snapshot/snapfile.h"
#include "util/error.h"

/* Open `path` (leniently: a damaged section is shown with "checksum_ok":
 * false and the object's "damage" says what is wrong) and describe it.
 * NULL with err set when the file cannot be read as a snapshot at all. */
json_t *snapshot_inspect_file(const char *path, struct terr *err);

/* The same for an open snapshot; RAM statistics need s->fd (they are
 * left out without it). */
json_t *snapshot_inspect(const struct snapshot *s);

/* The fields of one blob, as an array of {name, type, ...}: "uint" with
 * "value", "str" with "value", "bytes" with "length" and "hex", or
 * "fields" (a BYTES field that parses as a nested blob of named fields)
 * with "length" and "fields". NULL when the blob does not parse (err set). */
json_t *snapshot_inspect_fields(const void *blob, size_t len, const char *what, struct terr *err);

#endif

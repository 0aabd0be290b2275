/* SPDX-License-Identifier: MIT */
/* tern-img: shared helpers of the subcommands. */
#ifndef TERN_IMG_H
#define TERN_IMG_H

#include <stdbool.h>
#include <stdint.h>

#include "vdisk.h"

/* exit codes follow qemu-img */
enum { IMG_OK = 0, IMG_ERR = 1 };

int img_create(int argc, char **argv);
int img_info(int argc, char **argv);
int img_convert(int argc, char **argv);
int img_check(int argc, char **argv);
int img_compare(int argc, char **argv);
int img_map(int argc, char **argv);
int img_resize(int argc, char **argv);
int img_snapshot(int argc, char **argv);
int img_bench(int argc, char **argv);
int img_rebase(int argc, char **argv);
int img_commit(int argc, char **argv);

void img_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int img_parse_size(const char *s, uint64_t *out);
/* Parse "-o a=b,c=d" into opts; returns 0 or prints an error and returns -1. */
int img_parse_create_opts(const char *s, struct vdisk_create_opts *o);
/* Open with an explicit format, or probe (the tool probes like qemu-img). */
struct vdisk *img_open(const char *path, const char *fmt, uint32_t flags);
void img_human_size(uint64_t v, char *buf, size_t len);
bool img_wants_help(int argc, char **argv, const char *usage);
void img_progress(double pct);
void img_print_snapshots(const struct vdisk_snapshot *sn, unsigned n);

/* true if all bytes are zero */
bool vd_zero(const void *buf, uint64_t len);

#endif

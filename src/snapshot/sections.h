/* Names and versions of the snapshot sections tern itself defines; device
 * sections are named by device id and typed by device_ops.type. */
#ifndef TERN_SNAPSHOT_SECTIONS_H
#define TERN_SNAPSHOT_SECTIONS_H

#define SECTION_CONFIG          "config"
#define SECTION_CONFIG_VERSION  1
#define SECTION_VM              "vm"
#define SECTION_VCPU            "vcpu"
#define SECTION_RAM             "ram"
#define SECTION_RAM_VERSION     1

#endif

#include "machine/machine.h"
#include "arch/x86/acpi.h"
#include "arch/x86/boot_regs.h"
#include "arch/x86/bzimage.h"
#include "arch/x86/cpu.h"
#include "arch/x86/cpu_state.h"
#include "arch/x86/elf_pvh.h"
#include "core/vcpu.h"
#include "hw/acpi_pm.h"
#include "hw/i8042.h"
#include "hw/rtc_cmos.h"
#include "hw/test_exit.h"
#include "pci/pci.h"
#include "virtio/virtio_rng.h"
#include "virtio/virtio_net.h"
#include "virtio/virtio_blk.h"
#include "virtio/virtio_console.h"
#include "hw/uart16550.h"
#include "util/log.h"
#include "control/control.h"
#include "snapshot/snapshot_cmds.h"
#include "migration/migration.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define COM1_PORT 0x3f8
#define COM1_IRQ  4

static int setup_vcpus(struct machine *m, struct terr *err)
{
	m->cpuid = x86_supported_cpuid(&m->kvm, err);
	if (!m->cpuid)
		return err ? err->code : -EINVAL;
	for (unsigned i = 0; i < m->vm.nvcpus; i++) {
		int r = x86_vcpu_setup(m->vm.vcpus[i].fd, i, m->vm.nvcpus, m->cpuid, err);
		if (r)
			return r;
	}
	return 0;
}

static void tty_restore(struct machine *m)
{
	if (m->tty_raw) {
		tcsetattr(STDIN_FILENO, TCSANOW, &m->tty_saved);
		m->tty_raw = false;
	}
}

/* Keystrokes go to the guest one by one; ^C still reaches tern (ISIG). */
static void tty_make_raw(struct machine *m)
{
	struct termios t;
	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &m->tty_saved) < 0)
		return;
	t = m->tty_saved;
	t.c_lflag &= ~(ICANON | ECHO);
	t.c_iflag &= ~(ICRNL);
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0)
		m->tty_raw = true;
}

static int setup_console(struct machine *m, struct terr *err)
{
	const char *path;
	bool input;
	int r = config_get_str(m->cfg, "console.path", &path, err);
	if (!r)
		r = config_get_bool(m->cfg, "console.input", &input, err);
	if (r)
		return r;
	/* --- virtio-console: with vconsole.path=stdio, stdin goes to hvc0 --- */
	const char *vpath;
	if ((r = config_get_path(m->cfg, "vconsole.path", &vpath, err)))
		return r;
	bool hvc_stdin = vpath && !strcmp(vpath, "stdio") && input;
	if (hvc_stdin)
		tty_make_raw(m);
	/* --- end virtio-console --- */

	struct uart_params p = { .id = "uart.0", .port = COM1_PORT, .irq = COM1_IRQ,
				 .out_fd = STDOUT_FILENO, .in_fd = -1 };
	if (path && strcmp(path, "stdio") != 0) {
		/* a restored guest carries on writing after what it wrote before */
		m->console_fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC |
				     (m->restoring ? O_APPEND : O_TRUNC), 0644);
		if (m->console_fd < 0)
			return terr_set(err, errno, "console.path: cannot open \"%s\": %s", path,
					strerror(errno));
		p.out_fd = m->console_fd;
	} else if (input && !hvc_stdin) {
		p.in_fd = STDIN_FILENO;
		tty_make_raw(m);
	}
	struct device *d;
	return uart16550_create(&m->vm, &p, &d, err);
}

/* disk.N.path names an image that exists: checked before the device is
 * built so that a missing image (a restore whose disk has moved, a typo)
 * gets one line naming the setting, and a restore says how to point it at
 * another image. */
static int check_disk_path(struct machine *m, unsigned index, struct terr *err)
{
	char key[64];
	const char *path;
	struct stat st;
	snprintf(key, sizeof(key), "disk.%u.path", index);
	int r = config_get_path(m->cfg, key, &path, err);
	if (r || !path || stat(path, &st) == 0)
		return r;
	int e = errno;
	if (m->restoring)
		return terr_set(err, e, "%s: cannot open image \"%s\": %s (a restored or incoming "
				"machine needs its disk, or another image of the same size named with "
				"-o %s=FILE)",
				key, path, strerror(e), key);
	return terr_set(err, e, "%s: cannot open image \"%s\": %s", key, path, strerror(e));
}

/* The platform every VM has, in a fixed order: device ids (acpi-pm.0,
 * i8042.0, rtc.0, pci.0, ...) are what a restore matches sections on. */
static int setup_platform(struct machine *m, const struct acpi_config *acfg, struct terr *err)
{
	struct device *d;
	struct pci_host_params pp;
	bool rng;
	int r = acpi_pm_create(&m->vm, NULL, &d, err);
	if (!r)
		r = i8042_create(&m->vm, NULL, &d, err);
	if (!r)
		r = rtc_cmos_create(&m->vm, NULL, &d, err);
	if (r)
		return r;
	pci_host_params_from_acpi(&pp, acfg);
	r = pci_host_create(&m->vm, &pp, &m->pci_host, err);
	if (!r)
		r = config_get_bool(m->cfg, "rng.enable", &rng, err);
	if (!r && rng)
		r = virtio_rng_create(&m->vm, pci_host_bus(m->pci_host), "rng.0", -1, &d, err);
	/* --- virtio-net (src/virtio/virtio_net.c): net.N for every N configured --- */
	unsigned nets[CONFIG_MAX_INDEX + 1];
	size_t nnet = r ? 0 : config_indices(m->cfg, "net", nets, CONFIG_MAX_INDEX + 1);
	for (size_t i = 0; !r && i < nnet; i++)
		r = virtio_net_create_from_config(&m->vm, pci_host_bus(m->pci_host), m->cfg, nets[i],
						  &d, err);
	/* --- end virtio-net --- */
	/* --- virtio-blk and virtio-console (src/virtio/virtio_blk.c,
	 * virtio_console.c): blk.N for every disk.N in index order, then
	 * vconsole.0 when vconsole.path is set --- */
	unsigned disks[CONFIG_MAX_INDEX + 1];
	size_t ndisk = r ? 0 : config_indices(m->cfg, "disk", disks, CONFIG_MAX_INDEX + 1);
	for (size_t i = 0; !r && i < ndisk; i++) {
		r = check_disk_path(m, disks[i], err);
		if (!r)
			r = virtio_blk_create_from_config(&m->vm, pci_host_bus(m->pci_host), m->cfg,
							  disks[i], m->incoming, &d, err);
	}
	bool con_input;
	if (!r)
		r = config_get_bool(m->cfg, "console.input", &con_input, err);
	if (!r)
		r = virtio_console_create_from_config(&m->vm, pci_host_bus(m->pci_host), m->cfg,
						      m->restoring, con_input, &d, err);
	/* --- end virtio-blk, virtio-console --- */
	return r;
}

static int load_kernel(struct machine *m, const struct acpi_config *acfg, struct terr *err)
{
	const char *kernel, *initrd, *cmdline;
	unsigned unpack;
	int r = config_get_path(m->cfg, "kernel", &kernel, err);
	if (!r)
		r = config_get_path(m->cfg, "initrd", &initrd, err);
	if (!r)
		r = config_get_str(m->cfg, "cmdline", &cmdline, err);
	if (!r)
		r = config_get_enum(m->cfg, "boot.unpack", &unpack, err);
	if (r)
		return r;
	if (!kernel)
		return terr_set(err, EINVAL, "kernel: no kernel given (set -o kernel=PATH)");
	if (!cmdline)
		cmdline = "";

	struct boot_entry entry;
	uint64_t rsdp;
	if (access(kernel, R_OK) < 0)
		return terr_set(err, errno, "kernel %s: %s", kernel, strerror(errno));
	r = acpi_build(&m->vm.mem, acfg, &rsdp, err);
	if (r)
		return r;
	/* an ELF boots through PVH, anything else must be a bzImage */
	if (elf_pvh_file_is_elf(kernel))
		r = pvh_boot_load(&m->vm.mem, kernel, initrd, cmdline, rsdp, &entry, err);
	else
		r = bzimage_boot_load(&m->vm.mem, kernel, initrd, cmdline, rsdp,
				      &(struct bzimage_opts){ .host_unpack = unpack == 0 },
				      &entry, err);
	if (r)
		return r;

	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct vcpu *bsp = &m->vm.vcpus[0];
	if (ioctl(bsp->fd, KVM_GET_SREGS, &sregs) < 0)
		return terr_set(err, errno, "KVM_GET_SREGS: %s", strerror(errno));
	r = boot_regs_setup(&m->vm.mem, &entry, &regs, &sregs, err);
	if (r)
		return r;
	if (ioctl(bsp->fd, KVM_SET_SREGS, &sregs) < 0)
		return terr_set(err, errno, "KVM_SET_SREGS: %s", strerror(errno));
	if (ioctl(bsp->fd, KVM_SET_REGS, &regs) < 0)
		return terr_set(err, errno, "KVM_SET_REGS: %s", strerror(errno));
	return 0;
}

static void on_signal(void *opaque, uint32_t events)
{
	struct machine *m = opaque;
	struct signalfd_siginfo si;
	(void)events;
	if (read(m->signal_fd, &si, sizeof(si)) != sizeof(si))
		return;
	log_info("machine", "signal %u: stopping the VM", si.ssi_signo);
	vm_request_exit(&m->vm, VM_EXIT_QUIT, 128 + (int)si.ssi_signo);
}

/* SIGINT, SIGTERM and SIGHUP end the VM in order (terminal restored, files
 * closed) instead of killing the process mid-write. They are blocked in
 * every thread and read from a signalfd on the event loop. */
static int setup_signals(struct machine *m, struct terr *err)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	m->signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (m->signal_fd < 0)
		return terr_set(err, errno, "signalfd: %s", strerror(errno));
	int r = evloop_add(&m->vm.loop, m->signal_fd, EPOLLIN, on_signal, m);
	if (r)
		return terr_set(err, -r, "cannot watch signals: %s", strerror(-r));
	return 0;
}

int machine_build(struct machine *m, struct config *cfg, const struct machine_restore *restore,
		  struct terr *err)
{
	uint64_t mem_size;
	int64_t cpus;
	bool test_exit;
	int r;

	memset(m, 0, sizeof(*m));
	m->cfg = cfg;
	m->restoring = restore != NULL;
	m->incoming = restore && restore->incoming;
	m->console_fd = -1;
	m->signal_fd = -1;
	m->kvm.fd = -1;

	r = config_check(cfg, err);
	if (!r)
		r = config_get_size(cfg, "memory.size", &mem_size, err);
	if (!r)
		r = config_get_int(cfg, "cpus", &cpus, err);
	if (!r)
		r = config_get_bool(cfg, "test_exit.enable", &test_exit, err);
	if (r)
		return r;

	r = kvm_sys_open(&m->kvm, "/dev/kvm", err);
	if (r)
		return r;
	r = vm_create(&m->vm, &m->kvm, mem_size, (unsigned)cpus, restore ? &restore->ram : NULL, err);
	if (r)
		goto fail;
	m->vm_created = true;
	log_debug("machine", "VM created: %llu MiB of RAM, %u vCPU%s",
		  (unsigned long long)(mem_size >> 20), (unsigned)cpus, cpus == 1 ? "" : "s");
	r = setup_vcpus(m, err);
	if (r)
		goto fail;
	r = x86_msr_index_list(&m->kvm, &m->msr_list, &m->nmsrs, err);
	if (r)
		goto fail;
	r = setup_signals(m, err);
	if (r)
		goto fail;
	r = setup_console(m, err);
	if (r)
		goto fail;
	if (test_exit) {
		struct device *d;
		r = test_exit_create(&m->vm, "test-exit.0", TEST_EXIT_PORT, &d, err);
		if (r)
			goto fail;
	}
	struct acpi_config acfg;
	acpi_config_defaults(&acfg, &m->vm.mem, (unsigned)cpus);
	r = setup_platform(m, &acfg, err);
	if (r)
		goto fail;
	/* a restored guest has its tables, kernel and registers in the snapshot */
	if (!restore) {
		r = load_kernel(m, &acfg, err);
		if (r)
			goto fail;
		log_debug("machine", "kernel, initrd and tables loaded");
	}
	/* --- control socket (src/control): before the vCPUs start --- */
	r = control_start(&m->vm, cfg, &m->control, err);
	if (r)
		goto fail;
	r = snapshot_cmds_register(m, err);
	if (r)
		goto fail;
	r = migration_cmds_register(m, err);
	if (r)
		goto fail;
	/* --- end control socket --- */
	return 0;
fail:
	machine_destroy(m);
	return r;
}

int machine_run(struct machine *m, bool paused, struct terr *err)
{
	int r = vm_start(&m->vm, paused, err);
	int status = vm_wait(&m->vm);
	if (r)
		return TERN_EXIT_HOST_ERROR;
	if (m->vm.exit_reason == VM_EXIT_RESET)
		log_info("machine", "the guest asked for a reset");
	return status;
}

void machine_destroy(struct machine *m)
{
	/* --- control socket (src/control): closed while the VM it reports on
	 * still exists, and once the event loop no longer runs --- */
	if (m->control && m->vm_created && m->vm.running) {
		vm_request_exit(&m->vm, VM_EXIT_QUIT, 0);
		vm_wait(&m->vm);
	}
	snapshot_cmds_stop(m);   /* joins a save in progress */
	migration_cmds_stop(m);  /* joins a migration in progress */
	control_server_destroy(m->control);
	m->control = NULL;
	/* --- end control socket --- */
	if (m->vm_created)
		vm_destroy(&m->vm);
	m->vm_created = false;
	tty_restore(m);
	free(m->cpuid);
	m->cpuid = NULL;
	free(m->msr_list);
	m->msr_list = NULL;
	if (m->console_fd >= 0)
		close(m->console_fd);
	if (m->signal_fd >= 0)
		close(m->signal_fd);
	m->console_fd = m->signal_fd = -1;
	kvm_sys_close(&m->kvm);
}

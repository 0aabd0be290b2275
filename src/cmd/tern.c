/* tern: run a VM described by -k FILE and -o name=value settings. */
#include "config/config.h"
#include "control/control.h"
#include "core/vm.h"
#include "machine/machine.h"
#include "snapshot/snapshot.h"
#include "migration/migration.h"

#include <getopt.h>
#include <stdbool.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tern [-k FILE] [-o NAME=VALUE]... [options]\n"
		"       tern restore SNAPSHOT [-o NAME=VALUE]... [--paused]\n"
		"       tern receive --listen tcp:HOST:PORT|unix:PATH [-o NAME=VALUE]...\n"
		"\n"
		"Runs one virtual machine. Settings come from -k files (one NAME=VALUE per\n"
		"line) and -o options, applied in command-line order; later ones win.\n"
		"\n"
		"  -k, --config FILE       read settings from FILE\n"
		"  -o, --set NAME=VALUE    set one setting\n"
		"      --dump-config[=json]  print the resulting settings and exit\n"
		"      --help-config       list every setting with its type and default\n"
		"  -h, --help              this text\n"
		"  -V, --version           print the version\n"
		"\n"
		"Example: tern -o kernel=hello.elf -o memory.size=256M -o test_exit.enable=on\n"
		"Exit status: the guest's (power-off 0, or the test-exit code); 1 for a\n"
		"setup error, 2 triple fault, 3 KVM internal error, 4 host error.\n");
}

/* tern restore FILE [-o NAME=VALUE]... [--paused] */
static int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "set", required_argument, NULL, 'o' },
		{ "paused", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char **overrides = calloc((size_t)argc + 1, sizeof(char *));
	int noverrides = 0, c;
	bool paused = false;
	struct terr err = { 0 };

	if (!overrides) {
		fprintf(stderr, "tern: out of memory\n");
		return TERN_EXIT_SETUP_ERROR;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			overrides[noverrides++] = optarg;
			break;
		case 'p':
			paused = true;
			break;
		case 'h':
			printf("usage: tern restore SNAPSHOT [-o NAME=VALUE]... [--paused]\n"
			       "Rebuilds the VM from the configuration embedded in SNAPSHOT (settings\n"
			       "given with -o override it: disk paths, console.path, control.path...),\n"
			       "loads its state and runs it; --paused waits for a resume first.\n"
			       "RAM is mapped from the file lazily unless -o snapshot.eager=on.\n");
			free(overrides);
			return 0;
		default:
			free(overrides);
			return TERN_EXIT_SETUP_ERROR;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "tern restore: give exactly one snapshot file (tern restore --help)\n");
		free(overrides);
		return TERN_EXIT_SETUP_ERROR;
	}
	struct machine m;
	struct config *cfg;
	if (snapshot_restore(argv[optind], overrides, noverrides, &m, &cfg, &err)) {
		fprintf(stderr, "tern: %s\n", err.msg);
		free(overrides);
		return TERN_EXIT_SETUP_ERROR;
	}
	free(overrides);
	/* "ternctl resume" releases the pause of a VM restored paused */
	if (paused)
		control_adopt_pause(m.control);
	int status = machine_run(&m, paused, &err);
	if (err.code)
		fprintf(stderr, "tern: %s\n", err.msg);
	machine_destroy(&m);
	config_free(cfg);
	return status;
}

/* --- migration (src/migration) --- */
/* tern receive --listen ADDR [-o NAME=VALUE]... */
static int cmd_receive(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "set", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char **overrides = calloc((size_t)argc + 1, sizeof(char *));
	const char *listen = NULL;
	int noverrides = 0, c;

	if (!overrides) {
		fprintf(stderr, "tern: out of memory\n");
		return TERN_EXIT_SETUP_ERROR;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "l:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen = optarg;
			break;
		case 'o':
			overrides[noverrides++] = optarg;
			break;
		case 'h':
			printf("usage: tern receive --listen tcp:HOST:PORT|unix:PATH [-o NAME=VALUE]...\n"
			       "Waits for one migration (ternctl migrate on the source), builds the VM from\n"
			       "the configuration the source sends, with the -o settings applied over it\n"
			       "(console.path, control.path, disk paths: whatever differs on this host),\n"
			       "receives its RAM and state, then runs it. Port 0 picks a free port; the\n"
			       "address listened on is printed on stderr. Exit status: the guest's, as for\n"
			       "tern; 1 when the migration did not complete (nothing was started).\n");
			free(overrides);
			return 0;
		default:
			free(overrides);
			return TERN_EXIT_SETUP_ERROR;
		}
	}
	if (!listen || optind != argc) {
		fprintf(stderr, "tern receive: give --listen tcp:HOST:PORT or unix:PATH, and no other "
			"argument (tern receive --help)\n");
		free(overrides);
		return TERN_EXIT_SETUP_ERROR;
	}
	int status = migration_receive(listen, overrides, noverrides);
	free(overrides);
	return status;
}
/* --- end migration --- */

int main(int argc, char **argv)
{
	enum { OPT_HELP_CONFIG = 256, OPT_DUMP_CONFIG };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'k' },
		{ "set", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "help-config", no_argument, NULL, OPT_HELP_CONFIG },
		{ "dump-config", optional_argument, NULL, OPT_DUMP_CONFIG },
		{ NULL, 0, NULL, 0 },
	};
	struct terr err = { 0 };
	const char *dump = NULL;
	int c, r;

	if (argc > 1 && !strcmp(argv[1], "restore"))
		return cmd_restore(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "receive"))
		return cmd_receive(argc - 1, argv + 1);

	struct config *cfg = config_new();
	if (!cfg) {
		fprintf(stderr, "tern: out of memory\n");
		return TERN_EXIT_SETUP_ERROR;
	}
	while ((c = getopt_long(argc, argv, "k:o:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			r = config_load_file(cfg, optarg, &err);
			break;
		case 'o':
			r = config_set_option(cfg, optarg, &err);
			break;
		case 'h':
			usage(stdout);
			config_free(cfg);
			return 0;
		case 'V':
			printf("tern %s\n", TERN_VERSION);
			config_free(cfg);
			return 0;
		case OPT_HELP_CONFIG:
			config_print_help(stdout);
			config_free(cfg);
			return 0;
		case OPT_DUMP_CONFIG:
			dump = optarg ? optarg : "kv";
			r = 0;
			break;
		default:
			usage(stderr);
			config_free(cfg);
			return TERN_EXIT_SETUP_ERROR;
		}
		if (r) {
			fprintf(stderr, "tern: %s\n", err.msg);
			config_free(cfg);
			return TERN_EXIT_SETUP_ERROR;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tern: unexpected argument \"%s\" (settings are given with -o NAME=VALUE)\n",
			argv[optind]);
		config_free(cfg);
		return TERN_EXIT_SETUP_ERROR;
	}
	if (dump) {
		if (config_check(cfg, &err)) {
			fprintf(stderr, "tern: %s\n", err.msg);
			config_free(cfg);
			return TERN_EXIT_SETUP_ERROR;
		}
		if (!strcmp(dump, "json")) {
			json_t *j = config_to_json(cfg);
			char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
			if (s)
				printf("%s\n", s);
			free(s);
			json_decref(j);
		} else {
			config_dump_kv(cfg, stdout);
		}
		config_free(cfg);
		return 0;
	}

	/* on_reboot=restart: a guest reset rebuilds the machine from its
	 * configuration and boots it again, as a cold start would */
	unsigned on_reboot = 0;
	struct machine m;
	int status;
	for (;;) {
		r = machine_build(&m, cfg, NULL, &err);
		if (!r)
			r = config_get_enum(cfg, "on_reboot", &on_reboot, &err);
		if (r) {
			fprintf(stderr, "tern: %s\n", err.msg);
			config_free(cfg);
			return TERN_EXIT_SETUP_ERROR;
		}
		status = machine_run(&m, false, &err);
		if (err.code)
			fprintf(stderr, "tern: %s\n", err.msg);
		bool again = m.vm.exit_reason == VM_EXIT_RESET && on_reboot == 1 && !err.code;
		machine_destroy(&m);
		if (!again)
			break;
		fprintf(stderr, "tern: the guest rebooted; on_reboot=restart boots it again\n");
	}
	config_free(cfg);
	return status;
}

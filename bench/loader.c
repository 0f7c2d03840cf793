// SPDX-License-Identifier: Apache-2.0
/*
 * The floor for bench.py: the least work a libbpf program can do to load, attach and pin one
 * tracepoint program N times, so bpfman's numbers can be read against it.
 *
 *   loader load OBJ PROG GROUP/NAME[,GROUP/NAME...] N PINDIR
 *       Opens and loads OBJ N separate times (bpfman loads once per attach point, so one shared
 *       load would not be the same work), attaches program PROG of load i to the i-th tracepoint
 *       of the list, round robin, and pins it as PINDIR/<i>/prog, its link as PINDIR/<i>/link and
 *       its maps as PINDIR/<i>/maps/<map>. The list exists because the kernel allows at most 64
 *       programs on one tracepoint (BPF_TRACE_MAX_PROGS).
 *   loader cleanup PINDIR
 *       Removes PINDIR and everything below it. Unpinning the links detaches the programs and the
 *       kernel then frees them and their maps.
 *
 * Prints nothing but errors; exits 0 on success. On a failed load the pins already made are left
 * for `cleanup`, as bench.py always runs it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#define MAX_TPS 256

struct tracepoint {
	char *group;
	char *name;
};

/* libbpf reports failures at WARN level; INFO and DEBUG would only add noise to the timings. */
static int print_errors_only(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level != LIBBPF_WARN)
		return 0;
	return vfprintf(stderr, fmt, args);
}

static int usage(void)
{
	fprintf(stderr, "usage: loader load OBJ PROG GROUP/NAME[,GROUP/NAME...] N PINDIR\n"
			"       loader cleanup PINDIR\n");
	return 2;
}

/* mkdir that succeeds when the directory exists: bpffs supports plain mkdir(2). */
static int ensure_dir(const char *path)
{
	if (mkdir(path, 0700) && errno != EEXIST) {
		fprintf(stderr, "loader: mkdir %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* dir/leaf into out; a path too long for bpffs is an error, never a silently truncated pin. */
static int join(char *out, size_t size, const char *dir, const char *leaf)
{
	int len = snprintf(out, size, "%s/%s", dir, leaf);

	if (len < 0 || (size_t)len >= size) {
		fprintf(stderr, "loader: path too long: %s/%s\n", dir, leaf);
		return -1;
	}
	return 0;
}

static int parse_tracepoints(char *list, struct tracepoint *tps, int max)
{
	int n = 0;
	char *save = NULL;

	for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *slash = strchr(tok, '/');

		if (!slash || slash == tok || !slash[1] || n == max) {
			fprintf(stderr, "loader: bad tracepoint list entry '%s' (GROUP/NAME, at most %d)\n",
				tok, max);
			return -1;
		}
		*slash = '\0';
		tps[n].group = tok;
		tps[n].name = slash + 1;
		n++;
	}
	return n;
}

static int load_one(const char *obj_path, const char *prog_name, const struct tracepoint *tp,
		    const char *dir)
{
	char path[4096];
	struct bpf_object *obj;
	struct bpf_program *prog, *p;
	struct bpf_link *link = NULL;
	int err;

	obj = bpf_object__open_file(obj_path, NULL);
	if (!obj) {
		fprintf(stderr, "loader: open %s: %s\n", obj_path, strerror(errno));
		return -1;
	}
	prog = bpf_object__find_program_by_name(obj, prog_name);
	if (!prog) {
		fprintf(stderr, "loader: no program '%s' in %s\n", prog_name, obj_path);
		err = -1;
		goto out;
	}
	/* Load only the program asked for, as bpfman does with bpffunctionname. */
	bpf_object__for_each_program(p, obj)
		bpf_program__set_autoload(p, p == prog);

	err = bpf_object__load(obj);
	if (err) {
		fprintf(stderr, "loader: load %s: %s\n", obj_path, strerror(-err));
		goto out;
	}
	link = bpf_program__attach_tracepoint(prog, tp->group, tp->name);
	if (!link) {
		err = -errno;
		fprintf(stderr, "loader: attach %s/%s: %s\n", tp->group, tp->name, strerror(errno));
		goto out;
	}
	if (ensure_dir(dir)) {
		err = -1;
		goto out;
	}
	if (join(path, sizeof(path), dir, "prog")) {
		err = -1;
		goto out;
	}
	err = bpf_program__pin(prog, path);
	if (err) {
		fprintf(stderr, "loader: pin %s: %s\n", path, strerror(-err));
		goto out;
	}
	if (join(path, sizeof(path), dir, "link")) {
		err = -1;
		goto out;
	}
	err = bpf_link__pin(link, path);
	if (err) {
		fprintf(stderr, "loader: pin %s: %s\n", path, strerror(-err));
		goto out;
	}
	if (join(path, sizeof(path), dir, "maps")) {
		err = -1;
		goto out;
	}
	err = bpf_object__pin_maps(obj, path);
	if (err)
		fprintf(stderr, "loader: pin maps under %s: %s\n", path, strerror(-err));
out:
	/* Once pinned, destroying our handles only closes fds: the pins keep everything alive. */
	bpf_link__destroy(link);
	bpf_object__close(obj);
	return err ? -1 : 0;
}

static int cmd_load(int argc, char **argv)
{
	struct tracepoint tps[MAX_TPS];
	char dir[4096], index[32];
	char *end;
	long n;
	int ntps;

	if (argc != 7)
		return usage();
	ntps = parse_tracepoints(argv[4], tps, MAX_TPS);
	if (ntps <= 0)
		return usage();
	n = strtol(argv[5], &end, 10);
	if (*end || n < 0) {
		fprintf(stderr, "loader: N must be a non-negative integer, not '%s'\n", argv[5]);
		return 2;
	}
	if (ensure_dir(argv[6]))
		return 1;
	for (long i = 0; i < n; i++) {
		snprintf(index, sizeof(index), "%ld", i);
		if (join(dir, sizeof(dir), argv[6], index))
			return 1;
		if (load_one(argv[2], argv[3], &tps[i % ntps], dir))
			return 1;
	}
	return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	if (remove(path)) {
		fprintf(stderr, "loader: remove %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int cmd_cleanup(int argc, char **argv)
{
	if (argc != 3)
		return usage();
	if (access(argv[2], F_OK) && errno == ENOENT)
		return 0; /* nothing to clean: idempotent, like bpfman destroy */
	/* Depth first so that directories are empty when we reach them; never follow symlinks. */
	return nftw(argv[2], remove_entry, 64, FTW_DEPTH | FTW_PHYS) ? 1 : 0;
}

int main(int argc, char **argv)
{
	libbpf_set_print(print_errors_only);
	if (argc >= 2 && !strcmp(argv[1], "load"))
		return cmd_load(argc, argv);
	if (argc >= 2 && !strcmp(argv[1], "cleanup"))
		return cmd_cleanup(argc, argv);
	return usage();
}

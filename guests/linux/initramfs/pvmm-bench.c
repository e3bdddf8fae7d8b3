// SPDX-License-Identifier: GPL-2.0
/*
 * pvmm-bench: the same micro-benchmarks in the guest and on the host (Scripts/bench-linux).
 *   pvmm-bench getpid N   N getpid() system calls
 *   pvmm-bench pipe N     N round trips of 4 KiB between two processes over two pipes
 *   pvmm-bench loop N     N iterations of a dependent integer loop (no system calls)
 *   pvmm-bench read N FILE  read N MiB of FILE in 1 MiB O_DIRECT reads (ns_per_op per MiB)
 * Prints "NAME ns_per_op=X total_ms=Y", timed with CLOCK_MONOTONIC.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void full(int fd, char *buf, size_t n, int writing)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
		if (r <= 0) {
			perror("pipe");
			exit(1);
		}
		done += r;
	}
}

int main(int argc, char **argv)
{
	static char buf[4096];
	long n, i;
	double start, end;

	if (argc < 3 || (n = atol(argv[2])) <= 0) {
		fprintf(stderr, "usage: pvmm-bench getpid|pipe|loop N | read N FILE\n");
		return 2;
	}
	if (!strcmp(argv[1], "read") && argc == 4) {
		void *block;
		int fd = open(argv[3], O_RDONLY | O_DIRECT);

		if (fd < 0 || posix_memalign(&block, 4096, 1 << 20)) {
			perror(argv[3]);
			return 1;
		}
		start = now_ns();
		for (i = 0; i < n; i++)
			full(fd, block, 1 << 20, 0);
		end = now_ns();
	} else if (!strcmp(argv[1], "getpid")) {
		start = now_ns();
		for (i = 0; i < n; i++)
			syscall(SYS_getpid);
		end = now_ns();
	} else if (!strcmp(argv[1], "pipe")) {
		int to[2], from[2];
		pid_t child;

		if (pipe(to) || pipe(from))
			return 1;
		child = fork();
		if (child == 0) {
			for (i = 0; i < n; i++) {
				full(to[0], buf, sizeof(buf), 0);
				full(from[1], buf, sizeof(buf), 1);
			}
			_exit(0);
		}
		start = now_ns();
		for (i = 0; i < n; i++) {
			full(to[1], buf, sizeof(buf), 1);
			full(from[0], buf, sizeof(buf), 0);
		}
		end = now_ns();
		waitpid(child, NULL, 0);
	} else if (!strcmp(argv[1], "loop")) {
		volatile unsigned long x = 1;
		unsigned long y = 1;

		start = now_ns();
		for (i = 0; i < n; i++)
			y = y * 6364136223846793005UL + 1442695040888963407UL;
		x = y;
		end = now_ns();
		(void)x;
	} else {
		fprintf(stderr, "pvmm-bench: unknown test %s\n", argv[1]);
		return 2;
	}
	printf("%s ns_per_op=%.1f total_ms=%.1f\n", argv[1], (end - start) / n, (end - start) / 1e6);
	return 0;
}

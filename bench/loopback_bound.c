/* bench/loopback_bound: how fast can 1 GiB of guest RAM cross loopback TCP
 * on this machine at all? A lower bound for the live-migration benchmark
 * (bench/migration.sh), with none of a VMM's work: a memfd filled with an
 * incompressible pattern is sent to a receiver in the same process that
 * writes it into fresh memory, while a third thread spins the way the
 * source's running vCPU does.
 *
 *   loopback-bound [MiB] [runs]
 *
 * Sender: pread into a buffer and write() (what a copying VMM does), or
 * sendfile() from the memfd (tern since migration protocol 3). Receiver:
 * read() into fresh anonymous memory with transparent huge pages (what tern
 * and QEMU do: every page is zeroed by the kernel first), or splice() from
 * the socket through a pipe into a fresh memfd (no zeroing, a page-cache
 * allocation per page). Prints the time of each combination. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (8u << 20)

struct run {
	size_t size;
	int listen_fd;
	int rx_splice;
	int ok;
};

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static atomic_bool spinning;

static void *spin(void *arg)
{
	(void)arg;
	while (atomic_load_explicit(&spinning, memory_order_relaxed))
		;
	return NULL;
}

static void die(const char *what)
{
	fprintf(stderr, "loopback-bound: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void *receiver(void *arg)
{
	struct run *r = arg;
	int c = accept(r->listen_fd, NULL, NULL);
	if (c < 0)
		die("accept");
	size_t got = 0;
	if (!r->rx_splice) {
		uint8_t *m = mmap(NULL, r->size, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m == MAP_FAILED)
			die("mmap");
		madvise(m, r->size, MADV_HUGEPAGE);
		while (got < r->size) {
			ssize_t n = read(c, m + got, r->size - got < BUF ? r->size - got : BUF);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
		munmap(m, r->size);
	} else {
		int fd = memfd_create("loopback-bound-dst", MFD_CLOEXEC), p[2];
		if (fd < 0 || ftruncate(fd, (off_t)r->size) < 0 || pipe(p) < 0)
			die("memfd or pipe");
		fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
		loff_t off = 0;
		while (got < r->size) {
			ssize_t n = splice(c, NULL, p[1], NULL, 1 << 20, SPLICE_F_MOVE);
			if (n <= 0)
				break;
			for (ssize_t left = n; left > 0;) {
				ssize_t w = splice(p[0], NULL, fd, &off, (size_t)left, SPLICE_F_MOVE);
				if (w <= 0)
					die("splice into the memfd");
				left -= w;
			}
			got += (size_t)n;
		}
		close(p[0]);
		close(p[1]);
		close(fd);
	}
	r->ok = got == r->size;
	close(c);
	return NULL;
}

static double one(int src_fd, size_t size, int tx_sendfile, int rx_splice)
{
	struct run r = { .size = size, .rx_splice = rx_splice };
	r.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	if (r.listen_fd < 0 || bind(r.listen_fd, (void *)&a, sizeof(a)) < 0 ||
	    listen(r.listen_fd, 1) < 0 || getsockname(r.listen_fd, (void *)&a, &alen) < 0)
		die("listen");
	pthread_t rx, sp;
	atomic_store(&spinning, true);
	pthread_create(&sp, NULL, spin, NULL);
	pthread_create(&rx, NULL, receiver, &r);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int sz = 8 << 20;
	setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	if (connect(s, (void *)&a, sizeof(a)) < 0)
		die("connect");
	double t0 = now_s();
	if (tx_sendfile) {
		off_t off = 0;
		while ((size_t)off < size)
			if (sendfile(s, src_fd, &off, size - (size_t)off) <= 0)
				die("sendfile");
	} else {
		uint8_t *b = malloc(BUF);
		for (size_t o = 0; o < size; o += BUF) {
			size_t n = size - o < BUF ? size - o : BUF;
			if (pread(src_fd, b, n, (off_t)o) != (ssize_t)n)
				die("pread");
			for (size_t d = 0; d < n;) {
				ssize_t w = write(s, b + d, n - d);
				if (w <= 0)
					die("write");
				d += (size_t)w;
			}
		}
		free(b);
	}
	pthread_join(rx, NULL);
	double t = now_s() - t0;
	atomic_store(&spinning, false);
	pthread_join(sp, NULL);
	close(s);
	close(r.listen_fd);
	if (!r.ok) {
		fprintf(stderr, "loopback-bound: the receiver got less than was sent\n");
		exit(1);
	}
	return t;
}

int main(int argc, char **argv)
{
	size_t size = (size_t)(argc > 1 ? atoi(argv[1]) : 1024) << 20;
	int runs = argc > 2 ? atoi(argv[2]) : 3;
	int fd = memfd_create("loopback-bound-src", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		die("memfd");
	uint64_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		die("mmap");
	for (size_t i = 0; i < size / 8; i++)
		m[i] = (i * 8) * 0x9e3779b97f4a7c15ull ^ (i >> 3);
	static const char *const tx[] = { "pread+write", "sendfile" };
	static const char *const rx[] = { "read into anonymous THP", "splice into a memfd" };
	printf("%zu MiB over loopback TCP, one spinning thread beside it, %d runs each, seconds\n",
	       size >> 20, runs);
	for (int k = 0; k < runs; k++)
		for (int t = 0; t < 2; t++)
			for (int r = 0; r < 2; r++)
				printf("run %d  sender %-11s  receiver %-23s  %.3f\n", k + 1, tx[t], rx[r],
				       one(fd, size, t, r));
	return 0;
}

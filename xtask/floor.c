// The OS floor for multiproc's figures: what the kernel allows with no
// runtime, serializer or framing. Built and run by `cargo xtask bench`.
#define _GNU_SOURCE
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void xfer(int fd, char *buf, int n, int writing) {
    while (n > 0) {
        ssize_t k = writing ? write(fd, buf, n) : read(fd, buf, n);
        if (k <= 0) _exit(1);
        buf += k;
        n -= (int)k;
    }
}

static void futex_wait(atomic_int *w, int v) { syscall(SYS_futex, w, FUTEX_WAIT, v, NULL, NULL, 0); }
static void futex_wake(atomic_int *w) { syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0); }

int main(void) {
    const int rounds = 50000;
    char msg[16] = {0};

    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    pid_t echo = fork();
    if (echo == 0) {
        for (int i = 0; i < rounds; i++) { xfer(sv[1], msg, 16, 0); xfer(sv[1], msg, 16, 1); }
        _exit(0);
    }
    double t = seconds();
    for (int i = 0; i < rounds; i++) { xfer(sv[0], msg, 16, 1); xfer(sv[0], msg, 16, 0); }
    printf("unix_socket_roundtrip_us %.2f\n", (seconds() - t) / rounds * 1e6);
    waitpid(echo, NULL, 0);

    atomic_int *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pong = fork();
    if (pong == 0) {
        for (int i = 0; i < rounds; i++) {
            while (atomic_load(word) != 1) futex_wait(word, 0);
            atomic_store(word, 0);
            futex_wake(word);
        }
        _exit(0);
    }
    t = seconds();
    for (int i = 0; i < rounds; i++) {
        atomic_store(word, 1);
        futex_wake(word);
        while (atomic_load(word) != 0) futex_wait(word, 1);
    }
    printf("futex_roundtrip_us %.2f\n", (seconds() - t) / rounds * 1e6);
    waitpid(pong, NULL, 0);

    const int forks = 1000;
    t = seconds();
    for (int i = 0; i < forks; i++) {
        pid_t c = fork();
        if (c == 0) _exit(0);
        waitpid(c, NULL, 0);
    }
    printf("fork_exit_wait_us %.1f\n", (seconds() - t) / forks * 1e6);
    return 0;
}

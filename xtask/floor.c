// The OS floor under multiproc's figures: what the kernel allows with no
// runtime, serializer or framing. `cargo xtask bench` compiles this with
// `cc -O2` into the target directory and prints its lines (`name value unit`)
// as reference beside the figures they bound:
//   unix_socket_roundtrip_us  under pool_apply_roundtrip_us, pipe_roundtrip_us
//   futex_roundtrip_us        under event_wake_us (one wake is half a round)
//   fork_exit_wait_us         under process_start_join_forkserver_us
//   forkserver_start_join_us  the same, through a forkserver (the design's floor)
//   cas_lock_ns               under lock_uncontended_ns
#define _GNU_SOURCE
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

// Moves exactly n bytes, or exits: a short transfer would skew the figure.
static void transfer(int fd, char *buf, size_t n, int writing) {
    while (n > 0) {
        ssize_t k = writing ? write(fd, buf, n) : read(fd, buf, n);
        if (k <= 0) _exit(1);
        buf += k;
        n -= (size_t)k;
    }
}

static void reap(pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) die("child");
}

// A 16-byte message there and back over a socketpair, to a forked echo.
static void socket_roundtrip(int rounds) {
    int sv[2];
    char msg[16] = {0};
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
    pid_t echo = fork();
    if (echo < 0) die("fork");
    if (echo == 0) {
        close(sv[0]);
        for (int i = 0; i <= rounds; i++) {
            transfer(sv[1], msg, sizeof msg, 0);
            transfer(sv[1], msg, sizeof msg, 1);
        }
        _exit(0);
    }
    close(sv[1]);
    transfer(sv[0], msg, sizeof msg, 1);  // warm-up round
    transfer(sv[0], msg, sizeof msg, 0);
    double t = now();
    for (int i = 0; i < rounds; i++) {
        transfer(sv[0], msg, sizeof msg, 1);
        transfer(sv[0], msg, sizeof msg, 0);
    }
    printf("unix_socket_roundtrip_us %.2f us\n", (now() - t) / rounds * 1e6);
    close(sv[0]);
    reap(echo);
}

static void futex_wait(atomic_int *word, int expected) {
    syscall(SYS_futex, word, FUTEX_WAIT, expected, NULL, NULL, 0);
}

static void futex_wake(atomic_int *word) { syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0); }

// Ping-pong on one word of shared memory: 1 = the child's turn, 0 = ours.
static void futex_roundtrip(int rounds) {
    atomic_int *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (word == MAP_FAILED) die("mmap");
    atomic_store(word, 0);
    pid_t pong = fork();
    if (pong < 0) die("fork");
    if (pong == 0) {
        for (int i = 0; i < rounds; i++) {
            while (atomic_load(word) != 1) futex_wait(word, 0);
            atomic_store(word, 0);
            futex_wake(word);
        }
        _exit(0);
    }
    double t = now();
    for (int i = 0; i < rounds; i++) {
        atomic_store(word, 1);
        futex_wake(word);
        while (atomic_load(word) != 0) futex_wait(word, 1);
    }
    printf("futex_roundtrip_us %.2f us\n", (now() - t) / rounds * 1e6);
    reap(pong);
    munmap(word, 4096);
}

// fork, _exit in the child, waitpid in the parent, from this small
// single-threaded process.
static void fork_exit_wait(int rounds) {
    double t = now();
    for (int i = 0; i < rounds; i++) {
        pid_t c = fork();
        if (c < 0) die("fork");
        if (c == 0) _exit(0);
        reap(c);
    }
    printf("fork_exit_wait_us %.1f us\n", (now() - t) / rounds * 1e6);
}

// One fd over a Unix socket with SCM_RIGHTS (and one byte beside it).
static void send_fd(int sock, int fd) {
    char byte = 0;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union { struct cmsghdr h; char space[CMSG_SPACE(sizeof(int))]; } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.space, .msg_controllen = sizeof u.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(sock, &m, 0) != 1) die("sendmsg");
}

// The fd sent by send_fd, or -1 when the socket closed.
static int recv_fd(int sock) {
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union { struct cmsghdr h; char space[CMSG_SPACE(sizeof(int))]; } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.space, .msg_controllen = sizeof u.space};
    if (recvmsg(sock, &m, MSG_CMSG_CLOEXEC) != 1) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (c == NULL || c->cmsg_type != SCM_RIGHTS) die("no fd");
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

// process_start_join_forkserver_us with nothing but syscalls: the starter
// hands a fresh socket to a single-threaded C forkserver, which forks a
// child; the child says it is ready on that socket and exits; the
// forkserver reaps it and reports its status. The starter waits for the
// ready byte (start) and the report (join): one fork and four wake-ups of
// one process by another, the least any forkserver design that confirms
// its child started can do.
static void forkserver_start_join(int rounds) {
    int req[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, req) != 0) die("socketpair");
    pid_t server = fork();
    if (server < 0) die("fork");
    if (server == 0) {
        close(req[0]);
        for (int fd; (fd = recv_fd(req[1])) >= 0;) {
            pid_t c = fork();
            if (c < 0) die("fork");
            if (c == 0) {
                transfer(fd, "R", 1, 1);
                _exit(0);
            }
            close(fd);
            int status;
            if (waitpid(c, &status, 0) != c) die("waitpid");
            transfer(req[1], (char *)&status, sizeof status, 1);
        }
        _exit(0);
    }
    close(req[1]);
    double t = now();
    for (int i = 0; i < rounds; i++) {
        int ctl[2], status;
        char ready;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0) die("socketpair");
        send_fd(req[0], ctl[1]);
        close(ctl[1]);
        transfer(ctl[0], &ready, 1, 0);
        transfer(req[0], (char *)&status, sizeof status, 0);
        if (!WIFEXITED(status)) die("child");
        close(ctl[0]);
    }
    printf("forkserver_start_join_us %.1f us\n", (now() - t) / rounds * 1e6);
    close(req[0]);
    reap(server);
}

// An uncontended lock: one compare-and-swap to take it, one store to give
// it back.
static void cas_lock(long rounds) {
    static atomic_int lock;
    double t = now();
    for (long i = 0; i < rounds; i++) {
        int free_ = 0;
        while (!atomic_compare_exchange_strong(&lock, &free_, 1)) free_ = 0;
        atomic_store(&lock, 0);
    }
    printf("cas_lock_ns %.1f ns\n", (now() - t) / (double)rounds * 1e9);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    socket_roundtrip(50000);
    futex_roundtrip(50000);
    fork_exit_wait(2000);
    forkserver_start_join(1000);
    cas_lock(20000000);
    return 0;
}

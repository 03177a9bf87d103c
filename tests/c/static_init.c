/* A C static initialiser and finaliser, as a linked native library would
 * have: the initialiser records in the environment the pid of the process
 * image it ran in; the finaliser says on stderr which process ran it (a
 * child forked from the forkserver must not: it ends like CPython's forked
 * children, without the destructors of the image it was forked from).
 * Linked into `src/bin/native_init.rs` by `build.rs`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void multiproc_test_static_init(void) {
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    setenv("MULTIPROC_TEST_C_INIT_PID", pid, 1);
}

__attribute__((destructor)) static void multiproc_test_static_fini(void) {
    char line[64];
    int n = snprintf(line, sizeof line, "c-finaliser-ran-in %ld\n", (long)getpid());
    if (n > 0) (void)!write(2, line, strlen(line));
}

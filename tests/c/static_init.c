/* A C static initialiser, as a linked native library would have: it records
 * in the environment the pid of the process image it ran in. Linked into
 * `src/bin/native_init.rs` by `build.rs`. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void multiproc_test_static_init(void) {
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    setenv("MULTIPROC_TEST_C_INIT_PID", pid, 1);
}

/* Durable checkpoints: a process killed (SIGKILL) at a random moment while
 * it writes checkpoints never leaves an unreadable or half-new one. A
 * child writes checkpoint after checkpoint (a few MB each, every byte of
 * version v derived from v); the parent kills it at a random moment,
 * then reads the file: it must load, and every byte must belong to the
 * one version its header names. 60 kills.
 *
 * A SIGKILL leaves the page cache intact, so this tests the atomicity of
 * write-temporary-then-rename; the fsyncs (file, then directory) are what
 * carry it over a machine crash, which a test cannot stage. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"
#include "train/checkpoint.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { WORKERS = 4, STATE = 512 * 1024 + 13, KILLS = 60 };

static unsigned char byte_of(uint64_t version, size_t i)
{
    uint64_t x = (version + 1) * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
    return (unsigned char)(x >> 56);
}

static void fill(unsigned char *states, uint64_t version)
{
    for (size_t i = 0; i < (size_t)WORKERS * STATE; i++)
        states[i] = byte_of(version, i);
}

/* The child: writes versions first, first + 1, ... until killed, and
 * tells the parent (one byte on `ready`) after each is in place. */
static void writer(const char *path, uint64_t first, int ready)
{
    unsigned char *states = malloc((size_t)WORKERS * STATE);
    if (!states)
        _exit(2);
    for (uint64_t v = first;; v++) {
        deft_ckpt_meta_t meta;
        memset(&meta, 0, sizeof meta);
        meta.workers = WORKERS;
        meta.step = v;
        fill(states, v);
        if (deft_checkpoint_write(path, &meta, states, STATE) != DEFT_OK) {
            fprintf(stderr, "writer: %s\n", deft_last_error());
            _exit(3);
        }
        if (write(ready, "x", 1) != 1)
            _exit(4);
    }
}

static void test_sigkill_never_leaves_a_broken_checkpoint(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    char dir[256];
    snprintf(dir, sizeof dir, "%s/deft-ckpt-kill-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof path, "%s/run.ckpt", dir);
    srand((unsigned)time(NULL));
    uint64_t last_seen = 0;
    int newer = 0;
    for (int k = 0; k < KILLS; k++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            writer(path, last_seen + 1, fds[1]);
        }
        close(fds[1]);
        /* A random moment: after 1 to 4 finished versions, then 0 to 5 ms
         * into the next write. */
        int versions = 1 + rand() % 4;
        char c;
        for (int v = 0; v < versions; v++)
            assert_int_equal(read(fds[0], &c, 1), 1);
        long us = rand() % 5000;
        nanosleep(&(struct timespec){0, us * 1000}, NULL);
        kill(pid, SIGKILL);
        close(fds[0]);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

        deft_ckpt_meta_t meta;
        void *got = NULL;
        size_t ssz = 0;
        deft_status_t st = deft_checkpoint_read(path, &meta, &got, &ssz);
        if (st != DEFT_OK)
            fail_msg("kill %d (after %ld us): checkpoint unreadable: %s", k, us,
                     deft_last_error());
        assert_int_equal(ssz, STATE);
        assert_int_equal(meta.workers, WORKERS);
        if (meta.step < last_seen + 1)
            fail_msg("kill %d: checkpoint went back to version %llu (the "
                     "writer had finished %llu)", k,
                     (unsigned long long)meta.step,
                     (unsigned long long)last_seen + 1);
        const unsigned char *b = got;
        for (size_t i = 0; i < (size_t)WORKERS * STATE; i++)
            if (b[i] != byte_of(meta.step, i))
                fail_msg("kill %d: byte %zu = %u is not version %llu's (%u): "
                         "a mixture of versions", k, i, b[i],
                         (unsigned long long)meta.step, byte_of(meta.step, i));
        newer += meta.step > last_seen + 1;
        last_seen = meta.step;
        free(got);
    }
    /* The kills did land mid-run, after later versions were written. */
    print_message("%d kills, %d of them after a later version was written; "
                  "last version %llu\n", KILLS, newer,
                  (unsigned long long)last_seen);
    assert_true(newer > 0);
    char cmd[320];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_never_leaves_a_broken_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

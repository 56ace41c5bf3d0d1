/* Replays inputs through one fuzz target without libFuzzer: each argument
 * is a file, or a directory whose files are all replayed (sorted, so runs
 * are alike; names starting with "." are skipped). Built with the normal compiler for every target (ctest
 * fuzz_replay_<target> runs the seed and regression corpora on every
 * build, and under the sanitizer build too). Prints the count; a crash is
 * the failure. */
#include "fuzz.h"

#include <dirent.h>
#include <sys/stat.h>

static long replayed;

static void replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        exit(2);
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            unsigned char *grown = realloc(buf, cap *= 2);
            if (!grown)
                free(buf);
            buf = grown;
        }
    }
    fclose(f);
    if (!buf) {
        fprintf(stderr, "replay: no memory for %s\n", path);
        exit(2);
    }
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    replayed++;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "replay: %s does not exist\n", argv[i]);
            return 2;
        }
        if (!S_ISDIR(sb.st_mode)) {
            replay_file(argv[i]);
            continue;
        }
        struct dirent **names;
        int k = scandir(argv[i], &names, NULL, by_name);
        if (k < 0) {
            fprintf(stderr, "replay: cannot list %s\n", argv[i]);
            return 2;
        }
        for (int j = 0; j < k; j++) {
            char path[4096];
            if (names[j]->d_name[0] == '.') { /* .keep, . and .. */
                free(names[j]);
                continue;
            }
            snprintf(path, sizeof path, "%s/%s", argv[i], names[j]->d_name);
            if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
                replay_file(path);
            free(names[j]);
        }
        free(names);
    }
    printf("replay: %ld inputs, no crash\n", replayed);
    return 0;
}

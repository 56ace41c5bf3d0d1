/* The LIBSVM reader, raw and gzip. Input: byte 0: bit 0 = gzip, bits 1-7
 * = features (0 = infer from the file); the rest is the file. */
#include "data/data.h"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 16 KiB: small enough that inputs (and gzip streams given as they
     * are, flag bit 0 clear) reach the limit checks, and fast. */
    deft_data_set_max_bytes((size_t)16 << 10);
    if (size < 1)
        return 0;
    int flags = data[0];
    const char *path = fuzz_path("svm");
    if (fuzz_write(path, data + 1, size - 1, flags & 1))
        abort();
    deft_dataset_t ds;
    fuzz_check_dataset(&ds, deft_dataset_load_libsvm(&ds, path, flags >> 1));
    unlink(path);
    return 0;
}

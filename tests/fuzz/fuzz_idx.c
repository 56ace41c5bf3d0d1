/* The IDX image and label readers, raw and gzip.
 * Input: byte 0: bit 0 = gzip the images, bit 1 = gzip the labels;
 * bytes 1-2: L, little-endian; the next L bytes are the image file, the
 * rest the label file. */
#include "data/data.h"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 16 KiB: small enough that inputs (and gzip streams given as they
     * are, flag bit 0 clear) reach the limit checks, and fast. */
    deft_data_set_max_bytes((size_t)16 << 10);
    if (size < 3)
        return 0;
    int flags = data[0];
    size_t split = (size_t)data[1] | (size_t)data[2] << 8;
    data += 3, size -= 3;
    if (split > size)
        split = size;
    const char *img = fuzz_path("images"), *lab = fuzz_path("labels");
    if (fuzz_write(img, data, split, flags & 1) ||
        fuzz_write(lab, data + split, size - split, flags & 2))
        abort(); /* the harness, not deft */
    deft_dataset_t ds;
    fuzz_check_dataset(&ds, deft_dataset_load_idx(&ds, img, lab));
    unlink(img);
    unlink(lab);
    return 0;
}

/* CRC-32 (zlib's) over buffers of any length. */
#include "core/internal.h"

#include <zlib.h>

uint32_t deft_crc32(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *b = p;
    uLong c = crc;
    while (n > 0) { /* zlib's crc32 takes uInt lengths */
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        c = crc32(c, b, (uInt)chunk);
        b += chunk;
        n -= chunk;
    }
    return (uint32_t)c;
}

// A ring of provided buffers (IORING_REGISTER_PBUF_RING) for multishot
// receives.
#include "shim_uring_internal.h"

#include <stdlib.h>
#include <sys/mman.h>

struct up_bufring {
  struct io_uring_buf_ring *ring;
  size_t ring_bytes;
  unsigned char *buffers;
  unsigned entries;
  unsigned size;
  uint16_t group;
};

up_bufring *up_bufring_create(up_ring *r, unsigned entries, unsigned size,
                              uint16_t group, int *error) {
  up_bufring *br = calloc(1, sizeof *br);
  if (!br) {
    *error = -ENOMEM;
    return NULL;
  }
  br->entries = entries;
  br->size = size;
  br->group = group;
  br->ring_bytes = entries * sizeof(struct io_uring_buf);
  void *mem = mmap(NULL, br->ring_bytes, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) {
    *error = neg_errno();
    free(br);
    return NULL;
  }
  br->ring = mem;
  br->buffers = malloc((size_t)entries * size);
  if (!br->buffers) {
    munmap(mem, br->ring_bytes);
    free(br);
    *error = -ENOMEM;
    return NULL;
  }
  io_uring_buf_ring_init(br->ring);
  struct io_uring_buf_reg reg = {
      .ring_addr = (unsigned long)mem, .ring_entries = entries, .bgid = group};
  int rc = io_uring_register_buf_ring(&r->ring, &reg, 0);
  if (rc < 0) {
    free(br->buffers);
    munmap(mem, br->ring_bytes);
    free(br);
    *error = rc;
    return NULL;
  }
  int mask = io_uring_buf_ring_mask(entries);
  for (unsigned i = 0; i < entries; i++)
    io_uring_buf_ring_add(br->ring, br->buffers + (size_t)i * size, size,
                          (unsigned short)i, mask, (int)i);
  io_uring_buf_ring_advance(br->ring, (int)entries);
  *error = 0;
  return br;
}

void up_bufring_free(up_bufring *br) {
  if (!br) return;
  munmap(br->ring, br->ring_bytes);
  free(br->buffers);
  free(br);
}

void *up_bufring_buffer(up_bufring *br, uint16_t bid) {
  return br->buffers + (size_t)bid * br->size;
}

void up_bufring_recycle(up_bufring *br, uint16_t bid) {
  io_uring_buf_ring_add(br->ring, up_bufring_buffer(br, bid), br->size, bid,
                        io_uring_buf_ring_mask(br->entries), 0);
  io_uring_buf_ring_advance(br->ring, 1);
}

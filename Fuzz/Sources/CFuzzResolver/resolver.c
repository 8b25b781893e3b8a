#include "CFuzzResolver.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

// The fuzz targets are single-threaded where they parse addresses.
static unsigned long calls;
static char last_name[65536];  // longer than any input the targets take

unsigned long cfuzz_resolver_calls(void) { return calls; }

size_t cfuzz_resolver_last_name(char *buffer, size_t size) {
  size_t length = strlen(last_name);
  if (size == 0) return length;
  size_t copied = length < size - 1 ? length : size - 1;
  memcpy(buffer, last_name, copied);
  buffer[copied] = 0;
  return length;
}

// One entry and its address in one allocation (freeaddrinfo frees both).
struct entry {
  struct addrinfo info;
  struct sockaddr_storage address;
};

static int append(struct addrinfo ***tail, int family, const char *text, const struct addrinfo *hints) {
  if (hints && hints->ai_family != AF_UNSPEC && hints->ai_family != family) return 0;
  struct entry *e = calloc(1, sizeof *e);
  if (!e) return EAI_MEMORY;
  if (family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&e->address;
    in->sin_family = AF_INET;
    inet_pton(AF_INET, text, &in->sin_addr);
    e->info.ai_addrlen = sizeof *in;
  } else {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&e->address;
    in6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, text, &in6->sin6_addr);
    e->info.ai_addrlen = sizeof *in6;
  }
  e->info.ai_family = family;
  e->info.ai_socktype = hints ? hints->ai_socktype : 0;
  e->info.ai_addr = (struct sockaddr *)&e->address;
  **tail = &e->info;
  *tail = &e->info.ai_next;
  return 0;
}

void freeaddrinfo(struct addrinfo *list) {
  while (list) {
    struct addrinfo *next = list->ai_next;
    free(list);  // the entry: `info` is its first member
    list = next;
  }
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **result) {
  (void)service;
  calls++;
  *result = NULL;
  if (!node) return EAI_NONAME;
  size_t length = strlen(node);
  if (length >= sizeof last_name) length = sizeof last_name - 1;
  memcpy(last_name, node, length);
  last_name[length] = 0;

  struct addrinfo *list = NULL, **tail = &list;
  int rc = 0;
  if (strcmp(node, "localhost") == 0) {
    rc = append(&tail, AF_INET6, "::1", hints);
    if (rc == 0) rc = append(&tail, AF_INET, "127.0.0.1", hints);
  } else if (strcmp(node, "v4only.test") == 0) {
    rc = append(&tail, AF_INET, "192.0.2.1", hints);
  } else if (strcmp(node, "v6only.test") == 0) {
    rc = append(&tail, AF_INET6, "2001:db8::1", hints);
  } else {
    return EAI_NONAME;
  }
  if (rc != 0) {
    freeaddrinfo(list);
    return rc;
  }
  if (!list) return EAI_NONAME;  // no address of the family asked for
  *result = list;
  return 0;
}

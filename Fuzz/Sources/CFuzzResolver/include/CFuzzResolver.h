#ifndef CFUZZ_RESOLVER_H
#define CFUZZ_RESOLVER_H

#include <stddef.h>

// A hermetic resolver for the fuzz targets: this target defines
// getaddrinfo(3) and freeaddrinfo(3) themselves, so every lookup the
// address parsers make in a fuzzer process ends here, never on the
// network (a fuzzer must not wait on DNS, and must answer the same way
// every time). The names it knows (everything else is EAI_NONAME):
//
//   localhost      ::1, then 127.0.0.1 (IPv6 first, as glibc may order it)
//   v4only.test    192.0.2.1
//   v6only.test    2001:db8::1
//
// A family in the hints filters the list, as getaddrinfo does.

// Lookups made so far.
unsigned long cfuzz_resolver_calls(void);

// The last host name asked for, as the resolver saw it (a C string: cut
// at the first NUL), copied into `buffer` (at most `size` bytes with the
// NUL); returns its length.
size_t cfuzz_resolver_last_name(char *buffer, size_t size);

#endif

/*
 * auth.h: API keys.  A key is "fvk_" + 32 random bytes (libsodium's
 * randombytes_buf) in unpadded base64url: shown once, never stored.  The
 * database keeps a short public prefix (for lookup) and the BLAKE2b-256
 * hash of the whole key (crypto_generichash); requests are matched by
 * prefix, then by hash with sodium_memcmp (constant time).  An unkeyed hash
 * is enough here: the key has 256 bits of entropy, so there is nothing to
 * brute-force from a leaked hash.
 */
#ifndef FVS_AUTH_H
#define FVS_AUTH_H

#include <stddef.h>

#include "server/store.h"

#define FVS_KEY_PREFIX_LEN 12
#define FVS_KEY_MAX 128

/* Must be called once before any other function (sodium_init). */
int fvs_auth_init(void);

/* Makes a new key into key (>= FVS_KEY_MAX bytes), its lookup prefix into
 * prefix (>= FVS_KEY_PREFIX_LEN + 1) and its hash. */
int fvs_key_generate(char *key, char *prefix, unsigned char hash[FVS_KEY_HASH_BYTES]);

/* Derives prefix and hash of a presented key; -1 when it cannot be a key
 * (wrong length or characters), without touching the database. */
int fvs_key_digest(const char *key, char *prefix, unsigned char hash[FVS_KEY_HASH_BYTES]);

#endif

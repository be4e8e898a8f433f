/*
 * crypto.h: encryption at rest of stored templates (see crypto.c).
 */
#ifndef FVS_CRYPTO_H
#define FVS_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "faceverify.h"

#define FVS_TKEY_BYTES 32
#define FVS_TEMPLATE_PLAIN_BYTES (FV_EMBED_DIM * sizeof(float))
/* magic (4) + nonce (24) + ciphertext (512) + tag (16) */
#define FVS_TEMPLATE_SEALED_BYTES (4 + 24 + FVS_TEMPLATE_PLAIN_BYTES + 16)
/* Messages about templates that cannot be read start with this; routes.c
 * answers them 503 template_key_unavailable. */
#define FVS_TKEY_ERROR "template key: "

/* Decodes a key given as base64 (standard or URL-safe, padded or not) of
 * exactly 32 bytes.  0 ok, -1 with a message. */
int fvs_tkey_parse(const char *b64, unsigned char key[FVS_TKEY_BYTES], char *err, size_t errlen);

/* Writes a new random key, base64, into out (>= 45 bytes). */
void fvs_tkey_generate(char *out, size_t outlen);

/* Seals emb for the row (coll, subject) into out; thread-safe. */
void fvs_template_seal(const unsigned char key[FVS_TKEY_BYTES], int64_t coll, int64_t subject,
                       const float emb[FV_EMBED_DIM], unsigned char out[FVS_TEMPLATE_SEALED_BYTES]);

/* Reads a stored template: plaintext (512 bytes) as is, sealed with key
 * (may be NULL: no key configured).  0 ok; 1 not a template (wrong size:
 * skipped by callers); -1 sealed and unreadable, with a message starting
 * with FVS_TKEY_ERROR.  emb is never filled with unauthenticated bytes. */
int fvs_template_open(const unsigned char *key, int64_t coll, int64_t subject, const void *blob,
                      size_t n, float emb[FV_EMBED_DIM], char *err, size_t errlen);

/* The fingerprint of an uploaded image kept next to its template
 * (faces.image_sha256): BLAKE2b-256 keyed with a subkey derived from the
 * template key (crypto_kdf, context "fvimgmac"), so that only the key's
 * holder can tell whether a given photo was enrolled; a plain hash would
 * confirm a known photo to anyone with a copy of the database.  Writes 64
 * hex characters and a NUL into hex.  Thread-safe. */
void fvs_image_mac(const unsigned char key[FVS_TKEY_BYTES], const void *data, size_t len,
                   char hex[65]);

/* 1 when blob is a sealed template. */
int fvs_template_is_sealed(const void *blob, size_t n);

#endif

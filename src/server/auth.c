/*
 * auth.c: API key generation and hashing (see auth.h for the scheme).
 */
#include "server/auth.h"

#include <sodium.h>
#include <string.h>

#define KEY_TAG "fvk_"
#define KEY_RAW_BYTES 32

int fvs_auth_init(void) {
    return sodium_init() < 0 ? -1 : 0;
}

static void digest(const char *key, size_t len, char *prefix,
                   unsigned char hash[FVS_KEY_HASH_BYTES]) {
    memcpy(prefix, key, FVS_KEY_PREFIX_LEN);
    prefix[FVS_KEY_PREFIX_LEN] = 0;
    crypto_generichash(hash, FVS_KEY_HASH_BYTES, (const unsigned char *)key, len, NULL, 0);
}

int fvs_key_generate(char *key, char *prefix, unsigned char hash[FVS_KEY_HASH_BYTES]) {
    unsigned char raw[KEY_RAW_BYTES];
    randombytes_buf(raw, sizeof raw);
    memcpy(key, KEY_TAG, sizeof KEY_TAG - 1);
    sodium_bin2base64(key + sizeof KEY_TAG - 1, FVS_KEY_MAX - (sizeof KEY_TAG - 1), raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    digest(key, strlen(key), prefix, hash);
    return 0;
}

int fvs_key_digest(const char *key, char *prefix, unsigned char hash[FVS_KEY_HASH_BYTES]) {
    if (!key) return -1;
    size_t len = strnlen(key, FVS_KEY_MAX);
    size_t want =
        sizeof KEY_TAG - 1 +
        sodium_base64_ENCODED_LEN(KEY_RAW_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING) - 1;
    if (len != want || strncmp(key, KEY_TAG, sizeof KEY_TAG - 1) != 0) return -1;
    for (size_t i = sizeof KEY_TAG - 1; i < len; i++) {
        char c = key[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_';
        if (!ok) return -1;
    }
    digest(key, len, prefix, hash);
    return 0;
}

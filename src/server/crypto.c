/*
 * crypto.c: templates encrypted at rest with libsodium's
 * XChaCha20-Poly1305 (crypto_aead_xchacha20poly1305_ietf).
 *
 * The key comes from the environment (FACEVERIFY_TEMPLATE_KEY, base64 of 32
 * random bytes; `faceverifyd genkey` makes one) and never touches the
 * database.  A stored template is then
 *
 *     "FVE1" | nonce (24 random bytes) | ciphertext (512) | tag (16)
 *
 * 556 bytes, where a plaintext template is 512: the two can share the
 * faces.embedding column without a schema change, plaintext rows written
 * before a key was set stay readable, and `faceverifyd encrypttemplates`
 * converts them.  Random 192-bit nonces make reuse a non-issue.
 *
 * Associated data binds a sealed template to its row's collection and
 * subject: a template copied or moved to another subject or collection
 * (by someone with write access to the database but not the key) fails
 * authentication instead of silently matching as someone else.  A wrong
 * key, a missing key or a tampered row is an error, never a template of
 * garbage numbers.
 */
#include "server/crypto.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

static const unsigned char MAGIC[4] = {'F', 'V', 'E', '1'};
#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define AD_BYTES 32

_Static_assert(NONCE_BYTES == 24, "XChaCha20 nonce size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == 16, "Poly1305 tag size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == FVS_TKEY_BYTES, "key size");

static void put64(unsigned char *p, int64_t v) {
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(u >> (8 * i));
}

/* "fv-template-v1\0\0" | collection (8, little-endian) | subject (8). */
static void make_ad(int64_t coll, int64_t subject, unsigned char ad[AD_BYTES]) {
    memset(ad, 0, AD_BYTES);
    memcpy(ad, "fv-template-v1", 14);
    put64(ad + 16, coll);
    put64(ad + 24, subject);
}

int fvs_tkey_parse(const char *b64, unsigned char key[FVS_TKEY_BYTES], char *err, size_t errlen) {
    static const int variants[] = {
        sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
        sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING};
    size_t len = strlen(b64);
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        unsigned char buf[FVS_TKEY_BYTES + 8];
        size_t n = 0;
        const char *end = NULL;
        if (sodium_base642bin(buf, sizeof buf, b64, len, " \t\r\n", &n, &end, variants[v]) == 0 &&
            end == b64 + len && n == FVS_TKEY_BYTES) {
            memcpy(key, buf, FVS_TKEY_BYTES);
            sodium_memzero(buf, sizeof buf);
            return 0;
        }
        sodium_memzero(buf, sizeof buf);
    }
    snprintf(err, errlen,
             "FACEVERIFY_TEMPLATE_KEY: expected base64 of exactly %d bytes "
             "(make one with 'faceverifyd genkey')",
             FVS_TKEY_BYTES);
    return -1;
}

void fvs_tkey_generate(char *out, size_t outlen) {
    unsigned char key[FVS_TKEY_BYTES];
    crypto_aead_xchacha20poly1305_ietf_keygen(key);
    sodium_bin2base64(out, outlen, key, sizeof key, sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(key, sizeof key);
}

int fvs_template_is_sealed(const void *blob, size_t n) {
    return n == FVS_TEMPLATE_SEALED_BYTES && memcmp(blob, MAGIC, sizeof MAGIC) == 0;
}

void fvs_template_seal(const unsigned char key[FVS_TKEY_BYTES], int64_t coll, int64_t subject,
                       const float emb[FV_EMBED_DIM],
                       unsigned char out[FVS_TEMPLATE_SEALED_BYTES]) {
    unsigned char ad[AD_BYTES];
    make_ad(coll, subject, ad);
    memcpy(out, MAGIC, sizeof MAGIC);
    unsigned char *nonce = out + sizeof MAGIC;
    randombytes_buf(nonce, NONCE_BYTES);
    unsigned long long clen = 0;
    /* Floats go in their in-memory (little-endian on every supported
     * host) byte order, the same as plaintext rows. */
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + sizeof MAGIC + NONCE_BYTES, &clen,
                                               (const unsigned char *)emb, FVS_TEMPLATE_PLAIN_BYTES,
                                               ad, sizeof ad, NULL, nonce, key);
}

int fvs_template_open(const unsigned char *key, int64_t coll, int64_t subject, const void *blob,
                      size_t n, float emb[FV_EMBED_DIM], char *err, size_t errlen) {
    if (n == FVS_TEMPLATE_PLAIN_BYTES) {
        memcpy(emb, blob, FVS_TEMPLATE_PLAIN_BYTES);
        return 0;
    }
    if (!fvs_template_is_sealed(blob, n)) return 1;
    if (!key) {
        snprintf(err, errlen,
                 FVS_TKEY_ERROR "templates are encrypted and FACEVERIFY_TEMPLATE_KEY is not set");
        return -1;
    }
    unsigned char ad[AD_BYTES];
    make_ad(coll, subject, ad);
    const unsigned char *p = blob;
    unsigned char plain[FVS_TEMPLATE_PLAIN_BYTES];
    unsigned long long plen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            plain, &plen, NULL, p + sizeof MAGIC + NONCE_BYTES,
            FVS_TEMPLATE_SEALED_BYTES - sizeof MAGIC - NONCE_BYTES, ad, sizeof ad, p + sizeof MAGIC,
            key) != 0 ||
        plen != FVS_TEMPLATE_PLAIN_BYTES) {
        sodium_memzero(plain, sizeof plain);
        snprintf(err, errlen,
                 FVS_TKEY_ERROR "a stored template does not decrypt (wrong "
                                "FACEVERIFY_TEMPLATE_KEY, or the row was altered or moved)");
        return -1;
    }
    memcpy(emb, plain, sizeof plain);
    sodium_memzero(plain, sizeof plain);
    return 0;
}

void fvs_image_mac(const unsigned char key[FVS_TKEY_BYTES], const void *data, size_t len,
                   char hex[65]) {
    unsigned char sub[crypto_generichash_KEYBYTES], mac[32];
    _Static_assert(crypto_kdf_KEYBYTES == FVS_TKEY_BYTES, "kdf master key size");
    crypto_kdf_derive_from_key(sub, sizeof sub, 1, "fvimgmac", key);
    crypto_generichash(mac, sizeof mac, data, len, sub, sizeof sub);
    sodium_bin2hex(hex, 65, mac, sizeof mac);
    sodium_memzero(sub, sizeof sub);
}

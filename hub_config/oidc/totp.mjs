// Time-based one-time passwords (RFC 6238) over HMAC-SHA1 (RFC 4226), the
// variant that authenticator apps implement: 30-second steps, 6 digits.
import crypto from 'node:crypto';

const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
export const STEP_SECONDS = 30;
export const DIGITS = 6;

/** Decode an RFC 4648 base32 string (padding and spaces ignored). */
export function decodeBase32(text) {
  const clean = text.replace(/[\s=]/g, '').toUpperCase();
  let bits = 0;
  let value = 0;
  const out = [];
  for (const char of clean) {
    const index = BASE32_ALPHABET.indexOf(char);
    if (index === -1) {
      throw new TypeError('TOTP secret is not valid base32');
    }
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** Compute the HOTP value of `counter` (RFC 4226, dynamic truncation). */
export function hotp(key, counter) {
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const digest = crypto.createHmac('sha1', key).update(message).digest();
  const offset = digest[digest.length - 1] & 0x0f;
  const binary = digest.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 10 ** DIGITS).padStart(DIGITS, '0');
}

/**
 * Check `code` against the steps around `nowSeconds`.
 *
 * Returns the matching time step, or null. One step either side is accepted
 * to allow for clock drift. The caller rejects a step that was already used,
 * so that a code seen over someone's shoulder cannot be replayed.
 */
export function verifyTotp(secret, code, nowSeconds, window = 1) {
  if (typeof code !== 'string' || !/^\d{6}$/.test(code)) {
    return null;
  }
  const key = decodeBase32(secret);
  const current = Math.floor(nowSeconds / STEP_SECONDS);
  const submitted = Buffer.from(code);
  for (let step = current - window; step <= current + window; step += 1) {
    const expected = Buffer.from(hotp(key, step));
    if (crypto.timingSafeEqual(expected, submitted)) {
      return step;
    }
  }
  return null;
}
